"""MACE's product basis: per-channel symmetric powers of the atomic basis, contracted with
per-element weights onto the irreps of the next layer (Batatia et al. 2022, eq. 10-11).

The coupling coefficients are computed once with e3nn's ``wigner_3j`` and reduced to the
*symmetric* coupled basis: the input ``x`` enters as ``x (x) x (x) ... (x) x``, so only the
part of a coupling that is symmetric under permuting its inputs matters. The reduced basis
spans exactly the functions that mace-torch's full path basis spans, with fewer weights.

Evaluation is in Horner form, ``(sum_nu T_nu mono_{nu-1}(x)) . x`` with ``mono_d`` the sorted
degree-``d`` monomials of one channel (``x_i x_j``, ``i <= j``, for correlation 3): the
per-element weights are folded into the coefficients first (``T_nu`` is a small
``[channel, M * D, monomial]`` tensor per element and channel). The nodes are laid out in
blocks of equal width, each holding nodes of one element (:class:`NodeBlocks`), so that each
degree is one batched matmul over all (block, channel) pairs. A loop over elements on slices
of one node axis costs 3x the operators and a copy of every matrix in the batched matmuls'
backward: forward, forces and double backward of a training step took 1.3-1.7x longer on
aspirin batches. The cost does not grow with the number of coupling paths (mace-torch
contracts per node with the full coupling tensors, a factor ~P more work).
"""

import itertools
import math
from functools import cache, lru_cache
from typing import Any

import torch
from e3nn import o3
from torch import Tensor

from physicsml.models.utils import Constant

Irrep = tuple[int, int]  # (l, parity)


@cache
def _cg(l1: int, l2: int, l3: int) -> Tensor:
    """e3nn's real Clebsch-Gordan coefficients ``[2l1+1, 2l2+1, 2l3+1]`` in float64."""
    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64)


def _coupling_paths(lmax: int, nu: int, out: Irrep) -> Tensor:
    """All CG coupling chains of ``nu`` copies of ``V = sum_l l(-1)^l`` (l <= lmax) onto ``out``.

    Returns ``[paths, 2L+1, D, ..., D]`` (``nu`` axes of size D).
    """
    dim = (lmax + 1) ** 2
    eye = torch.eye(dim, dtype=torch.float64)
    current: list[tuple[int, int, Tensor]] = [
        (ell, (-1) ** ell, eye[ell * ell : (ell + 1) ** 2]) for ell in range(lmax + 1)
    ]
    for step in range(1, nu):
        last = step == nu - 1
        coupled = []
        for la, pa, ta in current:
            for lb in range(lmax + 1):
                for lc in range(abs(la - lb), la + lb + 1):
                    parity = pa * (-1) ** lb
                    if last and (lc, parity) != out:
                        continue
                    t = ta.new_zeros(2 * lc + 1, ta.shape[1], dim)
                    cg = _cg(la, lb, lc)  # [a, b, c]
                    block = cg.permute(2, 1, 0).reshape(-1, cg.shape[0]) @ ta  # [c * b, I]
                    block = block.view(2 * lc + 1, 2 * lb + 1, -1).transpose(1, 2)
                    t[:, :, lb * lb : (lb + 1) ** 2] = block
                    coupled.append((lc, parity, t.reshape(2 * lc + 1, -1)))
        current = coupled
    rows = [t for ell, p, t in current if (ell, p) == out]
    if not rows:
        return torch.zeros(0, 2 * out[0] + 1, *([dim] * nu), dtype=torch.float64)
    return torch.stack(rows).reshape(len(rows), 2 * out[0] + 1, *([dim] * nu))


