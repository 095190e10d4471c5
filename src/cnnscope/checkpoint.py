"""Periodic checkpoints of a streaming loop, so a killed job resumes rather than restarts.

A loop over the probe set (thresholds, the IoU tally) saves its running state every ``every_s``
seconds with :meth:`Checkpoint.save` (atomically: a kill mid-save leaves the previous checkpoint) and,
when started again, continues from :meth:`Checkpoint.load`. The state is what the loop accumulates,
saved exactly (float64 stays float64), so a resumed run adds the same numbers in the same order and
ends with the same bits as one that was never killed.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from cnnscope.io import atomic_file, save_torch

log = logging.getLogger(__name__)
CHECKPOINT_S = 30.0  # seconds between checkpoints, by default


class Checkpoint:
    """One loop's checkpoint file; ``every_s=0`` saves at every opportunity (tests)."""

    def __init__(self, path: str | os.PathLike[str], every_s: float = CHECKPOINT_S) -> None:
        self.path, self.every_s = Path(path), every_s
        self._last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The last saved state, or None when there is none or it cannot be read (damaged by hand or
        by the disk: the loop then starts over, with a log line, rather than failing on every rerun)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            log.info("%s is unreadable (%s); starting that loop over", self.path, e)
            return None
        if not isinstance(state, dict):
            log.info("%s holds no checkpoint state; starting that loop over", self.path)
            return None
        return state

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        with atomic_file(self.path) as tmp:
            save_torch(state, tmp)
        self._last = time.monotonic()


def resume(
    checkpoint: Checkpoint | None, what: str, key: str, total: int
) -> tuple[dict[str, Any] | None, int]:
    """``(state, where to start)`` for a loop of ``total`` ``key``s: the saved state and its position
    (logged), or ``(None, 0)`` without a checkpoint or saved state."""
    state = checkpoint.load() if checkpoint else None
    if state is None:
        return None, 0
    log.info("%s: resuming at %s %d of %d", what, key, state[key], total)
    return state, state[key]
