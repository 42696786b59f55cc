"""physicsml-export: exported potentials load without physicsml and reproduce the model.

Every architecture is exported in float32 and float64 once (module-scoped fixture, through the
CLI); one subprocess that cannot import physicsml loads all files and evaluates them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read

from physicsml.cli.export import main
from physicsml.data.graph import atoms_to_batch
from physicsml.data.neighbours import neighbour_list as matscipy_neighbour_list
from physicsml.export import exportable, neighbour_list
from physicsml.inference import load_module
from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import GraphSettings, ModelSpec, write_model_file
from tests.structures import ASPIRIN, cu111_slab, cu_triclinic
from tests.untrained import ELEMENTS, HYPERPARAMETERS, untrained_spec

ARCHITECTURES = list(HYPERPARAMETERS)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
STRAIN_COMPONENTS = [(0, 0), (1, 2)]
STRAIN_STEP = 1e-4
UNKNOWN_ELEMENT = 79

LOADER = r"""
import sys
sys.modules["physicsml"] = None  # an exported file must load without physicsml
import torch

torch.set_num_threads(1)
inputs = torch.load(sys.argv[1], weights_only=True)
results = {}
for name, path in inputs["files"].items():
    extra = {"metadata.json": ""}
    module = torch.jit.load(path, _extra_files=extra)
    entry = {"metadata": extra["metadata.json"], "cut_off": module.cut_off}
    for key, s in inputs["structures"].items():
        entry[key] = module(s["positions"], s["numbers"], s["cell"], s["pbc"])
        edge_index, cell_shift = inputs["edges"][str(module.cut_off)][key]
        entry[key + "/edges"] = module.forward_edges(
            s["positions"], s["numbers"], edge_index, cell_shift, s["cell"], s["pbc"]
        )
        entry[key + "/no_stress"] = module(
            s["positions"], s["numbers"], s["cell"], s["pbc"], compute_stress=False
        )
        entry[key + "/edges_no_stress"] = module.forward_edges(
            s["positions"], s["numbers"], edge_index, cell_shift, s["cell"], s["pbc"], False
        )
    if name.endswith("float64"):  # central differences of the energy under symmetric strain
        s = inputs["structures"]["cu_triclinic"]
        differences = []
        for a, b in inputs["strain_components"]:
            energies = []
            for sign in (1.0, -1.0):
                strain = torch.zeros(3, 3, dtype=torch.float64)
                strain[a, b] += 0.5 * sign * inputs["strain_step"]
                strain[b, a] += 0.5 * sign * inputs["strain_step"]
                deform = torch.eye(3, dtype=torch.float64) + strain
                out = module(s["positions"] @ deform, s["numbers"], s["cell"] @ deform, s["pbc"])
                energies.append(out["energy"])
            differences.append((energies[0] - energies[1]) / (2 * inputs["strain_step"]))
        entry["strain_derivative"] = torch.stack(differences)
    s = inputs["structures"]["aspirin"]
    try:
        unknown = torch.full_like(s["numbers"], inputs["unknown"])
        module(s["positions"], unknown, s["cell"], s["pbc"])
        entry["unknown_element"] = ""
    except Exception as error:  # a torch.jit.Error carrying the module's ValueError
        entry["unknown_element"] = str(error)
    results[name] = entry
torch.save(results, sys.argv[2])
"""


def spec(architecture: str) -> ModelSpec:
    """A small untrained potential for H, C, O and Cu (ANI needs its 5.2 Å AEV cut-off)."""
    return untrained_spec(architecture, energy_scale=0.7, avg_num_neighbours=8.0)


def structure_inputs(atoms: Atoms) -> dict[str, torch.Tensor]:
    """The arguments of ``forward`` (float64)."""
    return {
        "positions": torch.from_numpy(atoms.positions.copy()),
        "numbers": torch.from_numpy(atoms.numbers.astype(np.int64)),
        "cell": torch.from_numpy(atoms.cell.array.copy()),
        "pbc": torch.from_numpy(atoms.pbc.copy()),
    }


def matscipy_edges(atoms: Atoms, cut_off: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``edge_index`` and Cartesian ``cell_shift`` of the training pipeline's graph."""
    batch = atoms_to_batch([atoms], ELEMENTS, cut_off, dtype=torch.float64)
    return batch["edge_index"], batch["cell_shift"]


