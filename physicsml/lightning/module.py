"""The LightningModule for 3D potentials: energy model, forces, losses, metrics, optimizers."""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.config.registry import architecture_class, checked_hyperparameters
from physicsml.lightning.ema import WeightAverage, resume_weights
from physicsml.lightning.errors import TrainingDivergedError
from physicsml.lightning.stages import active_stage, apply_stage, parse_stages
from physicsml.models.strain import apply_strain, cell_volumes, stress_from_gradient
from physicsml.models.utils import scatter_sum
from physicsml.saved_model import SPEC_KEY, ModelSpec

TARGET_KINDS = (
    "y_graph_scalars",
    "y_graph_vector",
    "y_graph_tensor",
    "y_node_scalars",
    "y_node_vector",
)
DIVERGED_ADVICE = "lower module.optimizer.config.lr, or check the data"


def _reference_energies(spec: ModelSpec) -> Tensor:
    """E0 per element: ``training["reference_energies"]`` when given (every element of the
    data), else the least-squares fit of the training split."""
    elements = spec.elements
    given: dict[Any, float] | None = spec.training.get("reference_energies")
    if not given:
        fitted = torch.tensor(spec.statistics["reference_energies"], dtype=torch.float64)
        return torch.nn.functional.pad(fitted, (0, spec.num_elements - len(fitted)))
    try:
        given = {int(z): float(e) for z, e in given.items()}
    except (AttributeError, TypeError, ValueError):
        raise ConfigError(
            f"module.reference_energies: expected {{atomic number: energy in eV}}, got {given!r}"
        ) from None
    unknown = sorted(set(given) - set(elements))
    missing = sorted(set(elements) - set(given))
    if unknown or missing:
        problem = f"elements {unknown} are not in the data" if unknown else f"{missing} missing"
        raise ConfigError(
            f"module.reference_energies: {problem}; give one energy (eV) for each of the "
            f"data's elements {elements}, or leave it empty to fit them"
        )
    reference = torch.zeros(spec.num_elements, dtype=torch.float64)
    for z, e in given.items():
        reference[elements.index(z)] = e
    return reference


