"""Progress reporting that suits both a terminal and a log file.

Every step runs with its stdout/stderr redirected into a log file, where tqdm's carriage-return bar
updates turn a 1,000-step training run into tens of kilobytes of unreadable noise. So a bar is drawn
only when stderr is a terminal (a person watching); otherwise progress becomes a few plain log lines
on the ``cnnscope`` logger (which the steps' Hydra logging config sends to stdout, i.e. the log):
one at every :data:`LOG_STEP_PERCENT` of the total, or after :data:`LOG_INTERVAL_S` seconds without
one if that comes first, and one final line. Disabled progress writes nothing at all.

:func:`track` wraps an iterable; :class:`Progress` takes manual :meth:`Progress.update` calls (a
download counts bytes). Both share the one implementation in :class:`Progress`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

log = logging.getLogger("cnnscope")

LOG_INTERVAL_S = 30.0
"""Off a terminal, the longest wait between two progress lines (seconds), so a slow loop still shows
it is alive."""
LOG_STEP_PERCENT = 10
"""Off a terminal, a line is written each time this percentage of a known total is passed."""


def _on_terminal() -> bool:
    """Whether stderr (tqdm's output) is a terminal; a redirected or missing stderr is not."""
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _amount(n: float, unit: str, scale: bool) -> str:
    """``n`` as a log line writes it: ``300`` plain, or ``12.3 MB`` with a decimal SI prefix and the unit."""
    if not scale:
        return f"{n:.1f}" if isinstance(n, float) else str(n)
    power = 0
    while abs(n) >= 1000 and power < 5:
        n /= 1000
        power += 1
    return f"{n:.1f} {' kMGTP'[power]}{unit}" if power else f"{n:.0f} {unit}"


class Progress:
    """Progress of one loop, counted by manual :meth:`update` calls; use it as a context manager.

    On a terminal it is a tqdm bar with the same arguments; off one it writes log lines (see the module
    docstring); with ``enabled=False`` it does nothing. ``initial`` is work already done by an earlier
    (resumed) run: it counts towards the total, but not towards the rate, which measures this run.
    ``unit_scale`` writes counts with SI prefixes (for bytes, with ``unit="B"``).
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        enabled: bool = True,
        initial: int = 0,
        unit: str = "it",
        unit_scale: bool = False,
    ) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.unit_scale = unit_scale
        self.initial = initial
        self.n = initial
        self._enabled = enabled
        self._closed = False
        self._bar: tqdm[Any] | None = None
        if enabled and _on_terminal():
            self._bar = tqdm(desc=desc, total=total, initial=initial, unit=unit, unit_scale=unit_scale)
        self._start = self._last = time.monotonic()
        self._bucket = self._bucket_of(initial)

    def _bucket_of(self, n: int) -> int:
        """How many whole :data:`LOG_STEP_PERCENT` steps of the total ``n`` has passed (0 without one)."""
        if not self.total or self.total <= 0:
            return 0
        return int(n * 100 // (self.total * LOG_STEP_PERCENT))

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done, and draw or log the progress when it is due."""
        if not self._enabled or self._closed:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.total is not None and self.n >= self.total:
            return  # the final line, written by close(), says it
        now = time.monotonic()
        bucket = self._bucket_of(self.n)
        if bucket > self._bucket or now - self._last >= LOG_INTERVAL_S:
            self._log(now)
        self._bucket = bucket

    def _log(self, now: float) -> None:
        """Write one progress line, e.g. ``train convnet: 300/1000 (30%) 12.3 s, 24.4 it/s``."""
        self._last = now
        elapsed = now - self._start
        done = _amount(self.n, self.unit, self.unit_scale)
        if self.total:
            total = _amount(self.total, self.unit, self.unit_scale)
            count = f"{done}/{total} ({100 * self.n // self.total}%)"
        else:
            count = done if self.unit_scale else f"{done} {self.unit}"
        rate = ""
        if elapsed > 0:
            speed = (self.n - self.initial) / elapsed
            rate = f", {_amount(speed, self.unit, True) if self.unit_scale else f'{speed:.1f} {self.unit}'}/s"
        log.info("%s: %s %.1f s%s", self.desc, count, elapsed, rate)

    def close(self) -> None:
        """Finish: close the bar, or write the final log line; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._enabled:
            self._log(time.monotonic())

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def track(
    iterable: Iterable[T],
    desc: str,
    enabled: bool = True,
    total: int | None = None,
    initial: int = 0,
    unit: str = "it",
) -> Iterator[T]:
    """Iterate over ``iterable`` reporting progress as :class:`Progress` does, one unit per item.

    ``total`` defaults to ``initial + len(iterable)`` where the iterable has a length: a resumed loop
    passes only the rest of its work (``range(start, n)``) with ``initial`` counting what is done, and
    the total must still be the whole (tqdm's own default, ``len(iterable)``, would end over 100%).
    Disabled, the iterable is returned as is, so the loop costs nothing extra.
    """
    if not enabled:
        return iter(iterable)
    if total is None:
        try:
            total = initial + len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return _tracked(iterable, Progress(desc, total, initial=initial, unit=unit))


def _tracked(iterable: Iterable[T], bar: Progress) -> Iterator[T]:
    """Yield the items, counting each once the loop body is done with it; close the bar at the end."""
    with bar:
        for item in iterable:
            yield item
            bar.update()
