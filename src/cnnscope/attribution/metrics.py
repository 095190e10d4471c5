"""How faithful an attribution map is to the model's decision.

* Average Drop and Increase in Confidence (Chattopadhyay et al. 2018): with ``Y`` the target class's
  probability on the image and ``O`` on the image multiplied by its [0, 1] map,
  ``drop = 100/N sum max(0, Y - O) / Y`` (lower is better) and ``increase = 100/N sum 1[O > Y]``.
* Deletion and insertion AUC (Petsiuk et al. 2018): pixels are removed (replaced by the baseline) or
  inserted (into the baseline) in order of decreasing attribution, in ``steps`` equal steps; the area
  under the target-probability curve is low for a good map under deletion, high under insertion.

Both act on the model's (normalised) input, so a removed pixel becomes 0 there: the normalisation
mean, a neutral grey.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _probs(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Target probabilities; ``x`` may stack several copies of the batch, each scored on ``targets``."""
    t = targets.repeat(len(x) // len(targets))
    with torch.no_grad():
        probs = torch.cat([F.softmax(model(x[a : a + batch]), 1) for a in range(0, len(x), batch)])
    return probs.gather(1, t[:, None])[:, 0]


def drop_and_increase(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor
) -> tuple[float, float]:
    """Average Drop (%) and Increase in Confidence (%) of ``maps`` ``(N, H, W)`` in [0, 1]."""
    y = _probs(model, x, targets)
    o = _probs(model, x * maps[:, None], targets)
    drop = 100 * ((y - o).clamp(min=0) / y).mean()
    increase = 100 * (o > y).float().mean()
    return float(drop), float(increase)


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 16,
    baseline: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image deletion and insertion AUCs (``(N,)`` each, the mean of the probability curve)."""
    n, _, h, w = x.shape
    base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    order = maps.flatten(1).argsort(1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1))
    ranks = ranks.view(n, 1, h, w)
    fractions = torch.linspace(0, 1, steps + 1, device=x.device)
    deleted, inserted = [], []
    for f in fractions:
        top = ranks < f * h * w  # the most attributed pixels, fraction f of them
        deleted.append(torch.where(top, base, x))
        inserted.append(torch.where(top, x, base))
    t = targets
    curve_del = _probs(model, torch.cat(deleted), t).view(steps + 1, n)
    curve_ins = _probs(model, torch.cat(inserted), t).view(steps + 1, n)
    return torch.trapezoid(curve_del, fractions, dim=0), torch.trapezoid(curve_ins, fractions, dim=0)
