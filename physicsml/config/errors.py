"""The error every configuration problem raises (the CLIs print it on one line, exit 2)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that is well-typed but cannot work (with the data, the model...)."""
