"""Trained potentials as self-contained TorchScript files that load without physicsml.

:func:`export_model` writes one file that ``torch.jit.load`` reads in any process with torch
(C++ included). The module computes its own neighbour list (all pairs within the model's
cut-off, across periodic images), the model's energy, the forces by autograd and, for
periodic structures, the stress as the strain derivative of the energy::

    m = torch.jit.load("model.ts")
    out = m(positions, atomic_numbers, cell, pbc)  # energy [] eV, forces [n,3], stress [3,3]

``m.forward_edges(positions, atomic_numbers, edge_index, cell_shift, cell, pbc)`` takes the
edges instead, for engines that bring their own neighbours (see :class:`ExportedPotential`).
The cut-off, elements, units and dtype are attributes of the module and, as JSON, the
``metadata.json`` extra file.
"""

import copy
import json
from pathlib import Path
from typing import Any, cast

import torch
from e3nn.util.jit import compile as e3nn_compile
from torch import Tensor

from physicsml.inference import load_module
from physicsml.lightning.module import PotentialModule
from physicsml.models.strain import apply_strain, cell_volumes, stress_from_gradient
from physicsml.models.utils import scatter_sum
from physicsml.saved_model import VERSION

EXPORT_FORMAT_VERSION = 1
"""Bump when the exported module's calling convention or metadata change."""

FORMATS = ("torchscript", "aoti")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
METADATA_FILE = "metadata.json"
MAX_ATOMIC_NUMBER = 118


class ExportError(ValueError):
    """A model that cannot be exported as asked (the CLI prints it on one line)."""


def neighbour_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, cut_off: float, self_interaction: bool
) -> tuple[Tensor, Tensor]:
    """Edges within ``cut_off`` of one structure, as ``physicsml.data.neighbours`` gives them.

    Returns ``edge_index [2, E]`` (centre, neighbour; sorted by centre) and integer lattice
    ``shifts [E, 3]`` (int64) with ``r_ij = x_j - x_i + shifts @ cell``; both directions of
    every pair, no ``i -> i`` edge at zero shift (unless ``self_interaction``: one per atom).
    Positions need not lie inside the cell. Periodic images are searched as far as the cut-off
    reaches across the cell's plane spacings, so small and triclinic cells get every image.
    """
    device = positions.device
    pos = positions.detach().to(torch.float64)
    n = pos.shape[0]
    # Non-periodic cell vectors are replaced by axis vectors: only the periodic ones shift.
    eye = torch.eye(3, dtype=torch.float64, device=device)
    spanning = torch.where(pbc[:, None], cell.detach().to(torch.float64), eye)
    if bool(torch.linalg.det(spanning).abs() < 1e-9):
        raise ValueError(
            "the cell is singular in its periodic directions: a periodic structure needs "
            "linearly independent cell vectors"
        )
    reciprocal = torch.linalg.inv(spanning)  # columns: b_k with a_i . b_k = delta_ik
    no_shift = torch.zeros(3, dtype=torch.float64, device=device)
    wraps = torch.where(pbc, torch.floor(pos @ reciprocal), no_shift)  # [n, 3] cells moved
    wrapped = pos - wraps @ spanning
    # A pair within the cut-off is less than cut_off * |b_k| cells apart along a_k.
    reach = torch.where(pbc, torch.ceil(cut_off * torch.linalg.norm(reciprocal, dim=0)), no_shift)
    reach_list: list[int] = reach.to(torch.int64).tolist()
    images = torch.cartesian_prod(
        torch.arange(-reach_list[0], reach_list[0] + 1, device=device),
        torch.arange(-reach_list[1], reach_list[1] + 1, device=device),
        torch.arange(-reach_list[2], reach_list[2] + 1, device=device),
    ).reshape(-1, 3)
    not_self = ~torch.eye(n, dtype=torch.bool, device=device)
    centres: list[Tensor] = []
    neighbours: list[Tensor] = []
    image_shifts: list[Tensor] = []
    for image in images:  # one [n, n] distance table per periodic image
        moved = wrapped + image.to(torch.float64) @ spanning
        # |x_j + shift - x_i| for centre i (rows) and neighbour j (columns), without the
        # matmul shortcut that would round distances near the cut-off differently
        distances = torch.cdist(wrapped, moved, compute_mode="donot_use_mm_for_euclid_dist")
        inside = distances < cut_off
        if not bool(image.abs().sum() > 0):
            inside = inside & not_self
        pair = torch.nonzero(inside)
        centres.append(pair[:, 0])
        neighbours.append(pair[:, 1])
        image_shifts.append(image.expand(pair.shape[0], 3))
    i = torch.cat(centres)
    j = torch.cat(neighbours)
    wrap_index = wraps.to(torch.int64)
    shifts = torch.cat(image_shifts) - wrap_index[j] + wrap_index[i]
    if self_interaction:
        loops = torch.arange(n, device=device)
        i = torch.cat([i, loops])
        j = torch.cat([j, loops])
        shifts = torch.cat([shifts, torch.zeros((n, 3), dtype=torch.int64, device=device)])
    order = torch.argsort(i, stable=True)
    return torch.stack([i[order], j[order]]), shifts[order]


