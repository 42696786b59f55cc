"""Parameter-efficient fine-tuning (``peft``): LoRA, SSF and adapters start as the base model,
train only their own parameters, keep the physics, merge back exactly, and a ``peft=lora``
run writes a plain ``model.pt``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read
from e3nn import o3
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from physicsml.api import compose_config
from physicsml.calculators.ase import PhysicsMLCalculator
from physicsml.config.errors import ConfigError
from physicsml.data.graph import atoms_to_batch
from physicsml.data.ingest import ingest
from physicsml.inference import load_module, predict_atoms
from physicsml.lightning.peft import Wrapper, merge, peft_settings, wrap
from physicsml.models.egnn import EGNN
from physicsml.models.mace import MACE
from physicsml.models.utils import scatter_sum
from physicsml.train import train
from tests.models.physics import ModelPhysicsTests, random_rotation
from tests.models.test_mace import SMALL
from tests.structures import ASPIRIN, ETHANOL
from tests.test_configs import run_train_cli
from tests.test_sweeps import TINY

METHODS = ("lora", "ssf", "adapters")
ELEMENTS = ModelPhysicsTests.elements


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mace() -> nn.Module:
    return MACE(num_elements=len(ELEMENTS), cut_off=4.0, avg_num_neighbours=10.0, **SMALL)


def egnn() -> nn.Module:
    return EGNN(num_elements=len(ELEMENTS), cut_off=4.0, avg_num_neighbours=10.0, c_hidden=16)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"mace": mace, "egnn": egnn}


@pytest.fixture(scope="module")
def molecules() -> list:
    return [*read(ETHANOL, "0:40:20"), *read(ASPIRIN, "0:1")]


def model_of(architecture: str) -> nn.Module:
    torch.manual_seed(0)
    return ARCHITECTURES[architecture]().double()


def energy_forces(model: nn.Module, molecules: list) -> tuple[torch.Tensor, torch.Tensor]:
    return ModelPhysicsTests().energy_forces(model, molecules)


def randomise(model: nn.Module, std: float = 0.3) -> None:
    """Move every trainable (wrapper) parameter away from its initial value."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(std * torch.randn_like(parameter))


def base_name(name: str) -> str:
    """The plain model's name of a wrapped model's base parameter."""
    return name.replace(".base.", ".")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("architecture", ["mace", "egnn"])
