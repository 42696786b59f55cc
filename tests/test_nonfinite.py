"""Non-finite values: a diverging training stops, metrics.json stays strict JSON, the
calculator refuses structures it cannot evaluate, energies stay float32 under autocast."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read
from lightning.pytorch.strategies import SingleDeviceStrategy

from physicsml.api import compose_config
from physicsml.calculators import PhysicsMLCalculator
from physicsml.config.errors import ConfigError
from physicsml.data.graph import atoms_to_batch
from physicsml.inference import load_module, predict_atoms
from physicsml.lightning.errors import TrainingDivergedError
from physicsml.lightning.module import PotentialModule
from physicsml.train import train, trainer_kwargs
from tests.structures import ETHANOL
from tests.test_ddp import DDP_ON_CPU, data, run_cli

TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "datamodule.split.train=0.1",  # 40 structures: 10 batches of 4
    "datamodule.split.validation=0.05",
    "datamodule.train.batch_size=4",
    "logger=none",
]
ADVICE = r" \(lower module.optimizer.config.lr, or check the data\)"


def poison_training_batch(monkeypatch: pytest.MonkeyPatch, epoch: int, batch: int) -> None:
    """Give every energy of the training batch ``batch`` of epoch ``epoch`` (from 0) as inf."""
    original = PotentialModule.training_step

    def training_step(self: PotentialModule, data: dict, batch_idx: int) -> torch.Tensor:
        if (self.current_epoch, batch_idx) == (epoch, batch):
            # an infinite label (a NaN one would be a missing label, left out of the loss)
            data["y_graph_scalars"] = torch.full_like(data["y_graph_scalars"], math.inf)
        return original(self, data, batch_idx)

    monkeypatch.setattr(PotentialModule, "training_step", training_step)


def assert_finite_checkpoint_of_epoch(path: Path, epoch: int) -> None:
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == epoch and checkpoint["global_step"] == 10 * (epoch + 1)
    for key, value in checkpoint["state_dict"].items():
        assert torch.isfinite(value).all(), key


def test_a_nan_loss_stops_training_and_keeps_the_last_finite_checkpoint(
    cfg_factory, monkeypatch
) -> None:
    cfg = cfg_factory(*TINY, "trainer.max_epochs=3")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    poison_training_batch(monkeypatch, epoch=1, batch=4)
    last = run_dir / "checkpoints" / "last.ckpt"
    expected = (
        rf"^the training loss is inf at epoch 2, batch 5: training stopped; "
        rf"the last finite checkpoint is {re.escape(str(last))}{ADVICE}$"
    )
    with pytest.raises(TrainingDivergedError, match=expected):
        train(cfg, run_dir)
    assert_finite_checkpoint_of_epoch(last, 0)
    assert not (run_dir / "model.pt").exists() and not (run_dir / "metrics.json").exists()


def test_non_finite_weights_are_never_checkpointed(cfg_factory, monkeypatch) -> None:
    """A finite loss with infinite gradients leaves non-finite weights: no checkpoint of them."""
    cfg = cfg_factory(*TINY, "trainer.max_epochs=3")
    run_dir = Path(cfg.hydra.runtime.output_dir)

    def on_validation_epoch_start(self: PotentialModule) -> None:
        if self.current_epoch == 1 and not self.trainer.sanity_checking:
            next(self.parameters()).data.fill_(math.inf)

    monkeypatch.setattr(PotentialModule, "on_validation_epoch_start", on_validation_epoch_start)
    with pytest.raises(TrainingDivergedError, match=r"^the weights \(model\..*\) are not finite"):
        train(cfg, run_dir)
    assert_finite_checkpoint_of_epoch(run_dir / "checkpoints" / "last.ckpt", 0)
    assert not (run_dir / "model.pt").exists() and not (run_dir / "metrics.json").exists()


def test_a_non_finite_loss_of_another_rank_stops_this_one(cfg_factory, monkeypatch) -> None:
    """The decision is taken on the loss reduced over the ranks: here the (single-process)
    reduction reports what another rank's NaN would give, while this rank's loss is finite."""
    cfg = cfg_factory(*TINY, "trainer.max_epochs=1")
    seen: list[float] = []

    def reduce(self: SingleDeviceStrategy, tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not tensor.is_floating_point():  # Lightning's own reductions of dataloader lengths
            return tensor
        seen.append(float(tensor))
        return tensor + math.nan if len(seen) == 3 else tensor

    monkeypatch.setattr(SingleDeviceStrategy, "reduce", reduce)
    with pytest.raises(TrainingDivergedError, match=r"at epoch 1, batch 3: .*no checkpoint was"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))
    assert len(seen) == 3 and all(math.isfinite(v) for v in seen)


def test_a_diverging_run_is_a_one_line_error_with_exit_2(ethanol_store: Path, tmp_path) -> None:
    run_dir = tmp_path / "run"
    done = run_cli(
        *TINY,
        *data(ethanol_store, tmp_path),
        "module.optimizer.config.lr=1e30",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last_line = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"physicsml-train: error: the training loss is (nan|inf) at epoch 1, batch \d+: "
        rf"training stopped; no checkpoint was written before it{ADVICE}",
        last_line,
    ), last_line
    assert "Traceback" not in done.stderr
    assert not (run_dir / "model.pt").exists() and not (run_dir / "metrics.json").exists()


def test_all_ddp_ranks_stop_on_a_diverging_loss(ethanol_store: Path, tmp_path: Path) -> None:
    """Both ranks raise at the same step: the run ends with exit 2 instead of hanging."""
    done = run_cli(
        *TINY,
        *data(ethanol_store, tmp_path),
        *DDP_ON_CPU,
        "module.optimizer.config.lr=1e30",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=240,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in done.stderr + done.stdout
    assert "the training loss is" in done.stderr.strip().splitlines()[-1]
    rank_1_log = (tmp_path / "run" / "train_ddp_process_1.log").read_text()
    assert "TrainingDivergedError: the training loss is" in rank_1_log  # it stopped itself


def test_a_non_finite_validation_metric_is_null_in_metrics_json(cfg_factory, monkeypatch) -> None:
    cfg = cfg_factory(*TINY, "trainer.max_epochs=1")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    original = PotentialModule.validation_step

    def validation_step(self: PotentialModule, batch: dict, batch_idx: int) -> None:
        batch["y_graph_scalars"] = torch.full_like(batch["y_graph_scalars"], math.inf)
        original(self, batch, batch_idx)

    monkeypatch.setattr(PotentialModule, "validation_step", validation_step)
    train(cfg, run_dir)

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    saved = json.loads((run_dir / "metrics.json").read_text(), parse_constant=refuse)
    assert saved["val_energy_mae"] is None and saved["val_loss"] is None
    assert math.isfinite(saved["val_forces_mae"]) and math.isfinite(saved["train_loss"])


# -- inputs the calculator and predict_atoms refuse -------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory, ethanol_store: Path) -> Path:
    """A model trained for one epoch on 40 ethanol structures."""
    tmp = tmp_path_factory.mktemp("model")
    overrides = [
        *TINY,
        f"datamodule.dataset={ethanol_store}",
        f"datamodule.cache_dir={tmp / 'cache'}",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    train(compose_config(overrides, run_dir=tmp / "run"), tmp / "run")
    return tmp / "run" / "model.pt"


@pytest.fixture
def ethanol() -> Atoms:
    return read(ETHANOL, index=0)


def energy(path: Path, atoms: Atoms) -> float:
    atoms.calc = PhysicsMLCalculator(path)
    return float(atoms.get_potential_energy())


def test_the_calculator_refuses_non_finite_positions(model_path: Path, ethanol: Atoms) -> None:
    ethanol.positions[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"^positions of atom 3 are not finite"):
        energy(model_path, ethanol)


def test_the_calculator_refuses_a_non_finite_cell(model_path: Path, ethanol: Atoms) -> None:
    ethanol.cell = np.full((3, 3), math.nan)
    with pytest.raises(ValueError, match=r"^the cell is not finite"):
        energy(model_path, ethanol)


def test_the_calculator_refuses_an_empty_structure(model_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^the structure has no atoms$"):
        energy(model_path, Atoms())


def test_the_calculator_refuses_a_singular_periodic_cell(model_path: Path, ethanol: Atoms) -> None:
    ethanol.cell = [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [5.0, 5.0, 0.0]]
    ethanol.pbc = True
    with pytest.raises(ValueError, match=r"^the cell .* is singular in its periodic directions"):
        energy(model_path, ethanol)
    # periodic in x and y only: the third vector is not used, and may be zero
    ethanol.cell = [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]]
    ethanol.pbc = [True, True, False]
    assert math.isfinite(energy(model_path, ethanol))


def test_the_calculator_refuses_an_unknown_element(model_path: Path, ethanol: Atoms) -> None:
    ethanol.numbers[0] = 17
    with pytest.raises(ValueError, match=r"^element Cl not known to the model, .* H, C, O$"):
        energy(model_path, ethanol)


def test_predict_atoms_names_the_structure(model_path: Path, ethanol: Atoms) -> None:
    broken = ethanol.copy()
    broken.positions[2] = math.inf
    with pytest.raises(ValueError, match=r"^structure 1: positions of atom 2 are not finite"):
        predict_atoms(load_module(model_path), [ethanol, broken])


# -- mixed precision --------------------------------------------------------------------


def test_the_energy_is_summed_in_float32_under_bf16_autocast(
    model_path: Path, ethanol: Atoms
) -> None:
    module = load_module(model_path)
    frames = [ethanol, read(ETHANOL, index=1)]
    batch = atoms_to_batch(frames, module.spec.elements, module.spec.graph.cut_off, torch.float32)
    full = module({k: v.clone() for k, v in batch.items()}, forces=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module({k: v.clone() for k, v in batch.items()}, forces=True)
    assert mixed["energy"].dtype == torch.float32 and mixed["forces"].dtype == torch.float32
    # in bf16, E0 and the sum (-310 eV, where bf16's spacing is 2 eV) were 0.36 eV off; the
    # model's own bf16 rounding costs 2-3 meV here
    assert full["energy"].abs().min() > 256
    torch.testing.assert_close(mixed["energy"], full["energy"], rtol=0, atol=0.02)


@pytest.mark.parametrize("precision", ["16", "16-mixed", "16-true", "bf16-true"])
def test_half_precisions_are_refused_on_cpu(cfg_factory, precision: str) -> None:
    cfg = cfg_factory(f"trainer.precision={precision}", "trainer.accelerator=cpu")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    expected = rf"^trainer.precision={precision} on CPU: .*; use 32 or 64$"
    with pytest.raises(ConfigError, match=expected):
        train(cfg, run_dir)
    assert not (run_dir / "statistics.json").exists()  # refused before any work


@pytest.mark.parametrize("gpu", [False, True])
def test_accelerator_auto_without_a_gpu_is_cpu(cfg_factory, monkeypatch, gpu: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cfg = cfg_factory("trainer.precision=16", "trainer.accelerator=auto")
    if gpu:
        assert trainer_kwargs(cfg.trainer)["precision"] == "16-mixed"
    else:
        with pytest.raises(ConfigError, match="on CPU"):
            trainer_kwargs(cfg.trainer)


@pytest.mark.parametrize(
    ("precision", "name"), [(32, "32-true"), (64, "64-true"), ("bf16", "bf16-mixed")]
)
def test_precisions_that_train_on_cpu(cfg_factory, precision, name: str) -> None:
    cfg = cfg_factory(f"trainer.precision={precision}", "trainer.accelerator=cpu")
    assert trainer_kwargs(cfg.trainer)["precision"] == name


def test_an_unknown_precision_is_a_one_line_error(cfg_factory) -> None:
    with pytest.raises(ConfigError, match=r"^trainer.precision=fp8: not a precision; use 32 or 64"):
        trainer_kwargs(cfg_factory("trainer.precision=fp8").trainer)


def test_the_cli_refuses_precision_16_on_cpu(tmp_path: Path) -> None:
    done = run_cli("trainer.precision=16", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "physicsml-train: error: trainer.precision=16 on CPU: CPU has no float16 autocast "
        "(Lightning would run bf16-mixed instead); use 32 or 64"
    ]
