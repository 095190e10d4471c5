"""Settings as Hydra command-line overrides, written without importing Hydra (the workflow builds every
job's command line while it parses the DAG, which must stay cheap)."""

from __future__ import annotations

import shlex
from typing import Any


def model_items(values: dict[str, Any]) -> list[str]:
    """Overrides of a model config's fields; the factory's ``kwargs`` key by key (``++``: they are new
    keys of a dict that Hydra's struct mode would refuse to extend)."""
    items = [f"model.{k}={hydra_value(v)}" for k, v in values.items() if k != "kwargs"]
    return items + [f"++model.kwargs.{k}={hydra_value(v)}" for k, v in (values.get("kwargs") or {}).items()]


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
