"""``train(cfg)``: build the datamodule, module, callbacks, loggers and Trainer, then fit."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch import callbacks as pl_callbacks
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from physicsml.allocator import keep_freed_memory
from physicsml.config.checks import check_checkpoint_elements, check_run_config
from physicsml.config.errors import ConfigError
from physicsml.config.schema import DataModuleConfig
from physicsml.data.datamodule import AtomsDataModule
from physicsml.lightning.freezing import compact, freeze
from physicsml.lightning.module import PotentialModule
from physicsml.lightning.peft import (
    check_checkpoint_peft,
    peft_settings,
    plain_weights,
    with_peft,
    wrap_as_spec,
)
from physicsml.run_dir import (
    PREEMPTED_CKPT,
    claim_run_dir,
    finished_message,
    latest_checkpoint,
)
from physicsml.saved_model import GraphSettings, ModelSpec, write_model_file
from physicsml.transfer import load_source_weights, read_source, transferred_statistics

log = logging.getLogger(__name__)

PRECISIONS = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
"""``trainer.precision`` spellings -> Lightning's names; ``PRECISION_NAMES`` are all it takes."""
PRECISION_NAMES = ("32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
HALF_WEIGHTS = (
    "16-bit weights and reference energies cannot resolve energies of hundreds of eV per atom"
)
CPU_REFUSED = {
    "16-mixed": "CPU has no float16 autocast (Lightning would run bf16-mixed instead)",
    "16-true": HALF_WEIGHTS,
    "bf16-true": HALF_WEIGHTS,
}
"""Precisions refused on CPU, and why."""
WANDB_ID_FILE = "wandb_id.txt"

# PotentialModule all-reduces its metric sums itself, so Lightning's sync_dist advice is moot.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
# Lightning 2.6 calls a pytree API that torch 2.13 deprecates; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def trainer_kwargs(trainer_cfg: DictConfig) -> dict[str, Any]:
    """Trainer config -> ``lightning.Trainer`` keyword arguments (without callbacks/loggers)."""
    kwargs = cast(dict[str, Any], OmegaConf.to_container(trainer_cfg, resolve=True))
    kwargs.pop("callbacks", None)
    if kwargs.get("inference_mode"):
        raise ConfigError(
            "trainer.inference_mode must be false: forces are gradients of the energy, "
            "so validation and prediction need autograd"
        )
    kwargs["precision"] = checked_precision(kwargs["precision"], kwargs.get("accelerator"))
    # The datamodule's EpochSampler shards the data over ranks itself: Lightning must not wrap it.
    kwargs["use_distributed_sampler"] = False
    if SLURMEnvironment.detect():
        # submitit owns preemption and requeue (USR2, see conf/hydra/launcher/slurm.yaml);
        # Lightning's own auto-requeue would requeue the job a second time.
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    return {k: v for k, v in kwargs.items() if v is not None or k in ("max_epochs",)}


def checked_precision(precision: Any, accelerator: Any) -> str:
    """Lightning's name of ``trainer.precision``; a ConfigError for an unknown one and for
    one that cannot train a potential on CPU (``accelerator`` cpu, or auto without a GPU)."""
    name = PRECISIONS.get(str(precision), str(precision))
    if name not in PRECISION_NAMES:
        raise ConfigError(
            f"trainer.precision={precision}: not a precision; use 32 or 64 (on a GPU also "
            "bf16-mixed, 16-mixed, bf16-true or 16-true)"
        )
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not gpu)
    if on_cpu and name in CPU_REFUSED:
        raise ConfigError(
            f"trainer.precision={precision} on CPU: {CPU_REFUSED[name]}; use 32 or 64"
        )
    return name


def _callback_class(name: str) -> type[pl_callbacks.Callback]:
    wanted = name.replace("_", "").lower()
    for attr in dir(pl_callbacks):
        obj = getattr(pl_callbacks, attr)
        is_callback = isinstance(obj, type) and issubclass(obj, pl_callbacks.Callback)
        if is_callback and attr.lower() == wanted:
            return obj
    raise ConfigError(f"trainer.callbacks: lightning has no callback named {name!r}")


