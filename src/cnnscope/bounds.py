"""Typed, bounded settings: the one place a setting's allowed values are written.

Every config dataclass (the library's :class:`~cnnscope.models.registry.ModelSpec`,
:class:`~cnnscope.training.TrainParams`, :class:`~cnnscope.data.synthworld.WorldSpec` and the step
schemas) declares an enumerated setting as a :func:`choice` Enum and a numeric one with
:func:`bounded`. OmegaConf refuses a value outside an Enum and lists the valid ones; :func:`check`
refuses a number outside its range, naming the range. Both happen before a step does any work, and
the workflow runs the same checks on every job's config while it builds the DAG, so a bad value in a
study fails a dry run instead of a job an hour in.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cnnscope.errors import CnnscopeError


def choice(name: str, values: Iterable[str]) -> type[StrEnum]:
    """An Enum of ``values`` (each member's name is its value), for a setting that takes one of them.

    A ``StrEnum``: a member is the string it names (equal to it, formatted as it), so a typed config's
    setting passes to the library, a path or a message as the plain value."""
    return StrEnum(name, {v: v for v in values})


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``lo``/``hi`` bounds (``None``: unbounded), each open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))


def bounded(
    default: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    open_lo: bool = False,
    open_hi: bool = False,
    pattern: str | None = None,
    multiple_of: int | None = None,
) -> Any:
    """A dataclass field with ``default`` whose value must lie in the range (or match ``pattern``, or be
    a multiple of ``multiple_of``)."""
    meta: dict[str, Any] = {}
    if multiple_of is not None:
        meta["multiple_of"] = multiple_of
    if lo is not None or hi is not None:
        meta["range"] = Range(lo, hi, open_lo, open_hi)
    if pattern is not None:
        meta["pattern"] = pattern
    return field(default=default, metadata=meta)


def positive(default: Any) -> Any:
    """A count or size of at least 1."""
    return bounded(default, 1)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside an annotation such as ``X``, ``X | None`` or ``list[X]``."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _dataclass_of(arg)
        if found is not None:
            return found
    return None


def check_params(params: Any) -> None:
    """Refuse a library settings object (a dataclass built in code, not composed from a config) with a
    value outside its field's range or pattern, or outside its field's :func:`choice`."""
    check(type(params), dataclasses.asdict(params))


def check(schema: type, values: dict[str, Any], where: str = "") -> None:
    """Refuse (``CnnscopeError``) any value of ``values`` outside its field's range, pattern or
    :func:`choice`, and any non-finite number, recursing into nested dataclasses. ``where`` prefixes
    the key in the message."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        value, key = values[f.name], f"{where}{f.name}"
        kind = hints[f.name]
        if isinstance(kind, type) and issubclass(kind, StrEnum) and value not in set(kind):
            raise CnnscopeError(f"{key}={value!r} is not valid: it must be one of {', '.join(kind)}")
        nested = _dataclass_of(hints[f.name])
        if nested is not None and isinstance(value, dict):
            check(nested, value, f"{key}.")
        elif nested is not None and isinstance(value, list):
            for i, item in enumerate(value):
                check(nested, item, f"{key}[{i}].")
        rng, pattern, multiple = (f.metadata.get(k) for k in ("range", "pattern", "multiple_of"))
        numbers = value if isinstance(value, list) else [value]
        for v in numbers:
            if isinstance(v, float) and not math.isfinite(v):
                raise CnnscopeError(f"{key}={v} is not a finite number")
            if rng is not None and isinstance(v, int | float) and not rng.holds(v):
                raise CnnscopeError(f"{key}={v} is out of range: it must lie in {rng}")
            if multiple is not None and isinstance(v, int) and v % multiple:
                raise CnnscopeError(f"{key}={v} is not valid: it must be a multiple of {multiple}")
            if pattern is not None and isinstance(v, str) and not re.fullmatch(pattern, v):
                raise CnnscopeError(f"{key}={v!r} is not valid: it must match {pattern}")
