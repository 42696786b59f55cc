#!/usr/bin/env bash
# Run the NVE trajectories of every model of train_models.sh, each as soon as its model.pt
# exists, one model at a time, 1 thread, nice. From the repository root:
#   experiments/md_stability/run_all.sh TRAJECTORIES PS [WORK_DIR]
set -euo pipefail
trajectories=${1:-2}
ps=${2:-1}
work=${3:-experiments/md_stability/scratch}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$work"
for model in aspirin_mace ethanol_mace aspirin_egnn ethanol_egnn aspirin_nequip ethanol_nequip; do
    while [ ! -f "$work/models/$model/model.pt" ]; do sleep 30; done
    nice -n 10 python experiments/md_stability/run.py --model "$work/models/$model" \
        --trajectories "$trajectories" --ps "$ps" --out "$work/results.jsonl" \
        >>"$work/md_$model.log" 2>&1
done
