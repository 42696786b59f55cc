#!/usr/bin/env bash
# Our side of the per-epoch curves (issue 15): the Lightning path (bench_ours.py, the peer's
# protocol: seeded 160/40 split of 200 frames, peer hyperparameters, Adam 1e-3, batch 8,
# 1·MSE(E) + 10·MSE(F), 30 epochs, 1 thread), one run after the other. Every run appends its
# JSON line (with per-epoch validation metrics) to $OUT; seed-0 models are kept for MD.
#
# usage: experiments/accuracy/run_ours_curves.sh "aspirin ethanol" "mace egnn" "0 1 2" [TAG] [OVERRIDES...]
#   e.g. experiments/accuracy/run_ours_curves.sh aspirin mace "0 1 2" ema module.ema.decay=0.99
# env: OUT (default experiments/accuracy/results/ours_curves.jsonl), EPOCHS (30), KEEP (1: keep
#      seed-0 models under experiments/accuracy/scratch/models/)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
MOLECULES="$1"; MODELS="$2"; SEEDS="$3"; TAG="${4:-baseline}"; shift $(( $# < 4 ? $# : 4 ))
OUT="${OUT:-$HERE/results/ours_curves.jsonl}"; EPOCHS="${EPOCHS:-30}"; KEEP="${KEEP:-1}"
cd "$REPO"
for seed in $SEEDS; do
  for molecule in $MOLECULES; do
    for model in $MODELS; do
      name="${molecule}_${model}_${TAG}_s${seed}"
      extra=()
      for o in "$@"; do extra+=(--override "$o"); done
      keep=()
      if [ "$KEEP" = 1 ] && [ "$seed" = 0 ]; then keep=(--keep "$HERE/scratch/models/$name"); fi
      echo "[$(date +%T)] $name" >&2
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$REPO" python experiments/model_zoo/bench_ours.py \
        --data "../shared/data/md_xtb/$molecule.extxyz" --model "$model" --epochs "$EPOCHS" \
        --max-structures 200 --threads 1 --seed "$seed" --tag "ours_$name" "${keep[@]}" \
        "${extra[@]}" > "$HERE/scratch/$name.json" 2> "$HERE/scratch/$name.log"
      cat "$HERE/scratch/$name.json" >> "$OUT"
    done
  done
done
