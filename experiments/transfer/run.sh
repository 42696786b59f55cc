#!/usr/bin/env bash
# The transfer-learning and ensemble experiment of issue 14 (see README.md here), one run after
# another on 1 thread, niced. Run from the repository root:
#   experiments/transfer/run.sh [WORK_DIR]        (default WORK_DIR: experiments/transfer/scratch)
# A run whose model.pt exists is skipped, so an interrupted script picks up where it stopped.
# FINETUNE_TIME (default 00:00:01:30) is the wall-clock budget of every uracil run (scratch and
# fine-tuned alike); PRETRAIN_TIME (default 00:00:10:00) that of the pretraining; PRETRAINED
# (default WORK_DIR/runs/pretrain) the model the uracil runs start from.
set -euo pipefail
work=${1:-experiments/transfer/scratch}
data=$work/data
runs=$work/runs
logs=$work/logs
finetune_time=${FINETUNE_TIME:-00:00:01:30}
pretrain_time=${PRETRAIN_TIME:-00:00:10:00}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$runs" "$logs"

python experiments/transfer/prepare_data.py --out "$data"

train() {  # run_name [overrides...]: one physicsml-train run into $runs/<run_name>
    local name=$1
    shift
    if [ -f "$runs/$name/model.pt" ]; then return; fi
    rm -rf "${runs:?}/$name"
    nice -n 10 physicsml-train hydra.run.dir="$runs/$name" "$@" >"$logs/$name.log" 2>&1 ||
        echo "run $name failed: see $logs/$name.log" >&2
}
evaluate() {  # run_name data: physicsml-eval of its model.pt into $work/evals/<run_name>.json
    mkdir -p "$work/evals"
    nice -n 10 physicsml-eval "$runs/$1" "$2" --quiet --json "$work/evals/$1.json" >/dev/null
}

# The MACE of every run: the aspirin preset (32x0e+32x1o, 2 interactions, correlation 3, lr
# 0.005, ReduceLROnPlateau) with max_ell 2, for elements H, C, N, O (uracil's N included from
# the start: MACE cannot add an element at init_from time).
mace=(experiment=aspirin_mace module.model.max_ell=2 "datamodule.elements=[1,6,7,8]"
    datamodule.dataset=null)

# 1. Pretraining: 200 frames of each of ethanol, malonaldehyde and aspirin; 50 held-out
#    frames of each validate.
train pretrain "${mace[@]}" seed=0 trainer.max_epochs=1000 trainer.max_time="$pretrain_time" \
    "datamodule.train_data=[$data/ethanol_train200.extxyz,$data/malonaldehyde_train200.extxyz,$data/aspirin_train200.extxyz]" \
    "datamodule.validation_data=[$data/ethanol_val50.extxyz,$data/malonaldehyde_val50.extxyz,$data/aspirin_val50.extxyz]"

# 2. Uracil: 25, 50 and 100 training frames, the same 200 held-out frames validate; every
#    variant gets the same wall-clock budget. The variants without PEFT first, then SSF,
#    adapters and LoRA (the peft config group), then physicsml-eval of every model.pt.
uracil() {  # frames [seed]: the overrides of a uracil run on that many training frames
    uracil_overrides=("${mace[@]}" seed="${2:-0}" trainer.max_epochs=100000
        trainer.max_time="$finetune_time" datamodule.train.batch_size=4
        "datamodule.train_data=$data/uracil_train$1.extxyz"
        "datamodule.validation_data=$data/uracil_val200.extxyz")
}
from_pretrained=(module.init_from="${PRETRAINED:-$runs/pretrain}")
for frames in 50 25 100; do
    uracil "$frames"
    train "uracil${frames}_scratch" "${uracil_overrides[@]}"
    train "uracil${frames}_full" "${uracil_overrides[@]}" "${from_pretrained[@]}"
    train "uracil${frames}_frozen_interactions" "${uracil_overrides[@]}" "${from_pretrained[@]}" \
        "module.freeze=[model.interactions.*]"
done
if [ -f conf/peft/lora.yaml ]; then
    for frames in 50 25 100; do
        uracil "$frames"
        for method in ssf adapters lora; do
            train "uracil${frames}_$method" "${uracil_overrides[@]}" "${from_pretrained[@]}" \
                peft="$method"
        done
    done
fi
for run in "$runs"/uracil*/; do
    if [ -f "$run/model.pt" ]; then evaluate "$(basename "$run")" "$data/uracil_val200.extxyz"; fi
done

# 3. Ensembles of 4 seeds on ethanol (400 training frames, 200 held-out validation frames).
ethanol=(datamodule.dataset=null "datamodule.train_data=$data/ethanol_train400.extxyz"
    "datamodule.validation_data=$data/ethanol_val200.extxyz")
ensemble() {  # name [overrides...]: a seed sweep into $runs/<name>, evaluated as an ensemble
    local name=$1
    shift
    if ! ls "$runs/$name"/3/model.pt >/dev/null 2>&1; then
        rm -rf "${runs:?}/$name"
        nice -n 10 physicsml-train -m seed=0,1,2,3 hydra.sweep.dir="$runs/$name" "$@" \
            >"$logs/$name.log" 2>&1 || echo "sweep $name failed: see $logs/$name.log" >&2
    fi
    nice -n 10 physicsml-eval "$runs/$name" "$data/ethanol_val200.extxyz" --quiet \
        --json "$work/$name.json" --plot "$work/${name}_reliability.png" >"$logs/${name}_eval.log"
    for member in 0 1 2 3; do
        nice -n 10 physicsml-eval "$runs/$name/$member" "$data/ethanol_val200.extxyz" --quiet \
            --json "$work/${name}_member$member.json" >>"$logs/${name}_eval.log"
    done
}
ensemble ensemble_mace experiment=aspirin_mace module.model.max_ell=2 trainer.max_epochs=30 \
    trainer.max_time=00:00:02:30 "${ethanol[@]}"
ensemble ensemble_egnn experiment=aspirin_egnn trainer.max_epochs=40 \
    trainer.max_time=00:00:02:00 "${ethanol[@]}"

python experiments/transfer/summarise.py "$work" >"$work/tables.md"
cat "$work/tables.md"
