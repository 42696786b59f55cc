"""Dataclass schemas of every config group, registered in Hydra's ConfigStore.

Each YAML file in ``conf/<group>/`` starts with ``defaults: [<group>_schema, _self_]`` (or
``<model>_schema`` for ``module/``), so an unknown key or a value of the wrong type fails at
composition with the key named. Defaults are those of the spec (``spec-lightning-layer``);
shipped YAML files may choose other values and say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class PreBatch(str, Enum):
    """Pre-batching method of the datamodule."""

    in_memory = "in_memory"
    on_disk = "on_disk"


class InitReferenceEnergies(str, Enum):
    """Where E0 of a run started ``init_from`` a model come from (for the source's elements)."""

    refit = "refit"
    keep = "keep"


@dataclass
class BatchConfig:
    """Loader settings of one split."""

    batch_size: int = 1


@dataclass
class SplitConfig:
    """Fractions of ``datamodule.dataset`` used for each split (may sum to less than 1)."""

    train: float = 0.8
    validation: float = 0.2
    test: float = 0.0
    seed: int = 0  # also seeds the training order of every epoch
    shuffle: bool = True  # false: consecutive blocks in store order (train, validation, test)


@dataclass
class DataModuleConfig:
    """Keys of the zarr-backed datamodule (spec: datamodule config)."""

    train: BatchConfig = field(default_factory=BatchConfig)
    validation: BatchConfig = field(default_factory=BatchConfig)
    test: BatchConfig = field(default_factory=BatchConfig)
    predict: BatchConfig = field(default_factory=BatchConfig)
    num_workers: Any = 0  # int or "all" (checked when the datamodule is built)
    num_elements: int = 0  # 0: the number of elements in the training data
    elements: list[int] | None = None  # atomic numbers; None: those of the training data
    graph_attrs_cols: list[str] | None = None
    y_node_scalars: list[str] | None = None
    y_node_vector: str | None = None
    y_graph_scalars: list[str] | None = None
    y_graph_vector: str | None = None
    # A [3, 3] per-structure column (the stress, eV/Å³) fitted by the strain derivative of
    # the energy: needs module.compute_stress.
    y_graph_tensor: str | None = None
    cut_off: float = 5.0
    pbc: list[bool] | None = None
    cell: list[list[float]] | None = None
    self_interaction: bool = False
    pre_batch: PreBatch | None = None
    # on_disk batches are cached under <pre_batch_dir>/<store>-<hash>/, the hash covering the
    # data and every parameter that changes the batches (null: <cache_dir>/prebatch).
    pre_batch_dir: str | None = None
    # Training batches are re-drawn every this many epochs and reshuffled (as whole batches)
    # on the others; 0: drawn once. null: every epoch in_memory, once on_disk (each
    # on-disk composition is a full copy of the training data).
    rebatch_every_n_epochs: int | None = None
    # Where the data come from: one source split by fractions, or one source per split. A
    # source is a path or a list of paths (stores, or files physicsml-ingest reads) read as
    # one, in order. Any: OmegaConf has no str | list[str]; the datamodule checks the type.
    dataset: Any = None
    split: SplitConfig = field(default_factory=SplitConfig)
    train_data: Any = None
    validation_data: Any = None
    test_data: Any = None
    predict_data: Any = None
    # Inputs that are not zarr stores (e.g. .extxyz) are ingested once into this folder.
    cache_dir: str = "${oc.env:PHYSICSML_CACHE,${oc.env:HOME,.}/.cache/physicsml}"


@dataclass
class TrainerConfig:
    """Keys passed to ``lightning.Trainer`` (spec: Trainer config, plus common extras).

    No ``use_distributed_sampler``: the datamodule's sampler shards the data over the ranks
    itself, so ``physicsml.train`` always turns Lightning's off."""

    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ints or "auto"
    strategy: Any = "auto"  # str or dict
    num_nodes: int = 1
    callbacks: Any = None  # spec form: list of {name, config} dicts (or a dict of them)
    default_root_dir: str | None = "training"
    enable_checkpointing: bool = False
    max_epochs: int | None = 1
    min_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None
    precision: Any = 32  # 32 or 64 (also "bf16-mixed", "16-mixed", "64-true", ...)
    gradient_clip_algorithm: str | None = None
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int | None = 1
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    deterministic: Any = None  # bool or "warn"
    benchmark: bool | None = None
    fast_dev_run: Any = False  # bool or int
    limit_train_batches: Any = None  # int or float
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: int | None = None
    inference_mode: bool = False  # forces need gradients in validation: must stay False
    sync_batchnorm: bool = False


@dataclass
class OptimizerConfig:
    """Any ``torch.optim`` optimizer by class name, with its keyword arguments."""

    name: str = "AdamW"
    config: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})