def target_names(targets: dict[str, Any], kind: str) -> list[str]:
    """The data's names of target ``kind`` (``y_graph_scalars``...) as a list."""
    value = targets.get(kind)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class PotentialModule(L.LightningModule):
    """Wraps an architecture into an interatomic potential.

    ``spec`` (a :class:`~physicsml.saved_model.ModelSpec`) names the architecture and its
    hyperparameters, the training settings and what the data determine; it is the module's
    only hyperparameter (plain containers), so checkpoints load with ``weights_only=True``.

    The energy is ``sum_i scale * e_i + E0[Z_i]``, reported as the first ``y_graph_scalars``
    column; forces are ``-dE/dx`` by autograd when ``compute_forces`` is set (also in
    validation). Without an energy column the energy is still the model's, unsupervised:
    a potential may be trained on forces alone.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.save_hyperparameters({SPEC_KEY: spec.as_dict()})
        self.spec = spec
        self.module_config = spec.training
        self.targets = spec.targets
        self.compute_forces = bool(self.module_config.get("compute_forces", False))
        self.compute_stress = bool(self.module_config.get("compute_stress", False))
        self.energy_loss_per_atom = bool(self.module_config.get("energy_loss_per_atom", True))
        if self.targets.get("y_graph_tensor") and not self.compute_stress:
            raise ConfigError(
                f"datamodule.y_graph_tensor={self.targets['y_graph_tensor']} needs "
                "module.compute_stress=true: the stress is the strain derivative of the energy"
            )
        self.graph_scalar_names = target_names(self.targets, "y_graph_scalars")
        self.node_scalar_names = target_names(self.targets, "y_node_scalars")
        self.energy_variance, self.forces_variance = self._variance_heads()
        stats = spec.statistics
        heads = {
            "num_node_scalars": len(self.node_scalar_names) + self.forces_variance,
            "node_vector": bool(self.targets.get("y_node_vector")) and not self.compute_forces,
            "graph_vector": bool(self.targets.get("y_graph_vector")),
            "num_graph_scalars": max(len(self.graph_scalar_names) - 1, 0) + self.energy_variance,
            "num_graph_attrs": len(self.targets.get("graph_attrs_cols") or []),
        }
        hyperparameters = checked_hyperparameters(spec.architecture, spec.hyperparameters)
        try:
            self.model = architecture_class(spec.architecture)(
                num_elements=spec.num_elements,
                cut_off=float(spec.graph.cut_off),
                avg_num_neighbours=float(stats["avg_num_neighbours"]),
                **{k: v for k, v in heads.items() if v},
                **hyperparameters,
            )
        except ConfigError:
            raise
        except (ValueError, RuntimeError, TypeError) as exc:  # e.g. a negative layer width
            raise ConfigError(
                f"module.model: {spec.architecture} cannot be built with {hyperparameters}: {exc}"
            ) from None
        self.register_buffer("reference_energies", _reference_energies(spec).float())
        scale = self.module_config.get("energy_scale") or stats["energy_scale"]
        self.register_buffer("energy_scale", torch.tensor(float(scale)))
        self.losses = {
            kind: self._make_loss(self.module_config.get(f"{kind}_loss"), kind)
            for kind in TARGET_KINDS
            if self.targets.get(kind)
        }
        self._sums: dict[str, dict[str, Tensor]] = {}
        decay = self.module_config.get("ema_decay")
        self.ema = None if decay is None else WeightAverage(float(decay))
        self.stages = parse_stages(
            self.module_config.get("stages") or [],
            self.losses,
            [name for name, _ in self.named_parameters()],
        )
        self._stage = -1  # the stage in force (-1: none yet)
        self._checkpoint_stage = -1  # the stage in force when the resumed checkpoint was saved

    def _variance_heads(self) -> tuple[bool, bool]:
        """Whether the energy and the forces get a variance head: their loss is Gaussian NLL
        (``torch.nn.GaussianNLLLoss``), which needs a predicted variance."""

        def nll(kind: str) -> bool:
            config = self.module_config.get(f"{kind}_loss") or {}
            return bool(self.targets.get(kind)) and config.get("name") == "GaussianNLLLoss"

        energy, forces = nll("y_graph_scalars"), nll("y_node_vector")
        if energy and len(self.graph_scalar_names) != 1:
            raise ConfigError(
                "module.y_graph_scalars_loss.name=GaussianNLLLoss: the variance head is the "
                f"energy's, so datamodule.y_graph_scalars must be the energy alone, not "
                f"{self.graph_scalar_names}"
            )
        if forces and not self.compute_forces:
            raise ConfigError(
                "module.y_node_vector_loss.name=GaussianNLLLoss: the variance head is the "
                "forces', so it needs module.compute_forces=true"
            )
        return energy, forces

    @staticmethod
    def _make_loss(config: dict[str, Any] | None, kind: str) -> tuple[torch.nn.Module, float]:
        if config is None:
            raise ConfigError(f"module.{kind}_loss is null but datamodule.{kind} is configured")
        name = config["name"]
        loss_class = getattr(torch.nn, name, None)
        if loss_class is None:
            raise ConfigError(f"module.{kind}_loss.name: torch.nn has no loss called {name!r}")
        return loss_class(**config.get("config", {})), float(config.get("weight", 1.0))

    # -- forward -------------------------------------------------------------------
    def forward(
        self, batch: dict[str, Tensor], forces: bool | None = None, stress: bool | None = None
    ) -> dict[str, Tensor]:
        """Predictions for every configured target kind, plus ``energy`` ([graphs], eV), when
        ``forces`` (default: ``compute_forces``) ``forces`` (-dE/dx, [atoms, 3]) and when
        ``stress`` (default: ``compute_stress``) ``stress`` ((1/V) dE/d(strain), [graphs, 3, 3],
        eV/Å³; zero for a structure periodic in no direction)."""
        want_forces = self.compute_forces if forces is None else forces
        want_stress = self.compute_stress if stress is None else stress
        positions = batch["coordinates"]
        if want_forces or want_stress:
            positions.requires_grad_(True)
        inputs = batch
        if want_stress:
            edge_graph = batch["batch"][batch["edge_index"][0]]
            graphs = batch["ptr"].numel() - 1
            strain, strained, shifts = apply_strain(
                positions, batch["cell_shift"], batch["batch"], edge_graph, graphs
            )
            inputs = {**batch, "coordinates": strained, "cell_shift": shifts}
        out = self.model(inputs)
        energy = self._energy(out["node_energy"], batch)
        preds: dict[str, Tensor] = {"energy": energy}
        if self.graph_scalar_names:
            columns = [energy.unsqueeze(-1)]
            if len(self.graph_scalar_names) > 1:
                columns.append(out["graph_scalars"])
            preds["y_graph_scalars"] = torch.cat(columns, dim=-1)
        if self.energy_variance:  # of the total energy, eV²
            preds["energy_var"] = _positive(out["graph_scalars"][:, -1])
        if self.forces_variance:  # of each force component of an atom, (eV/Å)²
            preds["forces_var"] = _positive(out["y_node_scalars"][:, -1])
        if want_stress:
            grad, strain_grad = torch.autograd.grad(
                energy.sum(), [positions, strain], create_graph=self.training
            )
            volume = cell_volumes(batch["cell"], batch["pbc"])
            preds["stress"] = stress_from_gradient(strain_grad, volume.to(strain_grad.dtype))
            if self.targets.get("y_graph_tensor"):
                preds["y_graph_tensor"] = preds["stress"]
        elif want_forces:
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
        if want_forces:
            preds["forces"] = -grad
        if self.node_scalar_names:
            preds["y_node_scalars"] = out["y_node_scalars"][:, : len(self.node_scalar_names)]
        if self.targets.get("y_graph_vector"):
            preds["y_graph_vector"] = out["y_graph_vector"]
        if self.targets.get("y_node_vector"):
            preds["y_node_vector"] = (
                preds["forces"] if self.compute_forces else out["y_node_vector"]
            )
        return preds

    def _energy(self, node_out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """``sum_i scale * e_i + E0[Z_i]`` per structure, in float32 (float64 for a float64
        model) also under autocast: in bf16, E0 (hundreds of eV per atom) and the sum over
        atoms would be rounded to whole eV."""
        dtype = torch.promote_types(node_out.dtype, torch.float32)
        with torch.autocast(node_out.device.type, enabled=False):
            reference = cast(Tensor, self.reference_energies).to(dtype)[batch["species"]]
            scale = cast(Tensor, self.energy_scale).to(dtype)
            node_energy = scale * node_out.to(dtype) + reference
            return scatter_sum(node_energy, batch["batch"], batch["ptr"].numel() - 1)

    # -- steps -------------------------------------------------------------------
    def _step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        with torch.enable_grad():
            preds = self(batch)
        n_atoms = (batch["ptr"][1:] - batch["ptr"][:-1]).to(
            preds.get("y_graph_scalars", batch["coordinates"]).dtype
        )
        loss = batch["coordinates"].new_zeros(())
        for kind, (loss_fn, weight) in self.losses.items():
            pred, ref = preds[kind], batch[kind]
            variance = self._variance(kind, preds)
            if kind == "y_graph_scalars" and self.energy_loss_per_atom:
                # Energies are extensive: compare per atom so that large structures don't dominate.
                pred, ref = pred / n_atoms[:, None], ref / n_atoms[:, None]
                if variance is not None:
                    variance = variance / n_atoms[:, None] ** 2
            labelled = _labelled(ref)
            if labelled is not None:  # missing labels (NaN) leave the loss
                if not bool(labelled.any()):
                    continue
                pred, ref = pred[labelled], ref[labelled]
                variance = None if variance is None else variance[labelled]
            if variance is None:
                loss = loss + weight * loss_fn(pred, ref)
            else:
                loss = loss + weight * loss_fn(pred, ref, variance)
        self._accumulate(split, preds, batch, loss)
        return loss

    def _variance(self, kind: str, preds: dict[str, Tensor]) -> Tensor | None:
        """The predicted variance shaped as target ``kind`` for a Gaussian NLL loss, else None."""
        if kind == "y_graph_scalars" and self.energy_variance:
            return preds["energy_var"][:, None]
        if kind == "y_node_vector" and self.forces_variance:
            return preds["forces_var"][:, None].expand_as(preds["forces"])
        return None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self._stop_unless_finite(loss, batch_idx)
        self.log("train_loss_step", loss.detach(), prog_bar=True, batch_size=1)
        return loss

    def _stop_unless_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Raise ``TrainingDivergedError`` before the backward pass when the loss of this or
        any other rank is not finite. Under DDP this costs one scalar all-reduce per step, and
        every rank stops at the same step (a rank stopping alone would leave the others
        waiting in the gradient all-reduce)."""
        total = self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="sum")
        if bool(torch.isfinite(total)):
            return
        raise TrainingDivergedError(
            f"the training loss is {float(total)} at epoch {self.current_epoch + 1}, "
            f"batch {batch_idx + 1}: training stopped; {self._last_checkpoint()} "
            f"({DIVERGED_ADVICE})"
        )

    def _last_checkpoint(self) -> str:
        """Where the newest checkpoint of this run is, for the divergence message."""
        written = [
            Path(path)
            for callback in self.trainer.checkpoint_callbacks
            for path in (
                getattr(callback, "last_model_path", ""),
                getattr(callback, "best_model_path", ""),
            )
            if path
        ]
        written = [path for path in written if path.is_file()]
        if not written:
            return "no checkpoint was written before it"
        # the newest; of equally new ones (the same epoch) last.ckpt, which a resume uses
        newest = max(written, key=lambda path: (path.stat().st_mtime_ns, path.stem == "last"))
        return f"the last finite checkpoint is {newest}"

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        with torch.inference_mode(False), torch.enable_grad():
            batch = {k: v.clone() for k, v in batch.items()}
            preds = self(batch)
        preds = {k: v.detach() for k, v in preds.items()}
        preds["ptr"] = batch["ptr"]
        return preds

    # -- exact metrics in physical units ---------------------------------------------
    def _columns(self, kind: str, pred: Tensor, ref: Tensor) -> list[tuple[str, Tensor, Tensor]]:
        if kind in ("y_graph_scalars", "y_node_scalars"):
            names = self.graph_scalar_names if kind == "y_graph_scalars" else self.node_scalar_names
            return [(name, pred[:, k], ref[:, k]) for k, name in enumerate(names)]
        return [(str(self.targets[kind]), pred, ref)]

    def _accumulate(
        self, split: str, preds: dict[str, Tensor], batch: dict[str, Tensor], loss: Tensor
    ) -> None:
        sums = self._sums.setdefault(split, {})
        num_graphs = float(batch["ptr"].numel() - 1)
        self._add(sums, "loss", loss.detach() * num_graphs, num_graphs)
        n_atoms = (batch["ptr"][1:] - batch["ptr"][:-1]).to(loss.dtype)
        for kind in self.losses:
            for name, pred, ref in self._columns(kind, preds[kind].detach(), batch[kind]):
                err, atoms_of = (pred - ref).double(), n_atoms
                labelled = _labelled(ref)
                if labelled is not None:  # missing labels leave the metrics
                    err = err[labelled]
                    atoms_of = n_atoms[labelled] if kind == "y_graph_scalars" else n_atoms
                self._add(sums, f"{name}_abs", err.abs().sum(), err.numel())
                self._add(sums, f"{name}_sq", (err**2).sum(), err.numel())
                if kind == "y_graph_scalars" and name == self.graph_scalar_names[0]:
                    per_atom = err / atoms_of.double()
                    self._add(sums, f"{name}_per_atom_abs", per_atom.abs().sum(), err.numel())

    @staticmethod
    def _add(sums: dict[str, Tensor], key: str, value: Tensor, count: float) -> None:
        entry = torch.stack(
            [
                value.double().reshape(()),
                torch.tensor(count, dtype=torch.float64, device=value.device),
            ]
        )
        sums[key] = sums[key] + entry if key in sums else entry

    def _log_epoch(self, split: str) -> None:
        sums = self._sums.pop(split, {})
        if not sums:
            return
        keys = sorted(sums)
        stacked = torch.stack([sums[k] for k in keys])
        if self.trainer.world_size > 1:
            stacked = self.trainer.strategy.reduce(stacked, reduce_op="sum")
        metrics: dict[str, float] = {}
        for key, (total, count) in zip(keys, stacked.tolist(), strict=True):
            mean = total / max(count, 1.0)
            if key == "loss":
                metrics[f"{split}_loss"] = mean
            elif key.endswith("_per_atom_abs"):
                metrics[f"{split}_{key[: -len('_abs')]}_mae"] = mean
            elif key.endswith("_abs"):
                metrics[f"{split}_{key[:-4]}_mae"] = mean
            elif key.endswith("_sq"):
                metrics[f"{split}_{key[:-3]}_rmse"] = mean**0.5
        self.log_dict(metrics, prog_bar=False, sync_dist=False, rank_zero_only=False)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        # the next epoch's stage now, after this epoch's checkpoint and before the callbacks'
        # epoch-start hooks (the learning-rate monitor) run
        last = self.trainer.max_epochs
        if last is None or last < 0 or self.current_epoch + 1 < last:
            self._enter_stage(self.current_epoch + 1)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self.ema is not None:
            self.ema.swap_out(self)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # -- optimisation -------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt_cfg = self.module_config["optimizer"]
        opt_class = getattr(torch.optim, opt_cfg["name"], None)
        if opt_class is None:
            raise ConfigError(f"module.optimizer.name: torch.optim has no {opt_cfg['name']!r}")
        # with stages every parameter: a later stage may unfreeze what is frozen now
        params = [p for p in self.parameters() if p.requires_grad or self.stages]
        optimizer = _optimizer(opt_class, params, dict(opt_cfg.get("config", {})))
        sched_cfg = self.module_config.get("scheduler") or {}
        schedulers = []
        warmup = int(sched_cfg.get("warmup_steps") or 0)
        if warmup < 0:
            raise ConfigError(f"module.scheduler.warmup_steps: expected >= 0, got {warmup}")
        if warmup:  # linear from lr / warmup_steps to lr, then the scheduler's own course
            linear = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0 / warmup, total_iters=warmup)
            schedulers.append({"scheduler": linear, "interval": "step"})
        if sched_cfg.get("name"):
            sched_class = getattr(torch.optim.lr_scheduler, sched_cfg["name"], None)
            if sched_class is None:
                raise ConfigError(
                    f"module.scheduler.name: torch.optim.lr_scheduler has no {sched_cfg['name']!r}"
                )
            schedulers.append(
                {
                    "scheduler": sched_class(optimizer, **sched_cfg.get("config", {})),
                    "interval": sched_cfg.get("interval", "epoch"),
                    "frequency": sched_cfg.get("frequency", 1),
                    "monitor": sched_cfg.get("monitor", "val_loss"),
                    "strict": sched_cfg.get("strict", True),
                }
            )
        return ([optimizer], schedulers) if schedulers else optimizer

    # -- checkpoint extras: RNG states, and the plateau scheduler's pending step ---------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A finite loss can still give infinite gradients and non-finite weights: never save them
        broken = [name for name, p in self.named_parameters() if not bool(p.isfinite().all())]
        if broken:
            raise TrainingDivergedError(
                f"the weights ({broken[0]}{' and others' if len(broken) > 1 else ''}) are not "
                f"finite after epoch {self.current_epoch + 1}: training stopped; "
                f"{self._last_checkpoint()} ({DIVERGED_ADVICE})"
            )
        np_state = cast(tuple[Any, ...], np.random.get_state())
        version, internal, gauss = random.getstate()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
            "python_version": int(version),
            "python_internal": torch.tensor(internal, dtype=torch.int64),
            "python_gauss": gauss,
        }
        # An end-of-epoch checkpoint is written before the epoch's scheduler step, and on
        # resume Lightning skips that step for ReduceLROnPlateau (the metric is gone): keep it.
        monitor = (self.module_config.get("scheduler") or {}).get("monitor")
        value = self.trainer.callback_metrics.get(monitor) if monitor else None
        if value is not None:
            checkpoint["plateau_metric"] = float(value)
        if self.ema is not None:
            self.ema.save(checkpoint)
        checkpoint["training_stage"] = self._stage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._plateau_metric = checkpoint.get("plateau_metric")
        self._checkpoint_stage = int(checkpoint.get("training_stage", -1))
        if self.ema is not None:
            self.ema.load(checkpoint, self)
        resume_weights(checkpoint)
        states: dict[str, Any] | None = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        np.random.set_state(
            ("MT19937", states["numpy_keys"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0)
        )
        internal = tuple(int(x) for x in states["python_internal"].tolist())
        random.setstate((states["python_version"], internal, states["python_gauss"]))

    # -- weight averaging (module.ema_decay, see physicsml.lightning.ema) -----------------
    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.start(self)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self)

    def on_validation_epoch_start(self) -> None:
        if self.ema is not None:
            self.ema.swap_in(self)

    def on_fit_end(self) -> None:
        """Keep the averaged weights: ``model.pt`` and ``test`` use them."""
        if self.ema is not None:
            self.ema.keep_average(self)
            self.ema = None

    def _enter_stage(self, epoch: int) -> None:
        """Put the stage of ``epoch`` in force when it is not (``module.stages``). After a
        resume, the checkpoint's optimizer keeps the learning rate of the stage it was in."""
        index = active_stage(self.stages, epoch)
        if index != self._stage:
            set_lr = index != self._checkpoint_stage
            apply_stage(self, self.stages, index, self.losses, set_lr)
            self._stage = index

    def on_train_start(self) -> None:
        """Put this epoch's stage in force; after a resume, take the plateau scheduler step
        the checkpoint was written before."""
        self._enter_stage(self.current_epoch)
        metric = getattr(self, "_plateau_metric", None)
        self._plateau_metric = None
        if metric is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            if plateau and scheduler.last_epoch < self.trainer.current_epoch:
                scheduler.step(metric)