def build_callbacks(callbacks_cfg: Any, trainer_callbacks: Any) -> list[pl_callbacks.Callback]:
    """Callbacks from the ``callbacks`` group (Hydra ``_target_`` form) and from
    ``trainer.callbacks`` (the spec's list of ``{name, config}`` dicts, or a dict of them)."""
    out: list[pl_callbacks.Callback] = []
    for cb in (callbacks_cfg or {}).values():
        if cb is not None:
            out.append(instantiate(cb))
    spec = OmegaConf.to_container(trainer_callbacks, resolve=True) if trainer_callbacks else []
    if isinstance(spec, dict):
        spec = list(spec.values())
    for item in spec or []:
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"trainer.callbacks: expected {{name, config}} entries, got {item!r}")
        out.append(_callback_class(item["name"])(**(item.get("config") or {})))
    return out


class PreemptionCheckpoint(pl_callbacks.Callback):
    """In a submitit job, save ``checkpoints/preempted.ckpt`` when the preemption signal
    (USR2, or ``$SUBMITIT_PREEMPT_SIGNAL``) arrives, then let submitit's handler requeue the job:
    submitit stays the one owner of requeue. Does nothing outside submitit jobs."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / PREEMPTED_CKPT
        self.signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        self.previous: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = signal.getsignal(self.signum)
        if not callable(previous) or threading.current_thread() is not threading.main_thread():
            return  # no submitit handler to hand over to
        self.previous = previous

        def handler(signum: int, frame: Any) -> None:
            if trainer.global_rank == 0:  # no collective calls inside a signal handler
                checkpoint = trainer._checkpoint_connector.dump_checkpoint()
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.path)
                log.info("preempted: saved %s (epoch %d)", self.path, trainer.current_epoch)
            previous(signum, frame)

        signal.signal(self.signum, handler)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self.previous)
            self.previous = None


def build_loggers(logger_cfg: Any, run_dir: Path, cfg: DictConfig | None = None) -> list[Any]:
    """Loggers from the ``logger`` group (``{name: {_target_: ...}}``).

    A ``WandbLogger`` gets the resolved ``cfg`` as its run config and the run id kept in
    ``<run_dir>/wandb_id.txt``, so that a resumed run continues the same wandb run.
    """
    loggers = []
    for lg in (logger_cfg or {}).values():
        if lg is None:
            continue
        if str(lg.get("_target_", "")).endswith("WandbLogger"):
            kwargs = wandb_kwargs(run_dir, cfg)
            if lg.get("group") is None and _sweep_name() is not None:
                kwargs["group"] = _sweep_name()
            loggers.append(instantiate(lg, _partial_=True)(**kwargs))  # (a "config" kwarg)
        else:
            loggers.append(instantiate(lg))
    return loggers


def _global_rank() -> int:
    """This process's rank from the environment (before the Trainer exists): 0 unless DDP."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name):
            return int(os.environ[name])
    return int(getattr(rank_zero_only, "rank", 0))


