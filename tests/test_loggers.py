"""CSV, TensorBoard and wandb (offline) at once; the wandb run id survives a resume; no secrets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from physicsml.train import train

TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "datamodule.split.train=0.1",
    "datamodule.split.validation=0.05",
    "logger=many",
]
SECRET = "0123456789abcdef0123456789abcdef01234567"


def _flushed(path: Path, marker: bytes, timeout: float = 60.0) -> bytes:
    """The file's bytes once ``marker`` is in them (wandb's service may still be writing)."""
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_bytes()
        if marker in data or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_csv_tensorboard_and_offline_wandb_with_a_resumed_run(
    cfg_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"

    train(cfg_factory(*TINY, "trainer.max_epochs=1", run_dir=run_dir), run_dir)
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert run_id
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1
    # wandb 0.31 keeps an offline run's config and history in its run-<id>.wandb records
    record = _flushed(offline[0] / f"run-{run_id}.wandb", b"val_energy_mae")
    assert b'"c_hidden":8' in record and b'"max_epochs":1' in record  # the resolved config
    for key in (b"val_loss", b"val_forces_mae", b"val_energy_mae", b"train_loss"):
        assert key + b"\x82" in record, key  # a logged value (protobuf field 16 follows)

    # a resumed run (same run dir, resumes from checkpoints/last.ckpt) continues the wandb run
    train(cfg_factory(*TINY, "trainer.max_epochs=2", run_dir=run_dir), run_dir)
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(f"-{run_id}") for p in runs)

    import wandb

    assert wandb.run is None  # wandb.finish() was called

    for path in [*run_dir.rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