def test_starts_as_base_trains_wrappers_only_and_merges_exactly(
    architecture: str, method: str, molecules: list
) -> None:
    model = model_of(architecture)
    plain_state = {k: v.clone() for k, v in model.state_dict().items()}
    energy, forces = energy_forces(model, molecules)

    wrapped = wrap(model, method, rank=2, adapter_dim=4)
    assert wrapped and all(isinstance(model.get_submodule(n), Wrapper) for n in wrapped)
    start_energy, start_forces = energy_forces(model, molecules)
    torch.testing.assert_close(start_energy, energy, rtol=0, atol=0)
    torch.testing.assert_close(start_forces, forces, rtol=0, atol=0)

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(2)
    target_energy = torch.randn(energy.shape, generator=generator, dtype=torch.float64)
    target_forces = torch.randn(forces.shape, generator=generator, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(3):
        batch_energy, batch_forces = energy_forces_with_graph(model, molecules)
        loss = (batch_energy - target_energy).pow(2).mean()
        loss = loss + (batch_forces - target_forces).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = dict(model.named_parameters())
    changed = {name for name in names if not torch.equal(after[name], before[name])}
    trainable = {name for name in names if after[name].requires_grad}
    assert trainable == {n for n in names if any(n.startswith(w + ".") for w in wrapped)} - {
        n for n in names if ".base." in n
    }
    assert changed and changed <= trainable
    assert len(changed) >= len(trainable) // 2
    for name, value in model.state_dict().items():  # the base weights and buffers stay
        if ".base." in name or base_name(name) in plain_state:
            assert torch.equal(value, plain_state[base_name(name)]), name

    trained_energy, trained_forces = energy_forces(model, molecules)
    assert (trained_energy - energy).abs().max() > 1e-6
    assert merge(model) == wrapped
    assert not any(isinstance(m, Wrapper) for m in model.modules())
    assert model.state_dict().keys() == plain_state.keys()
    merged_energy, merged_forces = energy_forces(model, molecules)
    torch.testing.assert_close(merged_energy, trained_energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(merged_forces, trained_forces, rtol=0, atol=1e-10)
    fresh = model_of(architecture)  # the merged weights are a plain model's
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(energy_forces(fresh, molecules)[0], trained_energy, rtol=0, atol=0)


def energy_forces_with_graph(
    model: nn.Module, molecules: list
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies and forces that can be differentiated by the parameters."""
    batch = atoms_to_batch(molecules, ELEMENTS, 4.0, dtype=torch.float64)
    batch["coordinates"].requires_grad_(True)
    energy = scatter_sum(model(batch)["node_energy"], batch["batch"], len(molecules))
    (grad,) = torch.autograd.grad(energy.sum(), batch["coordinates"], create_graph=True)
    return energy, -grad


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("architecture", ["mace", "egnn"])
def test_wrapped_model_stays_invariant_and_equivariant(
    architecture: str, method: str, molecules: list
) -> None:
    """After its wrappers' parameters are randomised (not only at initialisation), the
    energies are invariant and the forces equivariant under rotations, inversion and
    translations."""
    model = model_of(architecture)
    wrap(model, method, rank=2, adapter_dim=4)
    randomise(model)
    energy, forces = energy_forces(model, molecules)
    rng = np.random.default_rng(3)
    rotation = random_rotation(rng)
    for matrix in (rotation, -rotation):  # a proper rotation, and one with inversion
        moved = []
        for atoms in molecules:
            atoms = atoms.copy()
            atoms.positions = atoms.positions @ matrix.T + rng.normal(size=3)
            moved.append(atoms)
        moved_energy, moved_forces = energy_forces(model, moved)
        torch.testing.assert_close(moved_energy, energy, rtol=1e-10, atol=1e-9)
        expected = forces @ torch.from_numpy(matrix.T)
        torch.testing.assert_close(moved_forces, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_e3nn_linear_wrappers_keep_equivariance(method: str) -> None:
    """On e3nn's ``o3.Linear`` (with scalar biases) every wrapper keeps the layer equivariant,
    SSF shifts the scalar (0e) channels only, and merging is exact."""
    torch.manual_seed(0)
    irreps_in, irreps_out = o3.Irreps("4x0e + 2x1o + 1x2e"), o3.Irreps("3x0e + 2x1o + 2x2e")
    layers = nn.Sequential(o3.Linear(irreps_in, irreps_out, biases=True)).double()
    wrap(layers, method, rank=2, adapter_dim=2)
    randomise(layers)
    if method == "ssf":
        shifts = [p for n, p in layers.named_parameters() if "shift" in n]
        assert [p.numel() for p in shifts] == [3]  # the 3x0e outputs, nothing else
    x = torch.randn(5, irreps_in.dim, dtype=torch.float64)
    rotation = -torch.from_numpy(random_rotation(np.random.default_rng(4)))  # with inversion
    d_in, d_out = irreps_in.D_from_matrix(rotation), irreps_out.D_from_matrix(rotation)
    y = layers(x)
    assert y[:, 3:].abs().max() > 1e-3  # the non-scalar outputs are not trivially zero
    torch.testing.assert_close(layers(x @ d_in.T), y @ d_out.T, rtol=1e-10, atol=1e-12)
    merge(layers)
    assert isinstance(layers[0], o3.Linear)
    torch.testing.assert_close(layers(x), y, rtol=0, atol=1e-12)


def test_bad_options_name_the_key(tmp_path: Path) -> None:
    def settings(*overrides: str) -> object:
        cfg = compose_config(["module.init_from=somewhere", *overrides], run_dir=tmp_path)
        return peft_settings(cfg)

    try:
        assert settings() is None  # peft: none by default
        assert settings("peft=lora", "peft.rank=2")["rank"] == 2  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"^peft.rank: expected a positive integer, got 0"):
            settings("peft=lora", "peft.rank=0")
        with pytest.raises(ConfigError, match=r"^peft.method: unknown method 'dora'"):
            settings("peft.method=dora")
        with pytest.raises(ConfigError, match=r"^peft.adapter_dim: .* got -1"):
            settings("peft=adapters", "peft.adapter_dim=-1")
        cfg = compose_config(["peft=ssf"], run_dir=tmp_path)
        with pytest.raises(ConfigError, match=r"peft.method=ssf adapts a trained model"):
            peft_settings(cfg)
        with pytest.raises(ConfigError, match=r"^peft.layers: \['nothing\*'\] match no linear"):
            wrap(egnn(), "lora", layers=["nothing*"])
    finally:
        GlobalHydra.instance().clear()


def test_bad_rank_is_one_cli_line(tmp_path: Path) -> None:
    result = run_train_cli("peft=lora", "peft.rank=0", "module.init_from=x", run_dir=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("physicsml-train: error: peft.rank: expected a positive integer, got 0")
    )


def test_lora_run_saves_a_plain_model_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``peft=lora module.init_from=RUN``: checkpoints keep the wrappers (and load merged),
    ``model.pt`` is a plain EGNN that the calculator loads, and a resume continues."""
    store = tmp_path / "ethanol.zarr"
    ingest(ETHANOL, store, index=":400")
    base = [f"datamodule.dataset={store}", f"datamodule.cache_dir={tmp_path / 'cache'}", *TINY]
    try:
        source = tmp_path / "source"
        train(compose_config(base, run_dir=source), source)
        run = tmp_path / "lora"
        overrides = [*base, "peft=lora", "peft.rank=2", f"module.init_from={source}"]
        train(compose_config([*overrides, "trainer.max_epochs=1"], run_dir=run), run)
        saved = torch.load(run / "model.pt", weights_only=True)
        source_weights = torch.load(source / "model.pt", weights_only=True)["state_dict"]
        assert saved["state_dict"].keys() == source_weights.keys()  # no wrapper keys
        assert "peft" not in saved["physicsml_model"]["training"]
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["physicsml_model"]["training"]["peft"]["rank"] == 2
        wrapped = {n.split(".lora_b.")[0] for n in checkpoint["state_dict"] if ".lora_b." in n}
        assert len(wrapped) > 5  # the wrappers are in the checkpoint, for resuming
        changed = {
            name
            for name, value in saved["state_dict"].items()
            if not torch.equal(value, source_weights[name])
        }
        # LoRA trains the wrapped layers' weights (not their biases); E0 are refit
        assert changed - {"reference_energies"} == {f"{layer}.weight" for layer in wrapped}
        frames = list(read(ETHANOL, "400:403"))
        from_checkpoint = predict_atoms(load_module(run / "checkpoints" / "best.ckpt"), frames)
        calculator = PhysicsMLCalculator(run)
        for k, atoms in enumerate(frames):
            atoms.calc = calculator
            energy = atoms.get_potential_energy()
            assert energy == pytest.approx(float(from_checkpoint["energy"][k]), abs=1e-4)

        with caplog.at_level(logging.INFO, logger="physicsml.train"):
            metrics = train(compose_config([*overrides, "trainer.max_epochs=2"], run_dir=run), run)
        assert "resuming from" in caplog.text and metrics["epoch"] == 2
        plain = compose_config(
            [*base, f"module.init_from={source}", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"],
            run_dir=tmp_path / "plain",
        )
        with pytest.raises(ConfigError, match=r"trained with peft=lora peft.rank=2 .*peft=none"):
            train(plain, tmp_path / "plain")

        # a PEFT checkpoint as init_from: its merged weights
        last = run / "checkpoints" / "last.ckpt"
        again = tmp_path / "again"
        keep = ["trainer.max_epochs=0", "module.init_reference_energies=keep"]
        train(compose_config([*base, f"module.init_from={last}", *keep], run_dir=again), again)
        merged = load_module(last).state_dict()
        started = torch.load(again / "model.pt", weights_only=True)["state_dict"]
        assert started.keys() == merged.keys()
        for name, value in started.items():
            torch.testing.assert_close(value, merged[name], rtol=0, atol=0, msg=name)
        resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert (
            resumed["epoch"] == 1
            and resumed["state_dict"].keys() == checkpoint["state_dict"].keys()
        )
    finally:
        GlobalHydra.instance().clear()