def symmetric_basis(lmax: int, nu: int, out: Irrep) -> Tensor:
    """Orthonormal basis ``[P, 2L+1, D, ..., D]`` of the permutation-symmetric couplings.

    Each basis tensor is symmetric in its ``nu`` input axes and equivariant onto ``out``;
    ``P`` is the multiplicity of ``out`` in the ``nu``-th symmetric power of ``V``.
    """
    paths = _coupling_paths(lmax, nu, out)
    if paths.shape[0] == 0:
        return paths
    perms = list(itertools.permutations(range(2, nu + 2)))
    sym = torch.stack([paths.permute(0, 1, *p) for p in perms]).mean(0)
    basis = _orthonormal_rows(sym.reshape(sym.shape[0], -1))
    return basis.reshape(-1, *paths.shape[1:])


def _orthonormal_rows(rows: Tensor) -> Tensor:
    """Orthonormal basis of the span of ``rows``: the first linearly independent rows (in
    order), symmetrically orthonormalised, ``(R R^T)^(-1/2) R``.

    The result is unique. An eigenbasis of all rows' Gram matrix is not: within a degenerate
    eigenspace the solver's choice changed with the number of threads, so a model rebuilt in
    another process got another basis than its trained weights were made for.
    """
    independent: list[int] = []
    directions: list[Tensor] = []
    tolerance = 1e-8 * float(rows.norm(dim=1).max())
    for k, row in enumerate(rows):
        for _ in range(2):  # Gram-Schmidt, twice against rounding, only to find the rank
            for d in directions:
                row = row - (row @ d) * d
        if row.norm() > tolerance:
            independent.append(k)
            directions.append(row / row.norm())
    chosen = rows[independent]
    evals, evecs = torch.linalg.eigh(chosen @ chosen.T)  # full rank: a unique inverse root
    return (evecs * evals.rsqrt()) @ evecs.T @ chosen


def monomials(dim: int, degree: int) -> list[tuple[int, ...]]:
    """Sorted index tuples ``i1 <= ... <= i_degree`` of the monomials in ``dim`` variables."""
    return list(itertools.combinations_with_replacement(range(dim), degree))


def _orderings(mono: tuple[int, ...]) -> float:
    """Number of distinct orderings of an index tuple."""
    return math.factorial(len(mono)) / math.prod(math.factorial(mono.count(i)) for i in set(mono))


@lru_cache(maxsize=16)
def product_basis(
    lmax: int, correlation: int, outs: tuple[Irrep, ...]
) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]]]:
    """Coefficients of the product basis in Horner form, for every output irrep.

    Degree ``nu`` is written ``sum_{q, k} c[p, q, m, k] mono_q(x) x_k`` with ``mono_q`` the
    sorted monomials of degree ``nu - 1``. Returns ``(coefficients, monomial_indices)``:
    ``coefficients[nu - 1]`` is ``[P_nu, Q_{nu-1}, sum_L (2L+1), D]`` with the ``P_nu`` basis
    functions of all output irreps (block-diagonal in the output irreps), scaled so that unit
    weights give outputs of order one; ``monomial_indices[d - 2] = (prefix, last)`` builds the
    degree-``d`` monomials as ``mono_{d-1}[prefix] * x[last]``.
    """
    dim = (lmax + 1) ** 2
    by_degree = [monomials(dim, d) for d in range(correlation)]
    indices = []
    for d in range(2, correlation):
        lower = {m: k for k, m in enumerate(by_degree[d - 1])}
        indices.append(
            (
                torch.tensor([lower[m[:-1]] for m in by_degree[d]]),
                torch.tensor([m[-1] for m in by_degree[d]]),
            )
        )

    num_m = sum(2 * ell + 1 for ell, _ in outs)
    coefficients = []
    for nu in range(1, correlation + 1):
        monos = by_degree[nu - 1]
        mult = torch.tensor([_orderings(m) for m in monos], dtype=torch.float64)
        # Row-major position of each prefix tuple among the D^(nu-1) ordered ones.
        flat = torch.tensor([sum(i * dim**k for k, i in enumerate(reversed(m))) for m in monos])
        blocks, m0 = [], 0
        for ell, parity in outs:
            basis = symmetric_basis(lmax, nu, (ell, parity))  # [P, M, D^nu], unit norm
            # sqrt(M): each output component of order one; 1/sqrt(P): sum over P unit weights.
            basis = basis * math.sqrt((2 * ell + 1) / max(basis.shape[0], 1))
            values = basis.reshape(*basis.shape[:2], -1, dim)[:, :, flat]  # [P, M, Q, D]
            block = torch.zeros(basis.shape[0], len(monos), num_m, dim, dtype=torch.float64)
            block[:, :, m0 : m0 + 2 * ell + 1] = (values * mult[:, None]).transpose(1, 2)
            blocks.append(block)
            m0 += 2 * ell + 1
        coefficients.append(torch.cat(blocks))
    return coefficients, indices


