"""Composing step configs outside a step (the Snakefile), and turning values into CLI overrides.

Snakemake only tracks params that are plain Python values, and never sees values pasted into a shell
template, so the workflow composes each job's config here, converts it to plain dicts (tracked
params), and passes the study's overrides on the command line in Hydra's override grammar.
"""

from __future__ import annotations

import shlex
from typing import Any

from hydra import compose, initialize_config_dir

from cnnscope.steps.runner import config_dir, plain
from cnnscope.steps.schema import schema, validate


def compose_step(step: str, overrides: list[str]) -> dict[str, Any]:
    """The step's composed and validated config as plain dicts (mandatory paths stay ``'???'``)."""
    schema(step)  # importing the step's module registers its schema
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = plain(compose(config_name=step, overrides=overrides))
    validate(step, cfg)
    return cfg


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar (strings always quoted, so ``'true'`` stays text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def overrides(values: dict[str, Any]) -> list[str]:
    """``{"a.b": 1}`` -> ``["a.b=1"]``; a key given as ``"group="`` selects a config group."""
    return [f"{k}={hydra_value(v)}" if not k.endswith("=") else f"{k}{v}" for k, v in values.items()]


def shell_args(items: list[str]) -> str:
    """Overrides joined and quoted for the shell command of a rule."""
    return " ".join(shlex.quote(a) for a in items)
