"""What every step's config schema is built from, and the registry of those schemas.

Each step module defines its config as one typed dataclass beside its code (``Config`` in
``cnnscope.steps.<step>``), built from the bases here, and registers it (:func:`register`): as
``<step>_schema``, and as the step's primary config ``<step>``, whose defaults list (the schema, the
step's default model or dataset from ``config/<group>/``, ``config/step.yaml``'s shared Hydra
settings) is derived here, so a step has no YAML file of its own. Enumerated settings are Enums and
numbers have ranges (:mod:`cnnscope.bounds`), so a misspelt key, a wrongly typed value or a value
outside its Enum fails in OmegaConf, and a number outside its range in :func:`validate`, before any
work: on the command line or in the study config, whose values the workflow validates while it
builds the DAG. Library dataclasses are the schemas of the library settings they configure
(:class:`~cnnscope.models.registry.ModelSpec`, :class:`~cnnscope.training.TrainParams`,
:class:`~cnnscope.data.synthworld.WorldSpec`, :class:`~cnnscope.report.inputs.ReportInputs`).

Keeping each schema in its step module keeps each step's import closure (its rule's code inputs) to
the code that step runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cnnscope import bounds
from cnnscope.bounds import bounded, positive
from cnnscope.checkpoint import CHECKPOINT_S

DEVICE = r"auto|cpu|cuda(:\d+)?"
_SCHEMAS: dict[str, type] = {}
_STEPS: dict[type, str] = {}


@dataclass
class Step:
    """What every step has: the artifact it writes and whether it draws progress bars."""

    out: str = MISSING
    progress: bool = True


@dataclass
class Threaded(Step):
    """A step that computes on CPU threads: how many the workflow gives it is its stage declaration's
    ``threads`` (:mod:`cnnscope.stages`)."""

    threads: int = positive(1)  # CPU threads (the rule's threads)


@dataclass
class OnDevice(Threaded):
    device: str = bounded("auto", pattern=DEVICE)  # auto | cpu | cuda | cuda:N


@dataclass
class Resumable:
    # Seconds between checkpoints a killed job resumes from (0: each batch).
    checkpoint_s: float = bounded(CHECKPOINT_S, 0)


# Settings that change how a step runs, never what it computes: left out of what resumed work must match.
RUN_ONLY = frozenset(f.name for cls in (Step, Threaded, Resumable) for f in dataclasses.fields(cls))
# Config groups (config/<group>/*.yaml) a step field may select, by the field's name.
GROUPS = ("model", "dataset")


def register(step: str, schema: type, **groups: str) -> None:
    """Register ``schema`` as ``<step>_schema``, its group fields' types as ``<group>_schema``, and the
    step's primary config ``<step>``: the schema, then each of ``groups`` (a group field's default
    entry, e.g. ``model="convnet"`` for ``config/model/convnet.yaml``), then ``config/step.yaml``."""
    cs = ConfigStore.instance()
    cs.store(name=f"{step}_schema", node=schema)
    hints = typing.get_type_hints(schema)
    for group in GROUPS:
        if group in hints:
            cs.store(group=group, name=f"{group}_schema", node=hints[group])
    if set(groups) - set(GROUPS) or set(groups) - set(hints):
        raise TypeError(f"{step}: {sorted(groups)} are not group fields of its schema ({', '.join(GROUPS)})")
    defaults = [f"{step}_schema", *({g: v} for g, v in groups.items()), "step", "_self_"]
    cs.store(name=step, node={"defaults": defaults})
    _SCHEMAS[step] = schema
    _STEPS[schema] = step


def schema(step: str) -> type:
    """``step``'s config schema (importing its module registers it)."""
    if step not in _SCHEMAS:
        importlib.import_module(f"cnnscope.steps.{step}")
    return _SCHEMAS[step]


def settings(schema: type, prefix: str = "") -> list[str]:
    """One line per setting of ``schema`` (nested dataclasses as dotted keys): its name, type, default
    and range, as ``cnnscope stages --settings`` prints them. ``???``: the workflow fills it; a group
    field (``model``, ``dataset``) comes from the study's entry and ``config/<group>/``."""
    hints, lines = typing.get_type_hints(schema), []
    for f in dataclasses.fields(schema):
        kind, key = hints[f.name], f"{prefix}{f.name}"
        if f.name in GROUPS and not prefix:
            lines.append(f"{key}: {kind.__name__} (from the study and config/{f.name}/)")
        elif dataclasses.is_dataclass(kind):
            lines += settings(kind, f"{key}.")
        else:
            enum = isinstance(kind, type) and issubclass(kind, StrEnum)
            what = " | ".join(kind) if enum else getattr(kind, "__name__", str(kind).replace("typing.", ""))
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            rng, pattern = f.metadata.get("range"), f.metadata.get("pattern")
            limits = f"  in {rng}" if rng else f"  matching {pattern}" if pattern else ""
            lines.append(f"{key}: {what} = {default}{limits}")
    return lines


def step_of(cfg: Step) -> str:
    """The step whose config ``cfg`` is."""
    return _STEPS[type(cfg)]


def validate(step: str, cfg: dict[str, Any]) -> None:
    """Refuse any value of the composed ``cfg`` outside its range (OmegaConf has checked the types)."""
    bounds.check(schema(step), cfg)
