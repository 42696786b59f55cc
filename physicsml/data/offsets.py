"""Index arithmetic on offset arrays: structure ``k``'s rows are ``offsets[k]:offsets[k+1]``."""

from __future__ import annotations

import numpy as np


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Offsets ``[S+1]`` (int64, from 0) of consecutive blocks of ``counts`` rows."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for every ``(s, c)``."""
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(
        int(ends[-1]) if len(ends) else 0
    )


def structure_blocks(offsets: np.ndarray, atoms: int) -> list[tuple[int, int]]:
    """Consecutive ranges ``(k0, k1)`` of structures holding about ``atoms`` atoms each."""
    bounds = np.searchsorted(offsets, np.arange(0, int(offsets[-1]), atoms), side="right") - 1
    starts = np.unique(np.append(bounds, 0))
    return list(zip(starts.tolist(), [*starts[1:].tolist(), len(offsets) - 1], strict=True))