def _positive(raw: Tensor) -> Tensor:
    """A variance from a head's raw output: softplus, kept above 1e-6 (the NLL's log)."""
    return torch.nn.functional.softplus(raw) + 1e-6


def _labelled(ref: Tensor) -> Tensor | None:
    """Which rows of a target (structures, atoms, or one column's values) carry a label, or
    None when all do: a row with any NaN is missing (mixed data sets, e.g. stress for some
    structures only). An infinite label is not missing but broken: it stays, and stops the
    training with a non-finite loss."""
    known = ~torch.isnan(ref)
    if bool(known.all()):
        return None
    return known.reshape(ref.shape[0], -1).all(dim=1)


def _optimizer(
    opt_class: type[torch.optim.Optimizer], params: Sequence[Tensor], kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    """The optimizer, with its fused kernel where it has one and the config chooses none.

    Fused Adam updates all parameters in one kernel instead of a few per tensor: 2 ms less per
    step for EGNN's 70 weight tensors on 2 cores, the same arithmetic.
    """
    if "fused" in inspect.signature(opt_class).parameters and not {"fused", "foreach"} & set(
        kwargs
    ):
        try:
            return opt_class(params, **kwargs, fused=True)  # type: ignore[call-arg]
        except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
            pass
    return opt_class(params, **kwargs)
