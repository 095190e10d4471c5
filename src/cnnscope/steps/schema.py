"""What every step's config schema is built from, and the registry of those schemas.

Each step module defines its config as one typed dataclass beside its code (``Config`` in
``cnnscope.steps.<step>``), built from the bases here, and registers it as ``<step>_schema``;
``config/<step>.yaml`` holds only its defaults list. Enumerated settings are Enums and numbers have
ranges (:mod:`cnnscope.bounds`), so a misspelt key, a wrongly typed value or a value outside its
Enum fails in OmegaConf, and a number outside its range in :func:`validate`, before any work: on the
command line, in the YAML, or in the study config, whose values the workflow validates while it
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
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cnnscope import bounds
from cnnscope.bounds import bounded, positive

DEVICE = r"auto|cpu|cuda(:\d+)?"
_SCHEMAS: dict[str, type] = {}


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
    checkpoint_s: float = bounded(
        30.0, 0
    )  # seconds between checkpoints a killed job resumes from (0: each batch)


# Settings that change how a step runs, never what it computes: left out of what resumed work must match.
RUN_ONLY = frozenset(f.name for cls in (Step, Threaded, Resumable) for f in dataclasses.fields(cls))
# Config groups (config/<group>/*.yaml) a step field may select, by the field's name.
GROUPS = ("model", "dataset")


def register(step: str, schema: type) -> None:
    """Register ``schema`` as ``<step>_schema`` and, for its group fields, their ``<group>_schema``."""
    cs = ConfigStore.instance()
    cs.store(name=f"{step}_schema", node=schema)
    hints = typing.get_type_hints(schema)
    for group in GROUPS:
        if group in hints:
            cs.store(group=group, name=f"{group}_schema", node=hints[group])
    _SCHEMAS[step] = schema


def schema(step: str) -> type:
    """``step``'s config schema (importing its module registers it)."""
    if step not in _SCHEMAS:
        importlib.import_module(f"cnnscope.steps.{step}")
    return _SCHEMAS[step]


def validate(step: str, cfg: dict[str, Any]) -> None:
    """Refuse any value of the composed ``cfg`` outside its range (OmegaConf has checked the types)."""
    bounds.check(schema(step), cfg)
