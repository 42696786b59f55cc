#!/usr/bin/env bash
# GPU rows of the model-zoo table: our models on one GPU with the peer's protocol (aspirin
# 160/40, batch 8 unless said), precision 32 and bf16-mixed. One JSON line per run.
#
# usage: experiments/model_zoo/gpu_bench.sh OUT_DIR [EPOCHS]
# Run it on a GPU machine with physicsml importable (`pip install -e .`, or PYTHONPATH set to
# the repository with the dependencies installed).
set -u
OUT="$(realpath -m "$1")"; EPOCHS="${2:-10}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DATA=$REPO/../shared/data/md_xtb/aspirin.extxyz
[ -f "$DATA" ] || DATA=$REPO/physicsml/data_files/aspirin.extxyz  # the shipped copy: same frames
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
run() {  # model precision batch [extra bench args...]
  local m="$1" p="$2" b="$3"; shift 3
  echo "[$(date +%T)] $m precision=$p batch=$b $*" >&2
  python3 "$REPO/experiments/model_zoo/bench_ours.py" --data "$DATA" --model "$m" --epochs "$EPOCHS" \
    --batch-size "$b" --max-structures 200 --threads 8 --accelerator gpu --precision "$p" \
    --tag "gpu_${m}_p${p}_b${b}" --out-dir "$OUT" "$@" > "$OUT/last.json" 2>> "$OUT/log.txt" \
    && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['tag'],
      'structures/s %.1f' % d['structures_per_s'], 'peak GPU MiB %.0f' % d['peak_gpu_mem_mb'],
      'val F %.1f meV/A' % d['metrics']['val']['forces_mae_meV_per_A'],
      'val E %.2f meV/atom' % d['metrics']['val']['energy_mae_meV_per_atom'])" "$OUT/last.json" \
    || echo "FAILED $m $p $b (see log.txt)"
}
for p in 32 bf16-mixed; do
  run mace "$p" 8
  run mace "$p" 32
done
for m in egnn nequip allegro tensor_net ani; do
  run "$m" 32 8
done
