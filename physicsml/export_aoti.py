"""Trained potentials as AOTInductor packages (``.pt2``) that load without physicsml.

The package holds one compiled function, the edge-list entry point (the ``forward_edges``
convention of :class:`~physicsml.export.ExportedPotential`) with the forces and the stress
computed inside it, for any number of atoms and edges::

    m = torch._inductor.aoti_load_package("model.pt2")
    out = m(positions, atomic_numbers, edge_index, cell_shift, cell, pbc)
    out["energy"], out["forces"], out["stress"]  # [] eV, [n,3] eV/Å, [3,3] eV/Å³
    json.loads(m.get_metadata()["physicsml"])    # cut-off, elements, dtype, units, inputs

The arguments must be contiguous (``.contiguous()``), floats in the package's dtype: the
compiled code assumes the traced layout without checking it (a transposed ``edge_index``
gives wrong numbers, not an error).

``torch.export`` cannot capture ``torch.autograd.grad``, so the energy and its gradients are
first traced together into one ATen graph (``make_fx``, symbolic sizes), which is then
exported with dynamic numbers of atoms and edges and compiled by AOTInductor (C++, the system
compiler). The graph has no data-dependent branch: the stress is always computed (zeros for a
structure periodic in no direction, as the TorchScript export gives), and an element the model
was not trained on makes every output NaN instead of raising.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

from physicsml.export import (
    ExportedPotential,
    check_exportable,
    metadata,
    neighbour_list,
)
from physicsml.lightning.module import PotentialModule
from physicsml.models.mace import symmetric_contraction
from physicsml.models.strain import apply_strain, stress_from_gradient

METADATA_KEY = "physicsml"
"""The key of the package's metadata (``get_metadata()``) that holds the JSON metadata."""
ENTRY_POINT = "forward_edges"
EXAMPLE_ATOMS = 7
"""Atoms of the structure the graph is traced with (any size > 2 distinct from its edges)."""


class EdgePotential(torch.nn.Module):
    """Energy, forces and stress of one structure given its edges, without data-dependent
    control flow, so that ``make_fx`` captures the gradients in one graph.

    ``forward(positions [n,3], atomic_numbers [n] int64, edge_index [2,E] int64,
    cell_shift [E,3] Å, cell [3,3], pbc [3] bool)`` (floats in the potential's dtype) returns
    ``energy`` [], ``forces`` [n,3] and ``stress`` [3,3] as ``ExportedPotential.forward_edges``
    does, except that an unknown element makes them NaN rather than an error.
    """

    def __init__(self, potential: ExportedPotential) -> None:
        super().__init__()
        self.potential = potential

    def forward(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        edge_index: Tensor,
        cell_shift: Tensor,
        cell: Tensor,
        pbc: Tensor,
    ) -> dict[str, Tensor]:
        """Energy, forces and stress (see the class docstring)."""
        p = self.potential
        cell, pbc = p._cell_and_pbc(cell, pbc)
        largest = p.species_table.shape[0] - 1
        species = p.species_table[atomic_numbers.clamp(0, largest)]
        unknown = ((atomic_numbers < 0) | (atomic_numbers > largest) | (species < 0)).any()
        species = species.clamp(min=0)
        coordinates = positions.to(p.dtype).requires_grad_(True)
        node_graph = torch.zeros_like(atomic_numbers)
        strain, strained, strained_shift = apply_strain(
            coordinates, cell_shift.to(p.dtype), node_graph, torch.zeros_like(edge_index[0]), 1
        )
        batch = {
            "coordinates": strained,
            "atomic_numbers": atomic_numbers,
            "species": species,
            "node_attrs": torch.nn.functional.one_hot(species, p.num_elements).to(p.dtype),
            "edge_index": edge_index,
            "cell_shift": strained_shift,
            "batch": node_graph,
            "ptr": torch.zeros(2, dtype=torch.int64, device=positions.device),  # 1 graph
            "num_graphs": torch.ones((), dtype=torch.int64, device=positions.device),
            "cell": cell.unsqueeze(0),
            "pbc": pbc.unsqueeze(0),
        }
        node_energy = p.model(batch)["node_energy"]
        # PotentialModule's energy of one graph, as a sum rather than a scatter (Inductor's C++
        # code generation fails on a scatter_add into one element)
        energy = (p.energy_scale * node_energy + p.reference_energies[species]).sum()
        gradients = torch.autograd.grad([energy], [coordinates, strain])
        position_gradient, strain_gradient = gradients
        stress = stress_from_gradient(strain_gradient, periodic_volume(cell, pbc))[0]
        nan = torch.full((), float("nan"), dtype=p.dtype, device=positions.device)
        return {
            "energy": torch.where(unknown, nan, energy),
            "forces": torch.where(unknown, nan, -position_gradient),
            "stress": torch.where(unknown, nan, stress),
        }