@pytest.fixture(scope="module")
def structures() -> dict[str, Atoms]:
    return {"aspirin": read(ASPIRIN, "0"), "cu_triclinic": cu_triclinic(1)[0]}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``model.pt`` of every architecture."""
    directory = tmp_path_factory.mktemp("models")
    paths = {}
    for architecture in ARCHITECTURES:
        torch.manual_seed(0)
        module = PotentialModule(spec(architecture))
        paths[architecture] = directory / f"{architecture}.pt"
        write_model_file(module.spec, module.state_dict(), paths[architecture])
    return paths


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    models: dict[str, Path],
    structures: dict[str, Atoms],
) -> dict[str, Any]:
    """Every architecture exported in both dtypes (with the CLI) and evaluated in a process
    where ``import physicsml`` fails."""
    directory = tmp_path_factory.mktemp("exported")
    files = {}
    for architecture, model in models.items():
        for dtype in DTYPES:
            out = directory / f"{architecture}-{dtype}.ts"
            main([str(model), str(out), "--dtype", dtype])
            files[f"{architecture}-{dtype}"] = str(out)
    inputs = {
        "files": files,
        "structures": {key: structure_inputs(atoms) for key, atoms in structures.items()},
        "edges": {
            str(cut_off): {key: matscipy_edges(atoms, cut_off) for key, atoms in structures.items()}
            for cut_off in {spec(architecture).graph.cut_off for architecture in ARCHITECTURES}
        },
        "strain_components": STRAIN_COMPONENTS,
        "strain_step": STRAIN_STEP,
        "unknown": UNKNOWN_ELEMENT,
    }
    torch.save(inputs, directory / "inputs.pt")
    subprocess.run(
        [sys.executable, "-c", LOADER, str(directory / "inputs.pt"), str(directory / "out.pt")],
        check=True,
        cwd=directory,  # not the repository: physicsml is not importable from the cwd either
    )
    results: dict[str, Any] = torch.load(directory / "out.pt", weights_only=True)
    return results


def reference(model: Path, atoms: Atoms, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The Python model's energy, forces and (periodic) stress, on one thread as in the
    subprocess (float32 matrix products round differently on two)."""
    module = load_module(model).to(dtype)
    batch = atoms_to_batch([atoms], ELEMENTS, module.spec.graph.cut_off, dtype=dtype)
    periodic = bool(atoms.pbc.any())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        preds = module(batch, forces=True, stress=periodic)
    finally:
        torch.set_num_threads(threads)
    return {
        key: value.detach() if key == "forces" else value.detach()[0]
        for key, value in preds.items()
    }


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    """``|actual - expected| <= tolerance * |expected|`` in the Frobenius norm."""
    error = float((actual.double() - expected.double()).norm())
    assert error <= tolerance * float(expected.double().norm()), (error, expected.norm())


TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
"""Relative, in the Frobenius norm. In float32 the module's own neighbour list (another edge
order than matscipy's) and TorchScript's optimised graph round differently from the Python
model: 3e-6 of the norm of the forces at most here. (EGNN without Bessel features has Cu
forces of 2e-4 eV/Å, which cancel so much that rounding alone moves them by 1.5e-5.)"""


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_exported_potential_matches_python_model(
    exported: dict[str, Any],
    models: dict[str, Path],
    structures: dict[str, Atoms],
    architecture: str,
    dtype: str,
) -> None:
    """Energy, forces and stress of the exported file equal the Python model's, on a molecule
    and a triclinic periodic cell, with the module's own neighbour list and with the edges
    given (``forward_edges``)."""
    result = exported[f"{architecture}-{dtype}"]
    for key, atoms in structures.items():
        expected = reference(models[architecture], atoms, DTYPES[dtype])
        for computed in (result[key], result[key + "/edges"]):
            assert computed["energy"].dtype == DTYPES[dtype]
            assert computed["energy"].shape == ()
            assert_relative(computed["energy"], expected["energy"], TOLERANCE[dtype])
            assert_relative(computed["forces"], expected["forces"], TOLERANCE[dtype])
            if atoms.pbc.any():
                assert_relative(computed["stress"], expected["stress"], TOLERANCE[dtype])
            else:
                assert torch.equal(computed["stress"], torch.zeros(3, 3, dtype=DTYPES[dtype]))
        assert float(expected["forces"].abs().max()) > 1e-4  # the comparison can fail


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_stress_can_be_skipped(
    exported: dict[str, Any], structures: dict[str, Atoms], architecture: str
) -> None:
    """``compute_stress=False`` (for MD at constant volume) gives the same energy and forces,
    and no ``stress`` key rather than a wrong one."""
    result = exported[f"{architecture}-float64"]
    for key in structures:
        for full, skipped in (
            (key, key + "/no_stress"),
            (key + "/edges", key + "/edges_no_stress"),
        ):
            assert "stress" not in result[skipped]
            assert_relative(result[skipped]["energy"], result[full]["energy"], 1e-12)
            assert_relative(result[skipped]["forces"], result[full]["forces"], 1e-12)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_stress_is_the_strain_derivative_of_the_exported_energy(
    exported: dict[str, Any], structures: dict[str, Atoms], architecture: str
) -> None:
    """sigma_ab = (1/V) dE/d(eps_ab) by central differences of the exported float64 energy."""
    result = exported[f"{architecture}-float64"]
    volume = abs(np.linalg.det(structures["cu_triclinic"].cell.array))
    stress = result["cu_triclinic"]["stress"]
    numeric = result["strain_derivative"] / volume
    analytic = torch.stack([stress[a, b] for a, b in STRAIN_COMPONENTS])
    torch.testing.assert_close(numeric, analytic, rtol=1e-5, atol=1e-5 * float(stress.abs().max()))
    assert torch.allclose(stress, stress.T, rtol=0.0, atol=1e-12)


