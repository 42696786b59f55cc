#!/usr/bin/env bash
# Side-by-side data pipeline: physicsml 0.6.0 (peer) against ours, interleaved (peer, ours)
# per data set, 2 repeats; batch size 16, cut-off 5 Å, 1 torch thread, 0 workers.
#   bash experiments/data_pipeline/peer_compare.sh [results.jsonl]
# Run from anywhere: the paths below are relative to this script's repository. The peer runs
# from a scratch folder so our package does not shadow it.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
PEER=$(realpath -m "${PEER:-$MAIN/../peer-physicsml/bin/python}")  # install.sh's VENV
DATA=${DATA:-$MAIN/../shared/data}
OUT=$(realpath -m "${1:-$(mktemp -d)/peer_compare.jsonl}")
SCRATCH=$(mktemp -d)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1
unset PYTHONPATH
: >"$OUT"
for repeat in 1 2; do
  for file in md_xtb/ethanol md_xtb/aspirin emt_bulk/cu_bulk; do
    echo "repeat $repeat: $file" >&2
    (cd "$SCRATCH" && "$PEER" "$MAIN/experiments/data_pipeline/peer_side.py" \
      --data "$DATA/$file.extxyz" --batch-size 16 --cut-off 5) 2>>"$SCRATCH/peer.log" >>"$OUT"
    (cd "$MAIN" && python experiments/data_pipeline/peer_compare.py \
      --data "$DATA/$file.extxyz" --batch-size 16 --cut-off 5) >>"$OUT"
  done
done
echo "results: $OUT (peer stderr: $SCRATCH/peer.log)" >&2
(cd "$MAIN" && python experiments/data_pipeline/peer_compare.py --table "$OUT")
