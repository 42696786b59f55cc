"""physicsml-export --format aoti: the AOTInductor package loads without physicsml and
reproduces the model.

Compiling is slow (C++), so one small EGNN is compiled once, in float64, and one subprocess
that cannot import physicsml evaluates it on a molecule and a periodic cell.
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
from ase.io import read

from physicsml.cli.export import main
from physicsml.data.graph import atoms_to_batch
from physicsml.inference import load_module
from tests.structures import ASPIRIN, cu_triclinic
from tests.untrained import ELEMENTS, save_untrained, untrained_spec

UNKNOWN_ELEMENT = 79
TOLERANCE = 1e-10
"""Relative, in the Frobenius norm (float64)."""

LOADER = r"""
import sys
sys.modules["physicsml"] = None  # the package must load without physicsml
import torch

torch.set_num_threads(1)
inputs = torch.load(sys.argv[1], weights_only=True)
package = torch._inductor.aoti_load_package(inputs["path"])
results = {"metadata": package.get_metadata()["physicsml"]}
for key, args in inputs["structures"].items():
    results[key] = dict(package(*args))  # an fx immutable_dict, which torch.save pickles
positions, numbers, *rest = inputs["structures"]["aspirin"]
unknown = torch.full_like(numbers, inputs["unknown"])
results["unknown_element"] = dict(package(positions, unknown, *rest))
torch.save(results, sys.argv[2])
"""


def edge_inputs(atoms: Atoms) -> tuple[torch.Tensor, ...]:
    """The package's arguments (float64, contiguous as it requires), with the training
    pipeline's edges (whose ``edge_index`` is a transposed view)."""
    batch = atoms_to_batch([atoms], ELEMENTS, 4.0, dtype=torch.float64)
    args = (
        torch.from_numpy(atoms.positions.copy()),
        torch.from_numpy(atoms.numbers.astype(np.int64)),
        batch["edge_index"],
        batch["cell_shift"],
        torch.from_numpy(atoms.cell.array.copy()),
        torch.from_numpy(atoms.pbc.copy()),
    )
    return tuple(arg.contiguous() for arg in args)


@pytest.fixture(scope="module")
def structures() -> dict[str, Atoms]:
    return {
        "aspirin": read(ASPIRIN, "0"),
        "cu_triclinic": cu_triclinic(1)[0],
        "isolated_atom": Atoms("O", positions=[[0.1, 0.2, 0.3]]),  # no edges
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = untrained_spec("egnn", energy_scale=0.7, avg_num_neighbours=8.0)
    return save_untrained(spec, tmp_path_factory.mktemp("model") / "egnn.pt")


@pytest.fixture(scope="module")
def evaluated(
    tmp_path_factory: pytest.TempPathFactory, model: Path, structures: dict[str, Atoms]
) -> dict[str, Any]:
    """The model compiled with the CLI and evaluated where ``import physicsml`` fails."""
    directory = tmp_path_factory.mktemp("aoti")
    main([str(model), str(directory / "egnn.pt2"), "--format", "aoti", "--dtype", "float64"])
    inputs = {
        "path": str(directory / "egnn.pt2"),
        "structures": {key: edge_inputs(atoms) for key, atoms in structures.items()},
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


def assert_relative(actual: torch.Tensor, expected: torch.Tensor) -> None:
    error = float((actual - expected).norm())
    assert error <= TOLERANCE * float(expected.norm()), (error, expected.norm())


def test_package_matches_python_model(
    evaluated: dict[str, Any], model: Path, structures: dict[str, Atoms]
) -> None:
    """Energy, forces and stress equal the Python model's on a molecule, a triclinic cell and
    an atom without edges (sizes other than those the graph was traced with)."""
    module = load_module(model).double()
    for key, atoms in structures.items():
        batch = atoms_to_batch([atoms], ELEMENTS, 4.0, dtype=torch.float64)
        periodic = bool(atoms.pbc.any())
        expected = module(batch, forces=True, stress=periodic)
        computed = evaluated[key]
        assert computed["energy"].shape == () and computed["energy"].dtype == torch.float64
        assert_relative(computed["energy"], expected["energy"].detach()[0])
        if key == "isolated_atom":
            assert torch.equal(computed["forces"], torch.zeros(1, 3, dtype=torch.float64))
        else:
            assert_relative(computed["forces"], expected["forces"].detach())
            assert float(expected["forces"].abs().max()) > 1e-4  # the comparison can fail
        if periodic:
            assert_relative(computed["stress"], expected["stress"].detach()[0])
        else:
            assert torch.equal(computed["stress"], torch.zeros(3, 3, dtype=torch.float64))


def test_unknown_element_gives_nan(evaluated: dict[str, Any]) -> None:
    """A compiled graph cannot raise: an element the model lacks makes every output NaN."""
    for value in evaluated["unknown_element"].values():
        assert bool(value.isnan().all())


def test_metadata_travels_in_the_package(evaluated: dict[str, Any]) -> None:
    metadata = json.loads(evaluated["metadata"])
    assert metadata["entry_point"] == "forward_edges"
    assert metadata["elements"] == ELEMENTS
    assert metadata["cut_off"] == 4.0
    assert metadata["dtype"] == "float64"
    assert metadata["units"]["forces"] == "eV/Angstrom"


def test_model_with_graph_attributes_is_refused_in_one_line_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine cannot pass graph attributes: refused before anything is compiled."""
    spec = untrained_spec("egnn")
    spec = replace(spec, targets={**spec.targets, "graph_attrs_cols": ["temperature"]})
    model = save_untrained(spec, tmp_path / "egnn.pt")
    with pytest.raises(SystemExit) as exit_info:
        main([str(model), str(tmp_path / "egnn.pt2"), "--format", "aoti"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("physicsml-export: error: ") and error.count("\n") == 1
    assert "graph attributes" in error
    assert not (tmp_path / "egnn.pt2").exists()
