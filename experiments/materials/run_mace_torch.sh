#!/usr/bin/env bash
# Train mace-torch 0.3.16 (official MACE, mace_run_train) with energy + forces + stress on the EMT Cu
# split written by prepare.py, with the hyper-parameters of our run (README.md, "Setups").
#   EPOCHS=40 THREADS=1 bash experiments/materials/run_mace_torch.sh      (from the repository root)
# Logs, results and the model (<NAME>.model) go to $WORK/$NAME; run prepare.py first.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(realpath -m "${VENV:-.peer-mace}")"; SPLIT_DIR="$(realpath "${SPLIT_DIR:-$HERE/scratch}")"
WORK="${WORK:-$HERE/scratch}"; EPOCHS="${EPOCHS:-40}"; THREADS="${THREADS:-1}"
R_MAX="${R_MAX:-4.0}"; BATCH="${BATCH:-4}"; LR="${LR:-0.005}"; SEED="${SEED:-0}"
NAME="${NAME:-cu_mace_torch_e${EPOCHS}}"
rm -rf "$WORK/$NAME"; mkdir -p "$WORK/$NAME"; cd "$WORK/$NAME"
# mace's "stress" loss: energy_weight * MSE(E/N) + forces_weight * MSE(F) + stress_weight * MSE(sigma),
# the same terms and weights as our defaults (module.y_graph_scalars_loss/y_node_vector_loss/
# y_graph_tensor_loss: 10 per-atom energy, 1 forces, 1000 stress in eV/A^3). E0 by least squares
# (--E0s average) and the RMS-force scale, as ours. mace-torch always uses AMSGrad.
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
/usr/bin/time -v "$VENV/bin/mace_run_train" \
  --name "$NAME" --seed "$SEED" --device cpu --default_dtype float32 \
  --train_file "$SPLIT_DIR/cu_train_mace.xyz" --valid_file "$SPLIT_DIR/cu_val_mace.xyz" \
  --energy_key REF_energy --forces_key REF_forces --stress_key REF_stress --E0s average \
  --model MACE --hidden_irreps '32x0e+32x1o' --max_ell 3 --correlation 3 --num_interactions 2 \
  --num_radial_basis 8 --num_cutoff_basis 5 --MLP_irreps 16x0e --r_max "$R_MAX" \
  --scaling rms_forces_scaling \
  --loss stress --energy_weight 10 --forces_weight 1 --stress_weight 1000 --compute_stress True \
  --optimizer adam --lr "$LR" --weight_decay 0.0 --clip_grad None \
  --scheduler ExponentialLR --lr_scheduler_gamma 1.0 \
  --batch_size "$BATCH" --valid_batch_size "$BATCH" --max_num_epochs "$EPOCHS" --eval_interval 1 \
  --error_table PerAtomMAE --num_workers 0 2>&1 | tee run.log
