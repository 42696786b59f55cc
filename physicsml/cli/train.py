"""``physicsml-train``: Hydra entry point (run, resume, sweep with ``-m``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from physicsml.config.registry import config_dir, register_configs
from physicsml.config.resolvers import register_resolvers
from physicsml.data.datamodule import ConfigError
from physicsml.data.store import StoreError

log = logging.getLogger("physicsml")


def compose_error(overrides: list[str]) -> str | None:
    """Compose the config with the non-sweep overrides; return a one-line error or None."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parsed = OverridesParser.create().parse_overrides(overrides)
    plain = [
        str(o.input_line)
        for o in parsed
        if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")
    ]
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            compose("train", overrides=plain)
    except (HydraException, OmegaConfBaseException) as exc:
        return one_line(exc)
    return None


def one_line(exc: BaseException) -> str:
    """The most specific message of an exception chain, on one line, with the key."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    key = getattr(inner, "full_key", None)
    message = str(inner).split("\n")[0].strip()
    if not message:
        message = str(exc).split("\n")[0].strip()
    return f"{key}: {message}" if key and key not in message else message


def _run(cfg: DictConfig) -> float | None:
    from physicsml.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    try:
        metrics = train(cfg, run_dir)
    except (ConfigError, StoreError, FileNotFoundError) as exc:
        if multirun:
            log.error("job %s failed: %s", hydra_cfg.job.num, exc)
            return float("nan")
        print(f"physicsml-train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    summary = ", ".join(
        f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("val_") and "rmse" not in k
    )
    print(f"physicsml-train: done after {metrics['epoch']} epochs: {summary}")
    print(f"physicsml-train: run directory {run_dir}")
    value: Any = metrics.get("val_loss")
    return float(value) if value is not None else None


def main() -> None:
    """Console script: validate overrides (one-line errors), then run Hydra."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    register_configs()
    register_resolvers()
    args = sys.argv[1:]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    if overrides:
        error = compose_error(overrides)
        if error is not None:
            print(f"physicsml-train: error: {error}", file=sys.stderr)
            sys.exit(2)
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_run)()


if __name__ == "__main__":
    main()