class SymmetricContraction(torch.nn.Module):
    """Per-channel product basis ``B_{c,LM} = sum_nu sum_p W[z, nu, p, c] (U_p x_c^(x)nu)_LM``.

    Input ``x [N, D, C]`` (D = (lmax+1)^2 components of ``0e + 1o + ... + lmax`` per channel)
    and the species index ``[N]``; output ``[N, sum_L (2L+1), C]`` for ``outs``.
    Evaluated as ``(sum_nu T_nu(z, c) mono_{nu-1}(x_c)) . x_c`` where ``T_nu`` folds the
    weights into the coefficients: one batched matmul over (node block, channel) per degree.
    """

    weight_scale: Tensor

    def __init__(
        self, lmax: int, outs: list[Irrep], correlation: int, num_channels: int, num_elements: int
    ) -> None:
        super().__init__()
        coefficients, indices = product_basis(lmax, correlation, tuple(outs))
        # Constants stay float64 (cast on use) so that a float64 model is exact to 1e-15.
        # coefficients[nu - 1] of degree nu; prefixes/lasts[d - 2] build degree d monomials.
        self.coefficients = torch.nn.ModuleList(Constant(c.clone()) for c in coefficients)
        self.prefixes = torch.nn.ModuleList(Constant(prefix.clone()) for prefix, _ in indices)
        self.lasts = torch.nn.ModuleList(Constant(last.clone()) for _, last in indices)
        self.num_weights = [c.shape[0] for c in coefficients]
        self.num_m = coefficients[0].shape[2]
        # Weights of degree nu are stored divided by num_weights(nu) and multiplied back in the
        # forward pass (mace-torch's randn / num_params): the same initial function, but Adam's
        # steps, of a fixed size per weight, are num_weights(nu) times larger relative to the
        # weights. With unit scales the early epochs are slower (experiments/accuracy).
        scale = torch.cat([torch.full((n,), float(n)) for n in self.num_weights])
        self.register_buffer("weight_scale", scale)
        self.weight = torch.nn.Parameter(
            torch.randn(num_elements, sum(self.num_weights), num_channels) / scale[:, None]
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints saved before weight_scale existed stored the weights unscaled.
        state_dict.setdefault(prefix + "weight_scale", torch.ones_like(self.weight_scale))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: Tensor, species: Tensor) -> Tensor:
        """Contract ``x [N, D, C]`` with the weights of each node's species -> ``[N, M, C]``."""
        _, dim, channels = x.shape
        layout = NodeBlocks(species, self.weight.shape[0])
        padded = torch.cat([x, x.new_zeros(1, dim, channels)]).index_select(0, layout.source)
        # [B * C, D, W]: one matrix per (block, channel), the block's nodes as columns.
        xt = padded.view(-1, layout.width, dim, channels).permute(0, 3, 2, 1)
        xt = xt.reshape(-1, dim, layout.width)
        monomials = [xt]  # degrees 1 .. correlation-1
        for prefix, last in zip(self.prefixes, self.lasts, strict=True):
            monomials.append(monomials[-1].index_select(1, prefix()) * xt.index_select(1, last()))
        weights = self.weight * self.weight_scale[:, None]
        weights = weights.index_select(0, layout.element)  # [B, P, C]
        element_weights = torch.split(weights, self.num_weights, dim=1)
        horner: Tensor | None = None  # [B * C, M * D, W]
        for k, coefficients in enumerate(self.coefficients):  # degree nu = k + 1
            c = coefficients().to(x.dtype)  # [P, Q, M, D]
            # Each block's weights [P, C] folded into the coefficients: [B * C, M * D, Q].
            folded = torch.einsum("pqmk,bpc->bcmkq", c, element_weights[k])
            folded = folded.reshape(-1, self.num_m * dim, c.shape[1])
            horner = folded if horner is None else torch.baddbmm(horner, folded, monomials[k - 1])
        assert horner is not None
        horner = horner.view(-1, self.num_m, dim, horner.shape[-1])  # 1 column if correlation 1
        out = (horner * xt.unsqueeze(1)).sum(2)  # [B * C, M, W]
        out = out.view(-1, channels, self.num_m, layout.width).permute(0, 3, 2, 1)
        return out.reshape(-1, self.num_m, channels).index_select(0, layout.slot)