def periodic_volume(cell: Tensor, pbc: Tensor) -> Tensor:
    """``[1]``: ``cell_volumes`` of one structure, as a triple product (AOTInductor has no C
    shim for ``torch.linalg.det``: it would run it through its generic proxy executor)."""
    volume = torch.dot(cell[0], torch.linalg.cross(cell[1], cell[2])).abs().unsqueeze(0)
    return torch.where(pbc.any() & (volume > 1e-9), volume, torch.zeros_like(volume))


class ElementBlocks:
    """MACE's symmetric-contraction layout without data-dependent sizes: one block per
    element, each as wide as the structure (every node in every block; a node's output is
    taken from its element's block). ``NodeBlocks`` sizes its blocks from the element counts,
    which a compiled graph cannot; this costs one contraction per element instead."""

    def __init__(self, species: Tensor, num_elements: int, max_blocks_per_element: int = 4):
        n = species.shape[0]
        nodes = torch.arange(n, device=species.device)
        self.width = n
        self.element = torch.arange(num_elements, device=species.device)
        self.source = nodes.repeat(num_elements)
        self.slot = species * n + nodes


@contextlib.contextmanager
def element_blocks() -> Iterator[None]:
    """MACE's contraction uses :class:`ElementBlocks` while the graph is traced."""
    node_blocks = symmetric_contraction.NodeBlocks
    symmetric_contraction.NodeBlocks = ElementBlocks  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        symmetric_contraction.NodeBlocks = node_blocks  # type: ignore[misc]


def example_inputs(potential: ExportedPotential) -> tuple[Tensor, ...]:
    """A small cluster of the model's elements, all atoms within the cut-off of each other,
    to trace with: its sizes (atoms, edges) differ, so neither is taken for a constant."""
    generator = torch.Generator().manual_seed(0)
    unit = torch.rand((EXAMPLE_ATOMS, 3), generator=generator, dtype=torch.float64)
    positions = (0.2 + unit) * (potential.cut_off / 3)
    cell = torch.zeros((3, 3), dtype=torch.float64)
    pbc = torch.zeros(3, dtype=torch.bool)
    edge_index, shifts = neighbour_list(
        positions, cell, pbc, potential.cut_off, potential.self_interaction
    )
    elements = torch.tensor(potential.elements, dtype=torch.int64)
    numbers = elements[torch.arange(EXAMPLE_ATOMS) % len(elements)]
    dtype = potential.dtype
    return (
        positions.to(dtype),
        numbers,
        edge_index,
        shifts.to(dtype),
        cell.to(dtype),
        pbc,
    )


def package_metadata(potential: ExportedPotential) -> dict[str, Any]:
    """The TorchScript export's metadata, with the package's calling convention."""
    info = metadata(potential)
    info["format"] = "physicsml-export-aoti"
    info["entry_point"] = ENTRY_POINT
    info["inputs_contiguous"] = True  # the compiled code ignores strides
    info["inputs"] = {
        "positions": f"[n, 3] {potential.dtype_name}, Angstrom",
        "atomic_numbers": "[n] int64",
        "edge_index": "[2, E] int64: centre, neighbour; both directions of every pair",
        "cell_shift": f"[E, 3] {potential.dtype_name}, Angstrom: r_ij = x_j - x_i + cell_shift",
        "cell": f"[3, 3] {potential.dtype_name}, Angstrom (zeros: molecule)",
        "pbc": "[3] bool",
    }
    info["outputs"] = {
        "energy": "[]",
        "forces": "[n, 3]",
        "stress": "[3, 3], zeros if no pbc",
    }
    info["unknown_element"] = "all outputs NaN"
    return info


def compile_package(potential: ExportedPotential, out: Path, info: dict[str, Any]) -> str:
    """Trace ``potential``'s edge entry point with its gradients, export it with dynamic
    atoms and edges, compile it with AOTInductor and write the package ``out``."""
    entry = EdgePotential(potential).eval()
    inputs = example_inputs(potential)
    with torch.enable_grad(), element_blocks():
        graph = make_fx(entry, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    atoms = torch.export.Dim("atoms", min=1)
    edges = torch.export.Dim("edges", min=0)
    dynamic_shapes = ({0: atoms}, {0: atoms}, {1: edges}, {0: edges}, None, None)
    program = torch.export.export(graph, inputs, dynamic_shapes=dynamic_shapes, strict=False)
    return torch._inductor.aoti_compile_and_package(
        program,
        package_path=str(out),
        inductor_configs={"aot_inductor.metadata": {METADATA_KEY: json.dumps(info)}},
    )


def export_aoti(module: PotentialModule, out: str | Path, dtype: torch.dtype) -> dict[str, Any]:
    """Compile ``module`` (left unchanged) in ``dtype`` to the AOTInductor package ``out``;
    returns the metadata stored in it."""
    check_exportable(module)
    copied = copy.deepcopy(module).to(dtype).eval().requires_grad_(False)
    potential = ExportedPotential(copied, dtype).eval()
    info = package_metadata(potential)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compile_package(potential, out, info)
    return info