@dataclass
class SchedulerConfig:
    """Any ``torch.optim.lr_scheduler`` class by name (null: constant learning rate);
    ``monitor`` is the metric ReduceLROnPlateau watches."""

    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    interval: str = "epoch"
    frequency: int = 1
    monitor: str = "val_loss"
    strict: bool = True
    # Linear learning-rate warm-up over this many optimizer steps (from lr / warmup_steps),
    # before (and besides) the scheduler above; 0: none
    warmup_steps: int = 0


@dataclass
class LossConfig:
    """Loss of one target kind: a ``torch.nn`` loss class name and its weight."""

    name: str = "MSELoss"
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModuleConfig:
    """The LightningModule: model, targets' losses, optimizer and scheduler."""

    model: Any = MISSING  # an architecture's schema (physicsml.config.registry.model_schema)
    compute_forces: bool = False
    # Stress (1/V) dE/d(strain) by autograd, in eV/Å³ (physicsml/models/strain.py): the
    # y_graph_tensor target and the calculator's stress
    compute_stress: bool = False
    # The energy loss compares energies per atom; weight 10 keeps the energy from lagging
    # behind the forces (per-atom energy errors are ~10x smaller than force errors).
    y_graph_scalars_loss: LossConfig | None = field(default_factory=lambda: LossConfig(weight=10.0))
    # true: the energy loss compares energies per atom (large structures do not dominate);
    # false: total energies (physicsml's and SchNetPack's choice)
    energy_loss_per_atom: bool = True
    y_node_vector_loss: LossConfig | None = field(default_factory=LossConfig)
    y_node_scalars_loss: LossConfig | None = field(default_factory=LossConfig)
    y_graph_vector_loss: LossConfig | None = field(default_factory=LossConfig)
    # Stress errors are ~0.001-0.01 eV/Å³ against force errors of ~0.1 eV/Å: weight 1000 gives
    # the stress a share of the loss (as a weight of 1 does for stresses in GPa, 160x larger)
    y_graph_tensor_loss: LossConfig | None = field(
        default_factory=lambda: LossConfig(weight=1000.0)
    )
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # Energy model: E = sum_i (scale * e_i + E0[Z_i]); E0 by least squares and scale (RMS force)
    # from the training split, unless given here ({atomic number: eV} for every element).
    energy_scale: float | None = None
    # Any: OmegaConf cannot merge a dict into a None typed as an optional dict
    reference_energies: Any = None
    # Fine-tuning (physicsml/transfer.py): start from the weights of this run directory,
    # checkpoint or saved model, with a new optimizer at epoch 0; E0 refit on the new training
    # split or kept from it for its elements; parameters matching these globs stay fixed.
    init_from: str | None = None
    init_reference_energies: InitReferenceEnergies | None = None  # null: refit
    freeze: list[str] = field(default_factory=list)
    # Validate and save the exponential moving average of the weights with this decay per
    # optimizer step, in (0, 1); null: off (physicsml/lightning/ema.py)
    ema_decay: float | None = None
    # Training stages from a given epoch on (physicsml/lightning/stages.py): a list of
    # {epoch (0-based), lr, loss_weights: {target kind: weight}, freeze: [globs]}, e.g. a
    # second stage with a larger energy weight and a smaller learning rate
    stages: list[Any] = field(default_factory=list)


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning (physicsml/lightning/peft.py): the base weights stay
    fixed and wrappers of the linear layers train; ``model.pt`` holds them merged."""

    method: str = "none"  # none, lora, ssf or adapters
    rank: int = 4  # LoRA: rank of each weight block's update
    alpha: float = 4.0  # LoRA: the update is scaled by alpha / rank
    adapter_dim: int = 8  # adapters: bottleneck width
    # globs over the linear layers' names (e.g. model.interactions.*): those wrapped
    layers: list[str] = field(default_factory=lambda: ["*"])


@dataclass
class TrainConfig:
    """The primary config of ``physicsml-train``."""

    module: Any = MISSING
    datamodule: DataModuleConfig = field(default_factory=DataModuleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: dict[str, Any] | None = field(default_factory=dict)
    logger: dict[str, Any] | None = field(default_factory=dict)
    peft: PeftConfig = field(default_factory=PeftConfig)
    experiment: Any = None
    task_name: str = "train"
    seed: int | None = 42
    ckpt_path: str | None = None
    test: bool = False
    float32_matmul_precision: str | None = None
    # glibc keeps freed blocks up to this size for reuse instead of fresh pages from the OS
    # at every step (physicsml/allocator.py); null leaves the C library's defaults.
    keep_freed_memory_mb: int | None = 256
    # The metric (a key of metrics.json) that a run returns to a sweeper, e.g. Optuna's in
    # hparams_search=optuna, which minimises it: val_loss, val_forces_mae, val_energy_mae...
    optimized_metric: str = "val_loss"