class NodeBlocks:
    """The nodes laid out in blocks of ``width`` slots, each block holding one element's nodes.

    An element with more nodes than ``width`` fills several blocks (at most
    ``max_blocks_per_element``). ``width`` is chosen to leave the fewest slots empty: one
    block per element, as wide as the commonest element, would leave half of an ethanol
    batch's slots empty (80 slots instead of 144 for 72 atoms; the contraction's training step
    1.1-2x faster). ``element [B]`` is each block's element, ``slot [N]`` each node's slot
    and ``source [B * width]`` each slot's node (``N`` for an empty slot).
    """

    def __init__(self, species: Tensor, num_elements: int, max_blocks_per_element: int = 4):
        counts: list[int] = torch.bincount(species, minlength=num_elements).tolist()
        self.width: int = _best_width(counts, max_blocks_per_element)
        blocks = [_ceil_div(c, self.width) for c in counts]
        device = species.device
        self.element: Tensor = torch.repeat_interleave(
            torch.arange(num_elements, device=device), torch.tensor(blocks, device=device)
        )
        first_block = torch.tensor(_exclusive_cumsum(blocks), device=device)
        first_node = torch.tensor(_exclusive_cumsum(counts), device=device)
        order = torch.argsort(species, stable=True)
        nodes = torch.arange(species.shape[0], device=device)
        rank = torch.empty_like(order)  # position of each node among its element's nodes
        rank[order] = nodes - first_node[species[order]]
        block = first_block[species] + rank // self.width
        self.slot: Tensor = block * self.width + rank % self.width
        self.source: Tensor = torch.full(
            (self.element.shape[0] * self.width,), species.shape[0], dtype=torch.long, device=device
        )
        self.source[self.slot] = nodes


def _best_width(counts: list[int], max_blocks_per_element: int) -> int:
    """The block width with the fewest slots for elements of ``counts`` nodes each (the
    widest of equals), each element in at most ``max_blocks_per_element`` blocks."""
    present: list[int] = []
    for count in counts:
        if count > 0:
            present.append(count)
    narrowest = _ceil_div(max(present) if len(present) > 0 else 0, max_blocks_per_element)
    best, best_slots = 1, -1
    for count in present:
        for k in range(1, max_blocks_per_element + 1):
            width = _ceil_div(count, k)
            if width < narrowest:
                continue
            slots = 0
            for c in present:
                slots += _ceil_div(c, width)
            slots *= width
            if best_slots < 0 or slots < best_slots or (slots == best_slots and width > best):
                best, best_slots = width, slots
    return best


def _exclusive_cumsum(values: list[int]) -> list[int]:
    """``[0, v0, v0 + v1, ...]`` without the total."""
    sums: list[int] = []
    total = 0
    for v in values:
        sums.append(total)
        total += v
    return sums


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
