"""A layer in a random orthogonal basis: how much of its interpretability is axis-aligned.

Bau et al. (2017, §3.2) ask whether interpretable units are an artefact of any basis or whether the
network's own axes matter: they dissect the layer after a random rotation ``A' = Q A`` of its units
(``Q`` drawn uniformly from the orthogonal group), and the rotated units are far less interpretable
(conv5 of AlexNet: 72 unique detectors fall to 14). The rotated "units" are linear combinations of
all the real ones, so this is the counterpart of Net2Vec's learned combinations (Fong & Vedaldi
2018): random mixtures lose what learned ones can gain.

``Q`` comes from the QR decomposition of a seeded Gaussian matrix with the signs of ``R``'s diagonal
folded in, which makes it Haar-distributed (Mezzadri 2007); the same seed gives the same ``Q``.
Rotated activations are computed batch by batch as they are read (:class:`RotatedRows`), so the
dissection's thresholds and tally run on them unchanged and nothing rotated is stored.
"""

from __future__ import annotations

import numpy as np

from cnnscope.rows import Rows


def random_rotation(units: int, seed: int) -> np.ndarray:
    """A Haar-random ``(units, units)`` orthogonal matrix ``Q`` (``Q Q^T = I``), float64, from ``seed``."""
    gauss = np.random.default_rng(seed).standard_normal((units, units))
    q, r = np.linalg.qr(gauss)
    return q * np.sign(np.diag(r))[None, :]


def rotated_range(unit_range: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Bounds ``(2, C)`` on the rotated units, from each real unit's ``[min, max]``: unit ``i`` of
    ``Q a`` lies within ``sum_j`` of ``Q_ij`` times the end of ``[min_j, max_j]`` that makes it
    smallest (largest). Loose, but valid, as the histogram quantile needs."""
    lo, hi = unit_range.astype(np.float64)
    pos, neg = np.clip(rotation, 0, None), np.clip(rotation, None, 0)
    return np.stack([pos @ lo + neg @ hi, pos @ hi + neg @ lo]).astype(np.float32)


class RotatedRows:
    """``rows`` ``(N, C, h, w)`` seen in the rotated basis: ``rows[a:b]`` is ``Q`` applied to the
    channels of the real rows (float32), for the streaming loops that read :data:`~cnnscope.rows.Rows`."""

    def __init__(self, rows: Rows, rotation: np.ndarray) -> None:
        if rotation.shape != (rows.shape[1], rows.shape[1]):
            raise ValueError(f"a rotation of {rows.shape[1]} units must be square, got {rotation.shape}")
        self.rows, self.rotation = rows, rotation.astype(np.float32)
        self.shape = rows.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        block = np.asarray(self.rows[index], dtype=np.float32)
        return np.einsum("ij,nj...->ni...", self.rotation, block, optimize=True)
