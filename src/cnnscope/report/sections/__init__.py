"""Sections that stages contribute to the report page, one module per stage.

A module here registers one :class:`Section` for its stage (:func:`register`). Importing
:mod:`cnnscope.report` imports every module of this package, so a new stage's section is its one
module, and the report step's code inputs include it (editing it redraws the page). The page draws
each registered section whose stage the study ran, after the built-in sections, with its entry in
the page's table of contents.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Entry:
    """One job's artifact of the section's stage: its model, its layer (``""`` for a per-model
    stage) and its folder."""

    model: str
    layer: str
    artifact: Path


@dataclass(frozen=True)
class Section:
    """A stage's section: its title, and ``draw(page, entries)``, which adds its HTML, figures and
    tables to the page (:class:`cnnscope.report.page.Page`) from the stage's artifacts."""

    stage: str
    title: str
    draw: Callable[[Any, list[Entry]], None]


SECTIONS: dict[str, Section] = {}


def stacked(entries: list[Entry], table: Callable[[Path], Path], model: bool = False) -> pd.DataFrame:
    """Each entry's CSV ``table(artifact)``, one under another; ``model``: with the entry's model as
    the first column (for a stage whose tables do not name it)."""
    tables = [pd.read_csv(table(e.artifact)) for e in entries]
    if model:
        tables = [
            t.assign(model=e.model)[["model", *t.columns]] for t, e in zip(tables, entries, strict=True)
        ]
    return pd.concat(tables, ignore_index=True)


def register(section: Section) -> None:
    """Add ``section`` to the page (once per stage)."""
    if section.stage in SECTIONS:
        raise ValueError(f"stage {section.stage!r} already has a report section")
    SECTIONS[section.stage] = section


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
