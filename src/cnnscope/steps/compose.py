"""Composing step configs outside a step (the Snakefile), and turning values into CLI overrides.

Snakemake only tracks params that are plain Python values, and never sees values pasted into a shell
template, so the workflow composes each job's config here, converts it to plain dicts (tracked
params), and passes the study's overrides on the command line in Hydra's override grammar.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnscope.errors import CnnscopeError, did_you_mean
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.registry import ModelSpec, torchvision_archs
from cnnscope.steps.runner import config_dir, plain
from cnnscope.steps.schema import schema, validate


def compose_step(step: str, overrides: list[str]) -> dict[str, Any]:
    """The step's composed and validated config as plain dicts (mandatory paths stay ``'???'``)."""
    schema(step)  # importing the step's module registers its schema
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = plain(compose(config_name=step, overrides=overrides))
    validate(step, cfg)
    return cfg


def compose_model(model: str, sets: Sequence[str] = ()) -> dict[str, Any]:
    """A model's validated spec (``ModelSpec`` fields) as the steps would load it, from a name a user
    types: a model YAML file (``ModelSpec`` keys), a ``config/model/`` entry, or a torchvision or
    built-in architecture; ``sets`` are further ``key=value`` settings of it (Hydra syntax)."""
    path = Path(model)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise CnnscopeError(f"model file {path} must be a mapping of ModelSpec keys")
        items = ["model=model_schema", *model_items({k: v for k, v in values.items() if k != "defaults"})]
    elif (config_dir() / "model" / f"{model}.yaml").is_file():
        items = [f"model={model}"]
    elif model in BUILTIN:
        items = ["model=model_schema", "model.source=builtin", f"model.arch={hydra_value(model)}"]
    elif model in torchvision_archs():
        items = ["model=model_schema", "model.source=torchvision", f"model.arch={hydra_value(model)}"]
        items.append("model.weights=DEFAULT")
    else:
        raise CnnscopeError(
            f"unknown model {model!r}: give a model YAML file, a config/model/ name or a torchvision or "
            "built-in architecture (`cnnscope models` lists them)"
        )
    try:
        given = [f"{s[: len(s) - len(s.lstrip('+~'))]}model.{s.lstrip('+~')}" for s in sets]
        return compose_step("weights", [*items, *given])["model"]
    except (HydraException, OmegaConfBaseException) as e:
        raise CnnscopeError(f"model {model}: {' '.join(str(e).split())}") from None


def check_model_entry(name: str, model: str, values: dict[str, Any]) -> None:
    """A study's model entry, in the study's own words, before Hydra composes it (whose messages
    speak of its config tree and advise ``+model.key=...``): ``model`` must name a ``config/model/``
    file, each of ``values`` (its ``overrides``) a ``ModelSpec`` field of the right type."""
    known = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    if model not in known:
        raise CnnscopeError(
            f"model {name!r}: unknown model {model!r}{did_you_mean(model, known)}; "
            f"the models are the files of config/model/: {', '.join(known)}"
        )
    keys = [f.name for f in dataclasses.fields(ModelSpec)]
    for key in values:
        if key not in keys:
            raise CnnscopeError(
                f"model {name!r}: unknown overrides key {key!r}{did_you_mean(key, keys)}; "
                f"the keys are {', '.join(keys)}"
            )
    spec = OmegaConf.structured(ModelSpec)
    for key, value in values.items():
        try:
            OmegaConf.merge(spec, {key: value})
        except OmegaConfBaseException as e:
            why = str(e).splitlines()[0]
            raise CnnscopeError(f"model {name!r}: overrides {key}: {value!r} is refused ({why})") from None


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
