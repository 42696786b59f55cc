"""The commands the README and the shipped configs show compose and name files that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from physicsml.cli.train import compose_error
from physicsml.config.registry import register_configs
from physicsml.config.resolvers import register_resolvers

REPO = Path(__file__).resolve().parents[1]


def users_day() -> list[list[str]]:
    """The commands of README's "A user's day", as argument lists."""
    text = (REPO / "README.md").read_text()
    block = text.split("## A user's day", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]


def launcher_examples() -> list[list[str]]:
    """The example commands in the comments of conf/hydra/launcher/*.yaml."""
    commands = []
    for path in sorted((REPO / "conf" / "hydra" / "launcher").glob("*.yaml")):
        for line in path.read_text().splitlines():
            found = re.match(r"#\s+(physicsml-train .*)", line)
            if found:
                commands.append(shlex.split(found.group(1)))
    return commands


def train_overrides(command: list[str]) -> list[str]:
    """The overrides of a ``physicsml-train`` command, a sweep's first value for each key."""
    overrides = []
    for arg in command[1:]:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        overrides.append(f"{key}={value.split(',')[0]}".replace("<time>", "2026-01-01_00-00-00"))
    return overrides


COMMANDS = [c for c in users_day() + launcher_examples() if c[0] == "physicsml-train"]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[1:]) for c in COMMANDS])
def test_documented_training_commands_compose(command: list[str]) -> None:
    register_configs()
    register_resolvers()
    assert compose_error(train_overrides(command)) is None


def test_documented_input_files_exist() -> None:
    ingests = [c for c in users_day() if c[0] == "physicsml-ingest"]
    assert ingests
    for command in ingests:
        assert (REPO / command[1]).is_file(), command[1]