def test_unknown_element_is_a_clear_error(exported: dict[str, Any]) -> None:
    for architecture in ARCHITECTURES:
        message = exported[f"{architecture}-float32"]["unknown_element"]
        assert f"atomic numbers [{UNKNOWN_ELEMENT}] are not in the model's element list" in message
        assert str(ELEMENTS) in message


def test_metadata_names_cut_off_elements_units_and_dtype(exported: dict[str, Any]) -> None:
    for architecture in ARCHITECTURES:
        for dtype in DTYPES:
            result = exported[f"{architecture}-{dtype}"]
            metadata = json.loads(result["metadata"])
            cut_off = spec(architecture).graph.cut_off
            assert result["cut_off"] == metadata["cut_off"] == cut_off
            assert metadata["elements"] == ELEMENTS
            assert metadata["dtype"] == dtype
            assert metadata["units"]["energy"] == "eV"


@pytest.mark.parametrize(
    "atoms",
    [
        pytest.param(read(ASPIRIN, "0"), id="molecule"),
        pytest.param(cu_triclinic(1)[0], id="triclinic"),
        pytest.param(cu111_slab(1)[0], id="slab"),
        pytest.param(bulk("Cu", "fcc", a=3.6), id="one-atom-cell"),
        pytest.param(bulk("Cu", "bcc", a=2.9).repeat((1, 2, 3)), id="bcc-supercell"),
    ],
)
@pytest.mark.parametrize("self_interaction", [False, True])
def test_neighbour_list_gives_matscipy_edges(atoms: Atoms, self_interaction: bool) -> None:
    """The same (centre, neighbour, shift) triples as the training pipeline's matscipy list,
    also for cells smaller than the cut-off and for atoms outside the cell."""
    if atoms.pbc.all() and len(atoms) > 1:  # shift some atoms by whole cell vectors
        atoms = atoms.copy()
        atoms.positions[::2] += atoms.cell.array.T @ np.array([2.0, -1.0, 3.0])
    cut_off = 4.0
    i, j, shifts = matscipy_neighbour_list(
        atoms.positions, atoms.cell.array, atoms.pbc, cut_off, self_interaction
    )
    edge_index, computed_shifts = torch.jit.script(neighbour_list)(
        torch.from_numpy(atoms.positions),
        torch.from_numpy(atoms.cell.array),
        torch.from_numpy(atoms.pbc),
        cut_off,
        self_interaction,
    )
    expected = sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist()), strict=True))
    computed = sorted(
        zip(
            edge_index[0].tolist(),
            edge_index[1].tolist(),
            map(tuple, computed_shifts.tolist()),
            strict=True,
        )
    )
    assert len(expected) > len(atoms)
    assert computed == expected


def test_graph_overrides_and_self_interaction_are_honoured(tmp_path: Path) -> None:
    """A model trained with ``pbc`` overridden to none and self-interaction edges treats a
    periodic input as the training pipeline does."""
    torch.manual_seed(0)
    settings = GraphSettings(cut_off=4.0, pbc=[False, False, False], self_interaction=True)
    module = PotentialModule(replace(spec("egnn"), graph=settings)).double().eval()
    scripted = torch.jit.script(exportable(module, torch.float64))
    atoms = cu_triclinic(1)[0]
    batch = atoms_to_batch(
        [atoms], ELEMENTS, 4.0, dtype=torch.float64, pbc=settings.pbc, self_interaction=True
    )
    expected = module(batch, forces=True)
    out = scripted(*structure_inputs(atoms).values())
    assert_relative(out["energy"], expected["energy"][0], 1e-10)
    assert_relative(out["forces"], expected["forces"], 1e-10)
    assert torch.equal(out["stress"], torch.zeros(3, 3, dtype=torch.float64))


def test_bad_model_path_is_one_line_and_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), str(tmp_path / "model.ts")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("physicsml-export: error: ") and error.count("\n") == 1
    assert "missing" in error
    assert not (tmp_path / "model.ts").exists()
