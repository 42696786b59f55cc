"""The allocator setting: which ``mallopt`` calls it makes, and nothing off glibc.

Its effect (fewer page faults per training step) depends on the machine's load; it is measured
by ``experiments/allocator/benchmark.py``, not asserted here.
"""

from __future__ import annotations

import platform
from typing import Any

import pytest

from physicsml import allocator
from physicsml.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory


class FakeLibc:
    """A C library whose ``mallopt`` records its calls and returns ``result``."""

    def __init__(self, result: int) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def use_libc(monkeypatch: pytest.MonkeyPatch, libc: Any) -> list[str]:
    """Make ``ctypes.CDLL`` return ``libc`` (raise it if an exception); return the names
    it is asked for."""
    names: list[str] = []

    def cdll(name: str) -> Any:
        names.append(name)
        if isinstance(libc, Exception):
            raise libc
        return libc

    monkeypatch.setattr(allocator.ctypes, "CDLL", cdll)
    return names


@pytest.mark.parametrize("megabytes", [0, -1])
def test_non_positive_size_is_an_error(megabytes: int) -> None:
    with pytest.raises(ValueError, match=f"megabytes must be positive, got {megabytes}"):
        keep_freed_memory(megabytes)


def test_raises_both_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc(result=1)
    names = use_libc(monkeypatch, libc)
    assert keep_freed_memory(256)
    assert names == ["libc.so.6"]
    assert libc.calls == [(M_MMAP_THRESHOLD, 256 << 20), (M_TRIM_THRESHOLD, 512 << 20)]


def test_thresholds_are_capped_at_one_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc(result=1)
    use_libc(monkeypatch, libc)
    assert keep_freed_memory(4096)
    assert libc.calls == [(M_MMAP_THRESHOLD, 2**30), (M_TRIM_THRESHOLD, 2**31)]


def test_refused_setting_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    use_libc(monkeypatch, FakeLibc(result=0))
    assert not keep_freed_memory(256)


@pytest.mark.parametrize("libc", [OSError("libc.so.6: cannot open"), object()])
def test_off_glibc_changes_nothing(monkeypatch: pytest.MonkeyPatch, libc: Any) -> None:
    """No ``libc.so.6`` (musl, macOS), or one without ``mallopt``: False, nothing called."""
    use_libc(monkeypatch, libc)
    assert keep_freed_memory(256) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_setting() -> None:
    assert keep_freed_memory(256)
