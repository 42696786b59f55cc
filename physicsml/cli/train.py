"""``physicsml-train``: Hydra entry point (run, resume, sweep with ``-m``)."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.hydra import Hydra
from hydra._internal.utils import get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, open_dict, read_write

from physicsml.cli import report
from physicsml.config.errors import ConfigError
from physicsml.config.registry import config_dir, register_configs
from physicsml.config.resolvers import register_resolvers, user_options
from physicsml.data.ingest import IngestError
from physicsml.data.store_format import StoreError
from physicsml.lightning.errors import TrainingDivergedError
from physicsml.saved_model import SavedModelError

log = logging.getLogger("physicsml")
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper"
USER_ERRORS = (
    ConfigError,
    StoreError,
    IngestError,
    SavedModelError,
    FileNotFoundError,
    TrainingDivergedError,
    MisconfigurationException,  # Lightning's word for a Trainer setting it cannot honour
)
"""Errors a user fixes from their one-line message (exit status 2, no traceback)."""


def cli_error(args: argparse.Namespace) -> str | None:
    """A one-line error for the overrides of Hydra's parsed command line, or None."""
    if args.shell_completion or args.config_path or args.experimental_rerun:
        # completion's install=bash is no override; another primary config dir or a rerun:
        # Hydra checks
        return None
    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        return f"--config-dir {args.config_dir}: no such directory"
    if not args.overrides:
        return None
    return sweeper_error(args.overrides) or compose_error(
        args.overrides, args.config_dir, args.config_name or "train"
    )


def sweeper_error(overrides: list[str]) -> str | None:
    """``hparams_search=optuna`` without the Optuna sweeper plugin: how to install it."""
    for override in OverridesParser.create().parse_overrides(overrides):
        if (
            override.key_or_group == "hparams_search"
            and override.value() == "optuna"
            and importlib.util.find_spec(OPTUNA_SWEEPER) is None
        ):
            return 'hparams_search=optuna needs the Optuna sweeper: pip install "physicsml[optuna]"'
    return None


def compose_error(
    overrides: list[str], extra_config_dir: str | None = None, config_name: str = "train"
) -> str | None:
    """Compose the config with the non-sweep overrides, searching the packaged ``conf/`` and
    ``extra_config_dir`` (``--config-dir``) as Hydra will; return a one-line error or None."""
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
            if extra_config_dir is not None:
                add_config_dir(extra_config_dir)
            cfg = compose(config_name, overrides=plain, return_hydra_config=True)
            return schema_choice_error(cfg.hydra.runtime.choices)
    except (HydraException, OmegaConfBaseException) as exc:
        return one_line(exc)


def add_config_dir(path: str) -> None:
    """Re-create the initialized Hydra with ``path`` in its config search path where
    ``hydra.main`` puts ``--config-dir path``: after ``conf/`` and the plugins', before the
    schemas."""
    search_path = copy.deepcopy(GlobalHydra.instance().config_loader().get_search_path())
    search_path.prepend(
        provider="command-line",
        path=f"file://{Path(path).resolve()}",
        anchor=SearchPathQuery(provider="schema"),
    )
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)


def schema_choice_error(choices: DictConfig) -> str | None:
    """An error when a group's chosen option is one of the internal ``*_schema`` configs."""
    for key, option in choices.items():
        group = str(key)
        if isinstance(option, str) and option.endswith("_schema"):
            options = ", ".join(user_options(group))
            return f"{group}={option}: an internal schema, not an option; choose one of {options}"
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


def finished_run(args: argparse.Namespace) -> str | None:
    """For a single run into a directory that already holds a run, checked before Hydra writes
    ``.hydra/`` and ``train.log`` there: what to say when it holds this run, finished; None
    when the run starts or resumes. Raises ``RunDirConflict`` when it holds another run."""
    from hydra import compose, initialize_config_dir

    from physicsml.run_dir import check_run_dir, finished_message, holds_run

    flags = [args.multirun, args.help, args.hydra_help, args.cfg, args.info]
    if any([*flags, args.shell_completion, args.config_path, args.experimental_rerun]):
        return None
    overrides = [
        str(o.input_line)
        for o in OverridesParser.create().parse_overrides(args.overrides)
        if not o.is_sweep_override()
        and (not o.key_or_group.startswith("hydra") or o.key_or_group.startswith("hydra.run."))
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        if args.config_dir is not None:
            add_config_dir(args.config_dir)
        cfg = compose(args.config_name or "train", overrides=overrides, return_hydra_config=True)
        run_dir = Path(str(cfg.hydra.run.dir))
    if not holds_run(run_dir):
        return None
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir.resolve())
    HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.output_dir}
    _, finished = check_run_dir(cfg, run_dir)
    return None if finished is None else finished_message(run_dir, finished)


