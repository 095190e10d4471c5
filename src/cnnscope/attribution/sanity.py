"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018): does a map change when the model does?

*Cascading model-parameter randomisation*: the model's parametrised blocks (its top-level children
that hold parameters, e.g. ``fc``, ``conv5``, …, ``conv1``) are re-initialised from the top down, one
more at a time, and each method's map for the same image and class is compared with the trained
model's. A method that explains the model should decorrelate as its weights are destroyed; Adebayo et
al. found that Grad-CAM does and that guided backpropagation stays similar (their errata: "still
invariant to higher layer weights").

*Data randomisation*: the same architecture trained on permuted labels (it can only memorise), whose
maps for the same images and classes are compared with the true model's in the same way.

Similarity of two maps, per image, as the paper (and Quantus' ``ModelParameterRandomisation``, whose
default is Spearman):

* Spearman rank correlation: the Pearson correlation of the maps' ranks, ties given their average rank;
* SSIM (Wang et al. 2004) as ``skimage.metrics.structural_similarity`` computes it for two 2-D images
  of data range 1: 7 x 7 uniform windows, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances, averaged
  over the windows that lie wholly inside the image;
* HOG similarity: the Pearson correlation of the two maps' histograms of oriented gradients (Dalal and
  Triggs 2005) as ``skimage.feature.hog`` computes them with its defaults: central-difference gradients
  (zero on the border), 9 unsigned orientation bins of 20 degrees, 8 x 8-pixel cells (each bin the
  cell's summed gradient magnitude over the cell's area), blocks of 3 x 3 cells moved by one cell and
  L2-Hys normalised (``v / sqrt(|v|^2 + eps^2)``, clipped at 0.2, normalised again; ``eps = 1e-5``).

cnnscope's maps are non-negative (class-activation maps after their ReLU, gradients as the largest
absolute value over colour channels), so the paper's "absolute" and "signed" rank correlations coincide
here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.errors import CnnscopeError

SSIM_WINDOW = 7  # skimage's default window (uniform filter)
SSIM_K1, SSIM_K2 = 0.01, 0.03
HOG_BINS, HOG_CELL, HOG_BLOCK = 9, 8, 3  # skimage.feature.hog's defaults
HOG_EPS, HOG_CLIP = 1e-5, 0.2  # L2-Hys


def blocks(model: nn.Module) -> list[str]:
    """The model's top-level children that hold parameters, from the output down (the order in which
    cascading randomisation destroys them)."""
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())][::-1]


def _reinitialise(module: nn.Module) -> None:
    for m in module.modules():
        if any(True for _ in m.parameters(recurse=False)):
            if not hasattr(m, "reset_parameters"):
                raise CnnscopeError(
                    f"{type(m).__name__} has parameters but no reset_parameters(); cannot randomise it"
                )
            m.reset_parameters()


def cascading(model: nn.Module, seed: int = 0) -> Iterator[tuple[int, str, nn.Module]]:
    """``(k, block, model_k)`` for ``k = 1 … len(blocks)``: one copy of ``model``, randomised one block
    further at each step, so that its top ``k`` blocks (down to ``block``) are re-initialised by their
    own ``reset_parameters()`` under ``seed`` (use it before the next step). The model itself is never
    changed."""
    randomised = copy.deepcopy(model)
    for k, name in enumerate(blocks(model), start=1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + k)
            _reinitialise(getattr(randomised, name))
        yield k, name, randomised


def ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks of a flat array, ties given their average rank (``scipy.stats.rankdata``)."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` x 2 -> ``(N,)`` Spearman rank correlations (``NaN`` where a map is constant)."""
    out = []
    for x, y in zip(a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy(), strict=True):
        rx, ry = ranks(x.ravel()), ranks(y.ravel())
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
        out.append(float((rx * ry).sum() / denom) if denom > 0 else float("nan"))
    return np.asarray(out)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """``(N, H, W)`` x 2 -> ``(N,)`` mean structural similarity (see the module docstring)."""
    x, y = a.detach().cpu().double()[:, None], b.detach().cpu().double()[:, None]
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise CnnscopeError(f"SSIM needs maps of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels")
    mean = lambda t: F.avg_pool2d(t, SSIM_WINDOW, stride=1)  # noqa: E731  (valid windows only)
    n = SSIM_WINDOW * SSIM_WINDOW
    cov = n / (n - 1)  # sample covariance
    ux, uy = mean(x), mean(y)
    vx, vy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).numpy()


def hog(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> ``(N, F)`` histograms of oriented gradients (see the module docstring)."""
    x = maps.detach().cpu().double()
    n, h, w = x.shape
    cells_r, cells_c = h // HOG_CELL, w // HOG_CELL
    if min(cells_r, cells_c) < HOG_BLOCK:
        side = HOG_BLOCK * HOG_CELL
        raise CnnscopeError(f"HOG needs maps of at least {side} x {side} pixels")
    g_row, g_col = torch.zeros_like(x), torch.zeros_like(x)
    g_row[:, 1:-1] = x[:, 2:] - x[:, :-2]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    magnitude = torch.hypot(g_row, g_col)
    orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    width = 180 / HOG_BINS
    bins = [(orientation >= width * i) & (orientation < width * (i + 1)) for i in range(HOG_BINS)]
    per_bin = torch.stack([magnitude * b for b in bins], 1)[..., : cells_r * HOG_CELL, : cells_c * HOG_CELL]
    cells = F.avg_pool2d(per_bin, HOG_CELL)  # (N, bins, cells_r, cells_c): summed over the cell's area
    blocks_ = cells.unfold(2, HOG_BLOCK, 1).unfold(3, HOG_BLOCK, 1)  # (N, bins, br, bc, 3, 3)
    v = blocks_.permute(0, 2, 3, 4, 5, 1).flatten(3)  # per block: rows, columns, then orientation
    v = v / torch.sqrt((v * v).sum(-1, keepdim=True) + HOG_EPS**2)
    v = v.clamp(max=HOG_CLIP)
    v = v / torch.sqrt((v * v).sum(-1, keepdim=True) + HOG_EPS**2)
    return v.flatten(1)


def hog_similarity(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` x 2 -> ``(N,)`` Pearson correlations of the maps' HOG features (``NaN`` where a
    map has no gradient)."""
    ha, hb = hog(a), hog(b)
    ha, hb = ha - ha.mean(1, keepdim=True), hb - hb.mean(1, keepdim=True)
    denom = torch.sqrt((ha * ha).sum(1) * (hb * hb).sum(1))
    r = (ha * hb).sum(1) / denom
    return torch.where(denom > 0, r, torch.full_like(r, float("nan"))).numpy()
