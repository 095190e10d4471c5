"""Per-unit upper quantiles of activations, streamed batch by batch on the device.

Network Dissection thresholds each unit at the level ``1 - q`` quantile (``q = 0.005``) of its
activations over all spatial positions of all images. Both reference implementations approximate it
with a randomised KLL sketch; cnnscope computes it **exactly**, with numpy's default ("linear")
interpolation, whenever a per-unit buffer of the ``k`` largest values fits the memory budget:

* :class:`TopKQuantile` -- exact. The level-``1-q`` quantile of ``n`` values only needs the
  ``k = n - floor((1-q)(n-1))`` largest, so a streaming top-k merge keeps ``units x k`` values.
  For ResNet-18 ``layer4`` on full Broden that is 512 x 15,513 floats (32 MB).
* :class:`HistogramQuantile` -- bounded error, for when ``units x k`` is too large. A per-unit
  histogram of ``bins`` equal bins over the unit's known ``[min, max]``; the estimate interpolates
  within the bin holding the target rank, so ``|estimate - exact| <= (max - min) / bins``.

Both follow the streaming-statistics shape: ``add(batch)``, ``result()``, ``state_dict()`` and
``load_state_dict()`` (a killed job can checkpoint and resume).
"""

from __future__ import annotations

import math

import torch


def _position(n: int, level: float) -> float:
    """0-based fractional rank of the ``level`` quantile among ``n`` sorted values (numpy linear)."""
    return level * (n - 1)


class TopKQuantile:
    """Exact per-unit ``level`` quantile of exactly ``n`` values per unit, streamed in batches."""

    def __init__(self, n_units: int, n: int, level: float, device: torch.device | str = "cpu"):
        if not 0.0 <= level <= 1.0 or n < 1:
            raise ValueError(f"need 0 <= level <= 1 and n >= 1, got level={level}, n={n}")
        self.n_units, self.n, self.level = n_units, n, level
        self.k = n - math.floor(_position(n, level))
        self.buf = torch.empty(n_units, 0, device=device)
        self.seen = 0

    @staticmethod
    def buffer_bytes(n_units: int, n: int, level: float) -> int:
        return 4 * n_units * (n - math.floor(_position(n, level)))

    def add(self, values: torch.Tensor) -> None:
        """``values``: ``(n_units, m)``; merged into the top-k buffer (re-trimmed when it doubles)."""
        self.seen += values.shape[1]
        if self.seen > self.n:
            raise ValueError(f"TopKQuantile got {self.seen} values per unit, expected {self.n}")
        self.buf = torch.cat([self.buf, values.to(self.buf.device, torch.float32)], dim=1)
        if self.buf.shape[1] >= 2 * self.k:
            self.buf = self.buf.topk(self.k, dim=1).values

    def result(self) -> torch.Tensor:
        if self.seen != self.n:
            raise ValueError(f"TopKQuantile saw {self.seen} of {self.n} values per unit")
        top = self.buf.topk(min(self.k, self.buf.shape[1]), dim=1).values  # descending
        pos = _position(self.n, self.level)
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo = top[:, self.n - 1 - lo]
        v_hi = top[:, self.n - 1 - hi]
        return v_lo + (pos - lo) * (v_hi - v_lo)

    def state_dict(self) -> dict:
        return {"buf": self.buf.cpu(), "seen": self.seen, "n": self.n, "level": self.level}

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["level"]) != (self.n, self.level):
            raise ValueError("TopKQuantile state was saved for another n or level")
        self.buf, self.seen = state["buf"].to(self.buf.device), state["seen"]


class HistogramQuantile:
    """Per-unit quantile from equal-width histograms over known ``[lo, hi]``; error <= bin width."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, n: int, level: float, bins: int = 8192) -> None:
        self.lo = lo.float()
        self.hi = torch.maximum(hi.float(), self.lo + 1e-12)
        self.n, self.level, self.bins = n, level, bins
        self.counts = torch.zeros(len(lo), bins, dtype=torch.float64, device=lo.device)
        self.seen = 0

    @property
    def error_bound(self) -> torch.Tensor:
        """Largest possible ``|estimate - exact|`` per unit: one bin width."""
        return (self.hi - self.lo) / self.bins

    def add(self, values: torch.Tensor) -> None:
        values = values.to(self.lo.device, torch.float32)
        self.seen += values.shape[1]
        scaled = (values - self.lo[:, None]) / (self.hi - self.lo)[:, None] * self.bins
        idx = scaled.floor().clamp_(0, self.bins - 1).long()
        self.counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))

    def _at_rank(self, cum: torch.Tensor, r: int) -> torch.Tensor:
        """Estimate of the value of 0-based rank ``r``: inside the bin that holds that rank."""
        target = torch.full((len(cum), 1), float(r), dtype=cum.dtype, device=cum.device)
        b = torch.searchsorted(cum, target, right=True).clamp_(max=self.bins - 1).squeeze(1)
        before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
        inbin = self.counts.gather(1, b[:, None]).squeeze(1).clamp(min=1)
        frac = ((r - before + 0.5) / inbin).clamp(0, 1).float()
        return self.lo + (b.float() + frac) * (self.hi - self.lo) / self.bins

    def result(self) -> torch.Tensor:
        """Linear interpolation between the estimates of the two ranks around the target.

        Each rank's estimate lies in the same bin as its true value, so the interpolated estimate
        is within one bin width of the exact (interpolated) quantile.
        """
        if self.seen != self.n:
            raise ValueError(f"HistogramQuantile saw {self.seen} of {self.n} values per unit")
        cum = self.counts.cumsum(1)
        pos = _position(self.n, self.level)
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo, v_hi = self._at_rank(cum, lo), self._at_rank(cum, hi)
        return v_lo + (pos - lo) * (v_hi - v_lo)

    def state_dict(self) -> dict:
        return {"counts": self.counts.cpu(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.counts, self.seen = state["counts"].to(self.counts.device), state["seen"]