def _run(cfg: DictConfig) -> float | None:
    from physicsml.run_dir import RunDirConflict
    from physicsml.train import train

    # Hydra's job logging prints (and writes to <run dir>/train.log) what reaches the root
    # logger; the stderr handler that importing lightning adds would print every line again
    for handler in logging.getLogger("lightning").handlers[:]:
        logging.getLogger("lightning").removeHandler(handler)
    register_resolvers()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    environ = dict(os.environ)
    if multirun and str(hydra_cfg.launcher._target_).endswith("BasicLauncher"):
        _as_single_run(hydra_cfg)
    try:
        metrics = train(cfg, run_dir)
    except RunDirConflict as exc:
        # run_dir holds another run: nothing may be written into it, not even error.txt
        if not multirun:
            print(f"physicsml-train: error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.error("job %s refused: %s", hydra_cfg.job.num, exc)
        return None
    except Exception as exc:
        (run_dir / report.ERROR_FILE).write_text(f"{type(exc).__name__}: {one_line(exc)}\n")
        if not multirun:
            _log_to_file(exc)
            if isinstance(exc, USER_ERRORS):
                print(f"physicsml-train: error: {exc}", file=sys.stderr)
                sys.exit(2)
            raise
        # one failed job must not stop the sweep: record it, the summary reports it
        log.exception("job %s failed: %s", hydra_cfg.job.num, exc)
        return None  # a failed trial for Optuna's sweeper
    finally:
        # Lightning's DDP launcher leaves its process group and LOCAL_RANK, MASTER_PORT... behind:
        # the next job of a sweep in this process must start its own ranks again
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
    (run_dir / report.ERROR_FILE).unlink(missing_ok=True)  # left by an earlier, failed attempt
    summary = ", ".join(
        f"{k} {v:.4g}"
        for k, v in metrics.items()
        if k.startswith("val_") and "rmse" not in k and v is not None  # None: not finite
    )
    print(f"physicsml-train: done after {metrics['epoch']} epochs: {summary}")
    if "model_epoch" in metrics:  # (a run finished before model.pt was the best epoch's)
        print(
            f"physicsml-train: model.pt: epoch {metrics['model_epoch']} ({metrics['model_source']})"
        )
    print(f"physicsml-train: run directory {run_dir}")
    # what a sweeper (hparams_search=optuna) minimises; None (not NaN, which stops Optuna's
    # sweeper) makes a diverged run or a missing metric a failed trial
    value: Any = metrics.get(cfg.optimized_metric)
    if value is None:
        log.warning("optimized_metric %s is not one of %s", cfg.optimized_metric, sorted(metrics))
        return None
    return float(value) if math.isfinite(value) else None


def _log_to_file(exc: BaseException) -> None:
    """Write ``exc`` and its traceback into the run's log (Hydra's ``<run dir>/train.log``)
    only: the console gets the error once, from ``physicsml-train`` or Hydra."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "run failed: %s: %s",
        (type(exc).__name__, one_line(exc)), (type(exc), exc, exc.__traceback__),
    )  # fmt: skip
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _as_single_run(hydra_cfg: Any) -> None:
    """Make Lightning's DDP launcher, which re-executes ``sys.argv`` with
    ``hydra.run.dir=<HydraConfig run.dir>`` for the other ranks, start this job alone in its
    own directory instead of the whole sweep in the run directory."""
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def main() -> None:
    """Console script: validate overrides (one-line errors), then run Hydra."""
    register_configs()
    register_resolvers()
    # Hydra's own parser, so that every flag (-sc, -cd, --info, ...) reads as Hydra reads it
    args = get_args_parser().parse_args(sys.argv[1:])
    error = cli_error(args)
    if error is not None:
        print(f"physicsml-train: error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        finished = finished_run(args)
    except USER_ERRORS as exc:  # e.g. the run directory holds another run (RunDirConflict)
        print(f"physicsml-train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if finished is not None:
        print(f"physicsml-train: {finished}")
        return
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_run)()
    if report.failed_jobs:  # filled by report.SweepSummary, the Hydra callback
        sys.exit(1)


if __name__ == "__main__":
    main()
