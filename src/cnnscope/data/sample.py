"""Choosing a few items of a dataset the same way everywhere."""

from __future__ import annotations

import numpy as np


def evenly_spread(n: int, k: int) -> np.ndarray:
    """The indices of ``min(k, n)`` of ``n`` items spread evenly from the first to the last (sorted,
    no repeats; none when ``k`` or ``n`` is 0): a sample that covers a dataset stored in class order,
    the same on every run."""
    if n <= 0 or k <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))