class ExportedPotential(torch.nn.Module):
    """A trained potential with its own neighbour list, ready for ``torch.jit.script``.

    ``forward(positions [n,3] Å, atomic_numbers [n] int64, cell [3,3] Å, pbc [3] bool,
    compute_stress: bool = True)`` returns ``energy`` ([], eV), ``forces`` ([n,3], eV/Å,
    -dE/dx) and ``stress`` ([3,3], eV/Å³, (1/V) dE/d(strain), ASE's sign; zeros for a
    structure periodic in no direction). With ``compute_stress=False`` the strain derivative
    is skipped (MD at constant volume does not need it) and the dict has no ``stress`` key.
    The model's ``pbc``/``cell`` overrides (from training) replace the arguments.

    ``forward_edges(positions, atomic_numbers, edge_index [2,E], cell_shift [E,3], cell, pbc)``
    takes the edges instead: ``edge_index[0]`` the centre, ``[1]`` the neighbour, both
    directions of every pair within ``cut_off``; ``cell_shift`` the Cartesian shift in Å
    (``r_ij = x_j - x_i + cell_shift``, zeros when the engine passes image atoms). It returns
    the same keys (the stress from the strain of ``cell_shift`` and the positions).
    Outputs are detached, in the module's ``dtype``; float inputs of any precision are cast.
    """

    reference_energies: Tensor
    energy_scale: Tensor
    species_table: Tensor
    pbc_override: Tensor
    cell_override: Tensor

    def __init__(self, module: PotentialModule, dtype: torch.dtype) -> None:
        super().__init__()
        graph = module.spec.graph
        elements = [int(z) for z in module.spec.elements]
        self.model = module.model
        self.register_buffer("reference_energies", cast(Tensor, module.reference_energies))
        self.register_buffer("energy_scale", cast(Tensor, module.energy_scale))
        species_table = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.int64)
        species_table[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("species_table", species_table)
        self.register_buffer(
            "pbc_override", torch.tensor(graph.pbc if graph.pbc is not None else [False] * 3)
        )
        self.register_buffer(
            "cell_override",
            torch.tensor(graph.cell if graph.cell is not None else [[0.0] * 3] * 3, dtype=dtype),
        )
        self.has_pbc_override = graph.pbc is not None
        self.has_cell_override = graph.cell is not None
        self.self_interaction = bool(graph.self_interaction)
        self.cut_off = float(graph.cut_off)
        self.elements = elements
        self.num_elements = int(module.spec.num_elements)
        self.dtype = dtype
        self.dtype_name = str(dtype).removeprefix("torch.")
        self.energy_unit = "eV"
        self.length_unit = "Angstrom"
        self.format_version = EXPORT_FORMAT_VERSION

    def forward(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        cell: Tensor,
        pbc: Tensor,
        compute_stress: bool = True,
    ) -> dict[str, Tensor]:
        """Energy, forces and stress of one structure (see the class docstring)."""
        cell, pbc = self._cell_and_pbc(cell, pbc)
        edge_index, shifts = neighbour_list(
            positions, cell, pbc, self.cut_off, self.self_interaction
        )
        cell_shift = (shifts.to(torch.float64) @ cell.to(torch.float64)).to(self.dtype)
        return self._evaluate(
            positions, atomic_numbers, edge_index, cell_shift, cell, pbc, compute_stress
        )

    @torch.jit.export
    def forward_edges(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        edge_index: Tensor,
        cell_shift: Tensor,
        cell: Tensor,
        pbc: Tensor,
        compute_stress: bool = True,
    ) -> dict[str, Tensor]:
        """Energy, forces and stress given the edges (see the class docstring)."""
        cell, pbc = self._cell_and_pbc(cell, pbc)
        return self._evaluate(
            positions,
            atomic_numbers,
            edge_index.to(torch.int64),
            cell_shift,
            cell,
            pbc,
            compute_stress,
        )

    def _cell_and_pbc(self, cell: Tensor, pbc: Tensor) -> tuple[Tensor, Tensor]:
        """The structure's cell and pbc, or the model's overrides."""
        if self.has_cell_override:
            cell = self.cell_override
        if self.has_pbc_override:
            pbc = self.pbc_override
        return cell.to(self.dtype).reshape(3, 3), pbc.to(torch.bool).reshape(3)

    def _species(self, atomic_numbers: Tensor) -> Tensor:
        """Element indices of ``atomic_numbers``; an element the model lacks is an error."""
        numbers = atomic_numbers.to(torch.int64)
        largest = self.species_table.shape[0] - 1
        in_table = (numbers >= 0) & (numbers <= largest)
        species = self.species_table[numbers.clamp(0, largest)]
        unknown = ~in_table | (species < 0)
        if bool(unknown.any()):
            missing: list[int] = torch.unique(numbers[unknown]).tolist()
            raise ValueError(
                "atomic numbers "
                + str(missing)
                + " are not in the model's element list "
                + str(self.elements)
            )
        return species

    def _evaluate(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        edge_index: Tensor,
        cell_shift: Tensor,
        cell: Tensor,
        pbc: Tensor,
        compute_stress: bool,
    ) -> dict[str, Tensor]:
        """Build the model's batch of one structure; energy, forces and (if asked) stress."""
        species = self._species(atomic_numbers)
        n = positions.shape[0]
        device = positions.device
        coordinates = positions.detach().to(self.dtype).requires_grad_(True)
        cell_shift = cell_shift.detach().to(self.dtype)
        node_graph = torch.zeros(n, dtype=torch.int64, device=device)
        with_strain = bool(pbc.any()) and compute_stress
        strain = torch.zeros((1, 3, 3), dtype=self.dtype, device=device)
        strained, strained_shift = coordinates, cell_shift
        if with_strain:
            edge_graph = torch.zeros(edge_index.shape[1], dtype=torch.int64, device=device)
            strain, strained, strained_shift = apply_strain(
                coordinates, cell_shift, node_graph, edge_graph, 1
            )
        batch: dict[str, Tensor] = {
            "coordinates": strained,
            "atomic_numbers": atomic_numbers.to(torch.int64),
            "species": species,
            "node_attrs": torch.nn.functional.one_hot(species, self.num_elements).to(self.dtype),
            "edge_index": edge_index,
            "cell_shift": strained_shift,
            "batch": node_graph,
            "ptr": torch.tensor([0, n], dtype=torch.int64, device=device),
            "num_graphs": torch.tensor(1, dtype=torch.int64, device=device),
            "cell": cell.unsqueeze(0),
            "pbc": pbc.unsqueeze(0),
        }
        node_energy = self.model(batch)["node_energy"]
        energy = self._energy(node_energy, species, node_graph)
        if with_strain:
            gradients = torch.autograd.grad([energy.sum()], [coordinates, strain])
            strain_gradient = gradients[1]
            assert strain_gradient is not None
            volume = cell_volumes(cell.unsqueeze(0), pbc.unsqueeze(0))
            stress = stress_from_gradient(strain_gradient, volume.to(self.dtype))[0]
        else:
            gradients = torch.autograd.grad([energy.sum()], [coordinates])
            stress = torch.zeros((3, 3), dtype=self.dtype, device=device)
        position_gradient = gradients[0]
        assert position_gradient is not None
        out = {"energy": energy[0].detach(), "forces": -position_gradient.detach()}
        if compute_stress:
            out["stress"] = stress.detach()
        return out

    def _energy(self, node_energy: Tensor, species: Tensor, node_graph: Tensor) -> Tensor:
        """``sum_i scale * e_i + E0[Z_i]`` as ``PotentialModule._energy`` computes it."""
        dtype = torch.promote_types(node_energy.dtype, torch.float32)
        reference = self.reference_energies.to(dtype)[species]
        per_atom = self.energy_scale.to(dtype) * node_energy.to(dtype) + reference
        return scatter_sum(per_atom, node_graph, 1)


def metadata(potential: ExportedPotential) -> dict[str, Any]:
    """What an engine needs to know about an exported potential (``metadata.json``)."""
    return {
        "format": "physicsml-export",
        "format_version": EXPORT_FORMAT_VERSION,
        "model_format_version": VERSION,
        "elements": potential.elements,
        "cut_off": potential.cut_off,
        "dtype": potential.dtype_name,
        "units": {
            "energy": "eV",
            "length": "Angstrom",
            "forces": "eV/Angstrom",
            "stress": "eV/Angstrom^3",
        },
        "self_interaction": potential.self_interaction,
        "pbc_override": potential.pbc_override.tolist() if potential.has_pbc_override else None,
        "cell_override": potential.cell_override.tolist() if potential.has_cell_override else None,
        "outputs": {
            "energy": "[]",
            "forces": "[n, 3]",
            "stress": "[3, 3], zeros if no pbc; absent with compute_stress=False",
        },
    }


def check_exportable(module: PotentialModule) -> None:
    """Raise :class:`ExportError` if ``module`` needs inputs an engine cannot pass."""
    if module.targets.get("graph_attrs_cols"):
        raise ExportError(
            "the model reads graph attributes (datamodule.graph_attrs_cols), which an engine "
            "cannot pass: it cannot be exported"
        )


def exportable(module: PotentialModule, dtype: torch.dtype) -> ExportedPotential:
    """``module`` (left unchanged) as an :class:`ExportedPotential` in ``dtype`` whose e3nn
    parts are compiled in their own mode (scripted or traced), ready for ``torch.jit.script``."""
    check_exportable(module)
    copied = copy.deepcopy(module).to(dtype).eval()
    copied.model = e3nn_compile(copied.model)
    return ExportedPotential(copied, dtype).eval()


def export_model(
    model: str | Path, out: str | Path, format: str = "torchscript", dtype: str = "float32"
) -> dict[str, Any]:
    """Export the potential at ``model`` (run directory, checkpoint or ``model.pt``) to the
    file ``out`` (TorchScript, or an AOTInductor package: :mod:`physicsml.export_aoti`);
    returns the metadata written with it."""
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if format == "aoti":
        from physicsml.export_aoti import export_aoti  # (it imports this module)

        return export_aoti(load_module(model), out, DTYPES[dtype])
    potential = exportable(load_module(model), DTYPES[dtype])
    info = metadata(potential)
    scripted = torch.jit.script(potential)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(out), _extra_files={METADATA_FILE: json.dumps(info)})
    return info