def export_submitit_local_ranks() -> None:
    """submitit's local executor (``hydra/launcher=local``) describes the ranks of a multi-task
    job in ``SUBMITIT_LOCAL_*`` variables only: export them as torch.distributed's variables,
    so that Lightning joins the tasks instead of starting processes itself."""
    if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1 and "RANK" not in os.environ:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _sweep_name() -> str | None:
    """The sweep directory's name in a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or str(HydraConfig.get().mode) != "RunMode.MULTIRUN":
        return None
    return Path(HydraConfig.get().sweep.dir).name


def wandb_kwargs(run_dir: Path, cfg: DictConfig | None) -> dict[str, Any]:
    """``id``/``resume``/``config`` for ``WandbLogger``; rank 0 writes a new id to the run dir."""
    id_file = run_dir / WANDB_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)
        if _global_rank() == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
    kwargs: dict[str, Any] = {"id": run_id, "resume": "allow"}
    if cfg is not None:
        kwargs["config"] = OmegaConf.to_container(cfg, resolve=True)
    return kwargs


def resume_path(run_dir: Path, ckpt_path: str | None) -> str | None:
    """``ckpt_path`` if set, else the newest checkpoint a previous attempt of this run left
    (a requeued job resumes; see ``physicsml.run_dir.latest_checkpoint``)."""
    if ckpt_path is not None:
        return ckpt_path
    newest = latest_checkpoint(run_dir)
    if newest is None:
        return None
    log.info("resuming from %s (left in the run directory by an earlier attempt)", newest)
    if _global_rank() == 0:
        # Lightning's CSVLogger deletes an existing metrics.csv: keep the earlier epochs
        for csv_file in run_dir.glob("*/metrics.csv"):
            attempt = len(list(csv_file.parent.glob("metrics.before-*.csv"))) + 1
            csv_file.rename(csv_file.with_name(f"metrics.before-{attempt}.csv"))
    return str(newest)


def _final_metrics(trainer: L.Trainer) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    for key, value in sorted(trainer.callback_metrics.items()):
        if key.startswith(("val_", "train_", "test_")) and not key.endswith("_step"):
            metrics[key] = float(value)
    return metrics


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit a potential as configured, write ``metrics.json`` and ``model.pt`` (the best
    checkpoint's weights, see ``use_best_weights``; ``test`` evaluates them) into ``run_dir``
    and return the metrics.

    A ``run_dir`` that holds a run resumes it if it is this run (``physicsml.run_dir``): when
    it is finished as far as ``cfg`` trains, its metrics are returned and nothing is written;
    another run raises ``RunDirConflict`` before anything is written."""
    start = time.perf_counter()
    check_run_config(cfg, run_dir)
    peft = peft_settings(cfg)
    source = read_source(cfg)
    if source is not None:  # a checkpoint of a PEFT run holds wrappers: merge them
        spec, weights = plain_weights(source.spec, source.state_dict)
        source = replace(source, spec=spec, state_dict=weights)
    trainer_args = trainer_kwargs(cfg.trainer)
    export_submitit_local_ranks()
    # before anything is written: refuse another run's directory, do nothing for a finished run
    finished = claim_run_dir(cfg, run_dir, write=_global_rank() == 0)
    if finished is not None:
        log.info(finished_message(run_dir, finished))
        return finished
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.float32_matmul_precision:
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    if cfg.keep_freed_memory_mb is not None:
        if cfg.keep_freed_memory_mb <= 0:
            raise ConfigError(
                f"keep_freed_memory_mb must be a positive number of MiB or null, "
                f"got {cfg.keep_freed_memory_mb}"
            )
        keep_freed_memory(cfg.keep_freed_memory_mb)
    datamodule = AtomsDataModule(
        cast(DataModuleConfig, OmegaConf.to_object(cfg.datamodule)), run_dir=run_dir
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.statistics is None:
        raise ConfigError("no training data: set datamodule.train_data or datamodule.dataset")
    if source is not None:
        keep = cfg.module.init_reference_energies == "keep"
        datamodule.statistics = transferred_statistics(source, datamodule.statistics, keep)
    module = PotentialModule(with_peft(model_spec(cfg.module, datamodule), peft))
    ckpt_path = resume_path(run_dir, cfg.ckpt_path)
    if ckpt_path is not None:
        check_checkpoint_elements(ckpt_path, datamodule.elements)
        check_checkpoint_peft(ckpt_path, peft)
    if source is not None:
        load_source_weights(module, source)
        log.info("starting from the weights of %s", source.path)
    if cfg.module.freeze:
        frozen = freeze(module, list(cfg.module.freeze))
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in module.parameters())
        log.info("frozen: %s; %d of %d parameters trainable", compact(frozen), trainable, total)
    if peft is not None:
        wrapped = wrap_as_spec(module, module.spec)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        fixed = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        log.info(
            "peft %s: wrapped %d linear layers (%s); %d wrapper parameters train, the model's "
            "%d stay fixed",
            peft["method"],
            len(wrapped),
            compact(wrapped),
            trainable,
            fixed,
        )
    plain_cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    loggers = build_loggers(cfg.get("logger"), run_dir, plain_cfg)
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.trainer.callbacks)
    if not loggers:  # a learning-rate monitor has nowhere to write without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl_callbacks.LearningRateMonitor)]
    trainer = L.Trainer(
        **trainer_args,
        callbacks=[*callbacks, PreemptionCheckpoint(run_dir)],
        logger=loggers or False,
    )
    if trainer.global_rank == 0:
        (run_dir / "statistics.json").write_text(
            json.dumps(datamodule.statistics.as_dict(), indent=2)
        )
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {**_final_metrics(trainer), **use_best_weights(trainer, module)}
        if cfg.test and "test" in datamodule.datasets:
            for key, value in trainer.test(module, datamodule=datamodule, verbose=False)[0].items():
                metrics[key] = float(value)
    finally:
        if "wandb" in sys.modules:
            sys.modules["wandb"].finish()
    metrics["wall_time_s"] = time.perf_counter() - start
    if trainer.global_rank == 0:
        save_model(module, run_dir / "model.pt")
        tmp = run_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(strict_json(metrics), indent=2, allow_nan=False))
        tmp.replace(run_dir / "metrics.json")
    return metrics


