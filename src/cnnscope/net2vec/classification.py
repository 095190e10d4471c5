"""Classification embeddings: does the image contain the concept, from its averaged activations.

Per concept, logistic regression on each image's spatially averaged activations (Fong & Vedaldi 2018,
section 3.2), standardised by the train split's per-unit mean and standard deviation (a unit that is
constant keeps scale 1). Images count only where they carry the concept's category (:mod:`.concepts`),
and the loss is balanced as for segmentation: positives weighted ``1 - alpha_l``, negatives
``alpha_l``, ``alpha_l`` the concept's share of positive training images. All concepts train at once,
full batch, with Adam from zeros (deterministic).

The single-unit baseline is, per concept, the unit whose averaged activation ranks the train images
best (highest train average precision), scored on val like the combination.

Average precision is scikit-learn's (``average_precision_score``): the sum over distinct score
thresholds of recall gained times precision there, so tied scores count as one threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnnscope.bounds import bounded, positive
from cnnscope.net2vec.concepts import ConceptStats
from cnnscope.optim import Optimizer


@dataclass
class ClassificationParams:
    """How the classification embeddings are trained (the net2vec step's ``classification`` config)."""

    steps: int = positive(300)  # full-batch Adam steps
    lr: float = bounded(0.05, 0, open_lo=True)
    weight_decay: float = bounded(0.0, 0)
    balance: bool = True


def unit_scales(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``(K,)`` each unit's standard deviation over the train rows of ``features`` ``(N, K)``, 1 where the
    unit is constant: the scale the embeddings are learned in. An embedding ``w`` of standardised
    features is the direction ``w / scale`` of the averaged activations themselves (TCAV compares it
    with its CAVs there)."""
    sd = features[train].std(0)
    return np.where(sd > 0, sd, 1)


def standardize(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``features`` ``(N, K)`` minus the train rows' mean, over their :func:`unit_scales`."""
    return ((features - features[train].mean(0)) / unit_scales(features, train)).astype(np.float32)


def fit_weights(
    x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, params: ClassificationParams
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(L, K)`` and biases ``(L,)`` from train features ``(N, K)``, labels and the images
    of each concept ``(N, L)`` (bool)."""
    yf, vf = y.float(), valid.float()
    alpha = (yf * vf).sum(0) / vf.sum(0).clamp(min=1)
    pos, neg = (1 - alpha, alpha) if params.balance else (torch.ones_like(alpha), torch.ones_like(alpha))
    weight = torch.zeros(y.shape[1], x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(y.shape[1], device=x.device, requires_grad=True)
    opt = Optimizer([weight, bias], "adam", params.lr, weight_decay=params.weight_decay)
    for _ in range(params.steps):
        z = x @ weight.T + bias
        per = yf * pos * F.softplus(-z) + (1 - yf) * neg * F.softplus(z)
        loss = (per * vf).sum() / len(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if not torch.isfinite(loss):
        raise FloatingPointError("the classification loss is not finite")
    return weight.detach().cpu().numpy(), bias.detach().cpu().numpy()


def _ap_sorted(scores: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Average precision per column of rows already sorted by descending ``scores`` (``(N, M)``, or
    ``(N, 1)`` shared by every column); rows not ``valid`` are left out. Counts are integer cumulative
    sums (exact at any N); only the precisions are floating point (float64)."""
    n = y.shape[0]
    hit = y & valid
    tp = hit.cumsum(0, dtype=torch.int32)  # exact below 2**31 rows
    seen = valid.cumsum(0, dtype=torch.int32)
    # Precision at the last row of each run of tied scores: every row of the run gets it.
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[:-1] != scores[1:]
    pos = torch.arange(n, device=scores.device).view(-1, 1).expand_as(last)
    end = torch.where(last, pos, n).flip(0).cummin(0).values.flip(0)
    end = end.expand(n, y.shape[1])
    precision = tp.gather(0, end).double() / seen.gather(0, end).clamp(min=1)
    return (hit * precision).sum(0) / hit.sum(0)


def average_precision(
    scores: np.ndarray, y: np.ndarray, valid: np.ndarray | None = None, device: torch.device | None = None
) -> np.ndarray:
    """AP of each column of ``scores`` ``(N, M)`` for labels ``y`` over the ``valid`` rows (NaN for a
    column without a positive), computed on ``device`` (the CPU by default)."""
    s = torch.as_tensor(scores, dtype=torch.float64, device=device)
    yt = torch.as_tensor(y, dtype=torch.bool, device=device)
    vt = torch.ones_like(yt) if valid is None else torch.as_tensor(valid, dtype=torch.bool, device=device)
    order = torch.sort(s, dim=0, descending=True, stable=True).indices
    return _ap_sorted(s.gather(0, order), yt.gather(0, order), vt.gather(0, order)).cpu().numpy()


def best_units(
    x: np.ndarray, y: np.ndarray, valid: np.ndarray, device: torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per concept, the unit (column of ``x`` ``(N, K)``) with the highest AP for ``y`` ``(N, L)`` over
    the ``valid`` rows, and that AP. One sort per unit serves every concept; each unit costs a few
    passes over ``(N, L)``, so on a GPU the whole search is seconds at full Broden size (on a CPU it
    is the step's slowest part there: minutes)."""
    xt = torch.as_tensor(x, dtype=torch.float64, device=device)
    yt = torch.as_tensor(y, dtype=torch.bool, device=device)
    vt = torch.as_tensor(valid, dtype=torch.bool, device=device)
    best = torch.full((y.shape[1],), -1.0, dtype=torch.float64, device=xt.device)
    unit = torch.zeros(y.shape[1], dtype=torch.long, device=xt.device)
    for u in range(x.shape[1]):
        order = torch.sort(xt[:, u], descending=True, stable=True).indices
        ap = _ap_sorted(xt[order, u : u + 1], yt[order], vt[order])
        better = ap > best
        best = torch.where(better, ap, best)
        unit[better] = u
    return unit.cpu().numpy(), best.cpu().numpy()


def fit(stats: ConceptStats, labels: np.ndarray, params: ClassificationParams, device: torch.device) -> dict:
    """Classification embeddings of ``labels`` trained on the train split, and on val the AP of each
    and of its best single unit (chosen on train): ``labels``, ``weight``, ``bias``, ``scale`` (the
    units' :func:`unit_scales`), ``unit``, ``ap_single``, ``ap_net2vec``."""
    train, val = stats.split == "train", stats.split == "val"
    x = standardize(stats.means, train)
    y, valid = stats.present[:, labels], stats.universe(labels)
    weight, bias = fit_weights(
        torch.as_tensor(x[train], device=device),
        torch.as_tensor(y[train], device=device),
        torch.as_tensor(valid[train], device=device),
        params,
    )
    units, _ = best_units(stats.means[train], y[train], valid[train], device)
    return {
        "labels": labels,
        "weight": weight,
        "bias": bias,
        "scale": unit_scales(stats.means, train),
        "unit": units,
        "ap_single": average_precision(stats.means[val][:, units], y[val], valid[val], device),
        "ap_net2vec": average_precision(x[val] @ weight.T + bias, y[val], valid[val], device),
    }
