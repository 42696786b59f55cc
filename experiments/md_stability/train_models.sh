#!/usr/bin/env bash
# Train the MD-stability models (ours) on the shipped data, one after another, 1 thread, nice.
# Run from the repository root: experiments/md_stability/train_models.sh [WORK_DIR]
# Run directories: WORK_DIR/models/<molecule>_<model>; WORK_DIR defaults to
# experiments/md_stability/scratch.
set -euo pipefail
work=${1:-experiments/md_stability/scratch}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$work"
train() {  # molecule model epochs [overrides...]
    local molecule=$1 model=$2 epochs=$3
    shift 3
    local run_dir="$work/models/${molecule}_${model}"
    if [ -f "$run_dir/model.pt" ]; then return; fi
    nice -n 10 physicsml-train hydra.run.dir="$run_dir" trainer.max_epochs="$epochs" "$@" \
        >"$work/train_${molecule}_${model}.log" 2>&1
}
# aspirin: the shipped presets (first 1000 frames train, last 500 validate), NequIP cut from
# 15 to 8 epochs; ethanol: the default datamodule (80/20 split) with the module's preset (MACE
# and NequIP at the aspirin presets' lr 0.005) and fewer epochs. The epochs are what about an
# hour of one shared core allowed for all six.
train aspirin mace 10 experiment=aspirin_mace
train ethanol mace 6 module=mace module.optimizer.config.lr=0.005
train aspirin egnn 25 experiment=aspirin_egnn
train ethanol egnn 15 module=egnn
train aspirin nequip 8 experiment=aspirin_nequip
train ethanol nequip 6 module=nequip module.optimizer.config.lr=0.005