def best_checkpoint(trainer: L.Trainer) -> pl_callbacks.ModelCheckpoint | None:
    """The first ``ModelCheckpoint`` monitoring a metric that saved its best checkpoint."""
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, pl_callbacks.ModelCheckpoint) or not callback.monitor:
            continue
        if callback.best_model_path and Path(callback.best_model_path).is_file():
            return callback
    return None


def use_best_weights(trainer: L.Trainer, module: PotentialModule) -> dict[str, Any]:
    """Load the best checkpoint's weights into ``module`` (what ``model.pt`` and ``test`` use)
    and say where they came from: ``model_epoch`` (epochs trained, as ``epoch``),
    ``model_source``, ``best_epoch`` and ``best_<monitor>``. Without a best checkpoint (no
    validation data, no monitoring checkpoint callback) the last epoch's weights stay."""
    callback = best_checkpoint(trainer)
    if callback is None:
        return {"model_epoch": trainer.current_epoch, "model_source": "last epoch"}
    blob = torch.load(callback.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(blob["state_dict"])
    epoch = int(blob["epoch"]) + 1  # the checkpoint's epoch index counts from 0
    path = Path(callback.best_model_path)
    which = "lowest" if callback.mode == "min" else "highest"
    return {
        "model_epoch": epoch,
        "model_source": f"{path.parent.name}/{path.name} ({which} {callback.monitor})",
        "best_epoch": epoch,
        f"best_{callback.monitor}": float(cast(torch.Tensor, callback.best_model_score)),
    }


def strict_json(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with ``None`` for every non-finite number: JSON has no NaN or Infinity."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()
    }


def model_spec(module_cfg: DictConfig, datamodule: AtomsDataModule) -> ModelSpec:
    """The saved-model spec of a run: the module config and what the data determine."""
    cfg = datamodule.config
    assert datamodule.statistics is not None
    module = OmegaConf.to_container(module_cfg, resolve=True, enum_to_str=True)
    return ModelSpec.from_module_config(
        cast(dict[str, Any], module),
        elements=datamodule.elements,
        num_elements=datamodule.num_elements,
        statistics=datamodule.statistics.as_dict(),
        targets=datamodule.targets.as_dict(),
        graph=GraphSettings(
            cut_off=float(cfg.cut_off),
            pbc=None if cfg.pbc is None else [bool(x) for x in cfg.pbc],
            cell=None if cfg.cell is None else [[float(x) for x in row] for row in cfg.cell],
            self_interaction=bool(cfg.self_interaction),
        ),
    )


def save_model(module: PotentialModule, path: Path) -> None:
    """Write ``model.pt``: the module's spec and weights (see ``physicsml.saved_model``); the
    wrappers of a PEFT run merged into plain layers of the base architecture."""
    write_model_file(*plain_weights(module.spec, module.state_dict()), path)
