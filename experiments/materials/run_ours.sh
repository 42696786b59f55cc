#!/usr/bin/env bash
# Train our MACE (or another architecture: MODULE=nequip ...) with energy + forces + stress on the
# EMT Cu split written by prepare.py, with the hyper-parameters of run_mace_torch.sh.
#   EPOCHS=20 THREADS=1 bash experiments/materials/run_ours.sh     (from the repository root)
# The run directory is $WORK/$NAME (model.pt = the epoch with the lowest validation loss).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPLIT_DIR="$(realpath "${SPLIT_DIR:-$HERE/scratch}")"; WORK="$(realpath -m "${WORK:-$HERE/scratch}")"
EPOCHS="${EPOCHS:-20}"; THREADS="${THREADS:-1}"; MODULE="${MODULE:-mace}"
R_MAX="${R_MAX:-4.0}"; BATCH="${BATCH:-4}"; LR="${LR:-0.005}"; SEED="${SEED:-0}"
NAME="${NAME:-cu_ours_${MODULE}_e${EPOCHS}}"
rm -rf "${WORK:?}/$NAME"; mkdir -p "$WORK/$NAME"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
case "$MODULE" in
  # mace-torch's run: 32x0e+32x1o, max_ell 3, correlation 3, 2 interactions, 8 Bessel, p = 5.
  mace) MODEL_ARGS=(module.model.hidden_irreps=32x0e+32x1o module.model.mlp_irreps=16x0e) ;;
  *) MODEL_ARGS=() ;;
esac
# Losses: our defaults, 10 x MSE(E/N) + 1 x MSE(F) + 1000 x MSE(sigma), as run_mace_torch.sh.
/usr/bin/time -v physicsml-train "module=$MODULE" logger=csv "seed=$SEED" \
  datamodule.dataset=null \
  "datamodule.train_data=$SPLIT_DIR/cu_train.extxyz" \
  "datamodule.validation_data=$SPLIT_DIR/cu_val.extxyz" \
  "datamodule.cache_dir=$WORK/cache" "datamodule.split.seed=$SEED" \
  datamodule.y_graph_tensor=stress module.compute_stress=true \
  "datamodule.cut_off=$R_MAX" "datamodule.train.batch_size=$BATCH" \
  "datamodule.validation.batch_size=$BATCH" \
  module.optimizer.name=Adam "module.optimizer.config.lr=$LR" +module.optimizer.config.amsgrad=true \
  module.scheduler.name=null \
  "trainer.max_epochs=$EPOCHS" trainer.enable_progress_bar=false \
  "hydra.run.dir=$WORK/$NAME" "${MODEL_ARGS[@]}" "$@" 2>&1 | tee "$WORK/$NAME.log"
