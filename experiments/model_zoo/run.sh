#!/usr/bin/env bash
# Interleaved peer/ours training benchmark (peer, ours, peer, ours, ...): never in parallel.
#
# usage: experiments/model_zoo/run.sh DATA "mace egnn ..." EPOCHS THREADS MAX_STRUCTURES [REPEATS]
#   e.g. experiments/model_zoo/run.sh ../shared/data/md_xtb/aspirin.extxyz "mace egnn" 5 1 200
# env: OUT (default: a new temporary folder, printed at the end), TAG_SUFFIX (appended to the
#      result names),
#      SEED (split and training seed, default 0),
#      VENV (the peer's venv, default ../peer-physicsml beside the repository; install it
#      from the repository root with
#      VENV=../peer-physicsml bash ../shared/bench/peer_physicsml/install.sh)
# Both append one JSON line per run to $OUT/all.jsonl; tabulate with
#   python3 ../shared/bench/peer_physicsml/summarise.py $OUT/all.jsonl
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PEER="$(cd "$REPO/../shared/bench/peer_physicsml" && pwd)"
VENV="$(realpath -m "${VENV:-$REPO/../peer-physicsml}")"
OUT="$(realpath -m "${OUT:-$(mktemp -d)}")"
SEED="${SEED:-0}"
DATA="$(realpath "$1")"; MODELS="$2"; EPOCHS="$3"; THREADS="$4"; MAXS="$5"; REPEATS="${6:-1}"
mkdir -p "$OUT/logs"
for rep in $(seq 1 "$REPEATS"); do
  for m in $MODELS; do
    stem="$(basename "${DATA%.*}")_${m}_e${EPOCHS}_t${THREADS}_n${MAXS}_s${SEED}_r${rep}${TAG_SUFFIX:-}"
    echo "[$(date +%T)] peer $stem" >&2
    # the peer runs outside the repository, so that our physicsml package does not shadow it
    (cd "$OUT" && "$VENV/bin/python" "$PEER/train_bench.py" --data "$DATA" --model "$m" \
      --epochs "$EPOCHS" --batch-size 8 --pre-batch none --max-structures "$MAXS" \
      --threads "$THREADS" --seed "$SEED" --out-dir "$OUT/peer" --tag "peer_$stem" \
      > "$OUT/logs/peer_$stem.json" 2> "$OUT/logs/peer_$stem.log")
    cat "$OUT/logs/peer_$stem.json" >> "$OUT/all.jsonl"
    echo "[$(date +%T)] ours $stem" >&2
    (cd "$REPO" && PYTHONPATH="$REPO" python "$HERE/bench_ours.py" --data "$DATA" --model "$m" \
      --epochs "$EPOCHS" --batch-size 8 --max-structures "$MAXS" --threads "$THREADS" \
      --seed "$SEED" --tag "ours_$stem" > "$OUT/logs/ours_$stem.json" 2> "$OUT/logs/ours_$stem.log")
    cat "$OUT/logs/ours_$stem.json" >> "$OUT/all.jsonl"
  done
done
echo "results: $OUT/all.jsonl" >&2
