"""Network Dissection scoring: thresholds, the IoU tally in two modes, and per-unit summaries.

For unit ``u`` the binary mask on image ``x`` is ``M_u(x) = up(A_u(x)) > T_u``: the feature map
upsampled bilinearly to mask resolution (pixel centres aligned, ``align_corners=False``, like
NetDissect-Lite's PIL resize) and compared strictly with the unit's threshold ``T_u`` (the level
``1 - quantile`` quantile of the raw, not upsampled, activations; see :mod:`cnnscope.quantile`).

Tallied over the dataset, for label ``l`` whose primary category is ``c = cat(l)``:

* ``I[l, u]`` -- pixels of ``M_u`` labelled ``l``; an image-level label (scene, texture) covers the
  whole image, so it adds ``|M_u(x)|``;
* ``G[l]``    -- pixels labelled ``l``; an image-level label adds the whole image, ``sh * sw``;
* ``A_c(u)``  -- the unit's activated area counted over some images only, which is where the two
  reference implementations differ:

  - ``paper`` (original NetDissect, Bau et al. 2017, the default): images that carry *any* label of
    category ``c`` anywhere, ``A_c(u) = sum_x |M_u(x)| [x has a label of c]``;
  - ``lite`` (NetDissect-Lite): images where the unit's *own mask* covers a pixel of category ``c``
    (or the image has an image-level label of ``c``), which is never more than ``paper``'s, so
    ``lite`` IoUs are greater or equal. For scene and texture the two agree.

``IoU[l, u] = I[l, u] / (A_cat(l)(u) + G[l] - I[l, u])``.

Everything is vectorised torch over a batch of images and all units at once (on the GPU when
present); counts are exact integers held in float64. Activations and masks are read with ``pread``
(:mod:`cnnscope.rows`), so host memory stays at one batch however large the probe set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cnnscope.checkpoint import Checkpoint, resume
from cnnscope.data.packed import PackedDataset, read_labels
from cnnscope.progress import track
from cnnscope.quantile import HistogramQuantile, TopKQuantile
from cnnscope.rows import Rows, read_rows

IOU_MODES = ("paper", "lite")
MEMORY_BUDGET_MB = 2048  # the exact quantile's buffer limit (library and dissect step), else histogram


DEAD_BELOW = 1e-6
"""A unit whose largest activation on the whole probe set stays at or below this is *dead*: no pattern
lifts it, and a ReLU after it passes nothing (Zeiler & Fergus's unit views show such units blank)."""


def dead_units(unit_range: np.ndarray) -> np.ndarray:
    """``bool (C,)``: the dead units, from each unit's ``[min, max]`` over the probe set ``(2, C)``."""
    return np.asarray(unit_range)[1] <= DEAD_BELOW


def batch_elements(max_elements: int, device: torch.device | str) -> int:
    """``max_elements``, or for 0 the measured sweet spot: 4M on the CPU (batches that stay in cache;
    16M was 20% slower), 64M on a GPU (few, large kernels)."""
    if max_elements:
        return max_elements
    return 1 << 26 if torch.device(device).type == "cuda" else 1 << 22


def batch_images(acts: Rows, data: PackedDataset, max_elements: int) -> int:
    """Images per batch (at least 1) such that a batch's largest tensor, its activations or its mask
    pixels, holds at most ``max_elements`` values."""
    per_image = max(int(np.prod(acts.shape[1:])), data.masks.shape[1] * int(np.prod(data.meta["mask_size"])))
    return max(1, max_elements // per_image)


def unit_thresholds(
    acts: Rows,
    quantile: float,
    unit_range: np.ndarray | None = None,
    batch_size: int = 0,
    device: torch.device | str = "cpu",
    memory_budget: int = MEMORY_BUDGET_MB << 20,
    max_elements: int = 0,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[np.ndarray, str, float]:
    """Per-unit level ``1 - quantile`` thresholds of ``acts`` ``(N, C, h, w)``.

    Returns ``(thresholds, method, max_error)``: exact top-k when its buffer fits ``memory_budget``
    bytes (``max_error`` 0), else the histogram method with its worst-case error bound. Batches hold
    ``max_elements`` activations (0: :func:`batch_elements`) unless ``batch_size`` is given;
    ``checkpoint`` saves the running state, and a run given a checkpoint that holds state continues
    from it.
    """
    n, c = acts.shape[0], acts.shape[1]
    per_image = int(np.prod(acts.shape[1:]))
    per_unit = n * (per_image // c)
    level = 1.0 - quantile
    if TopKQuantile.buffer_bytes(c, per_unit, level) <= memory_budget:
        q = TopKQuantile(c, per_unit, level, device=device)
        method = "exact"
    else:
        if unit_range is None:
            raise ValueError("the histogram quantile needs each unit's [min, max] (unit_range)")
        rng = torch.as_tensor(unit_range, device=device)
        q = HistogramQuantile(rng[0], rng[1], per_unit, level)
        method = "histogram"
    max_elements = batch_elements(max_elements, device)
    bs = batch_size or max(1, max_elements // per_image)
    state, start = resume(checkpoint, "thresholds", "image", n)
    if state is not None:
        q.load_state_dict(state["quantile"])
    for a in track(range(start, n, bs), "thresholds", enabled=progress, initial=start // bs):
        x = read_rows(acts, a, a + bs).to(device).float()
        q.add(x.transpose(0, 1).reshape(c, -1))
        if checkpoint and checkpoint.due():
            checkpoint.save({"image": a + bs, "quantile": q.state_dict()})
    err = 0.0 if method == "exact" else float(q.error_bound.max())
    return q.result().cpu().numpy(), method, err


@dataclass
class Tally:
    """Exact counts over the dataset (see the module docstring for the symbols)."""

    both: np.ndarray  # I, (L, C)
    labels: np.ndarray  # G, (L,)
    units_cat_paper: np.ndarray  # A_c(u) paper, (C, n_categories)
    units_cat_lite: np.ndarray  # A_c(u) lite, (C, n_categories)
    label_category: np.ndarray  # primary category index per label number, -1 if none
    categories: list[str]

    def iou(self, mode: str = "paper") -> np.ndarray:
        """``IoU[l, u]``; 0 for label slots that are no label."""
        if mode not in IOU_MODES:
            raise ValueError(f"unknown iou_mode {mode!r}; use one of {', '.join(IOU_MODES)}")
        units = self.units_cat_paper if mode == "paper" else self.units_cat_lite
        valid = self.label_category >= 0
        area = np.zeros_like(self.both)
        area[valid] = units[:, self.label_category[valid]].T
        union = area + self.labels[:, None] - self.both
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(union > 0, self.both / union, 0.0)
        out[~valid] = 0.0
        return out


def unit_masks(maps: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``M_u(x)``: feature maps ``(N, h, w)`` upsampled bilinearly to ``size`` (pixel centres aligned)
    and compared strictly with their units' thresholds ``(N,)``; ``bool (N, *size)``. The one
    definition of a unit's mask, used by the tally and by every figure that shows one."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return up > thresholds.view(-1, 1, 1)


def may_exceed(maps: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """bool: which maps ``(..., h, w)`` can have an upsampled pixel above their thresholds ``(...)``.

    Bilinear interpolation is a convex combination of neighbouring cells, so no pixel of a map whose
    maximum stays below its threshold can exceed it (a relative margin of 1e-5 covers float rounding;
    at threshold 0 none is needed, as a weighted sum of values <= 0 with weights >= 0 stays <= 0).
    """
    margin = 1e-5 * thresholds.abs() + 1e-30
    return maps.flatten(-2).amax(-1) >= thresholds - margin


def active_pixels(
    x: torch.Tensor, thr: torch.Tensor, size: tuple[int, int], max_elements: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(image, unit, pixel)`` indices where the upsampled map exceeds the unit's threshold, in chunks
    of at most ``max_elements`` upsampled pixels.

    Only maps that :func:`may_exceed` their thresholds are upsampled, each exactly as a dense pass would.
    """
    hb, hu = may_exceed(x, thr[None, :]).nonzero(as_tuple=True)
    chunk = max(1, max_elements // (size[0] * size[1]))
    for s in range(0, len(hb), chunk):
        cb, cu = hb[s : s + chunk], hu[s : s + chunk]
        m, p = unit_masks(x[cb, cu], thr[cu], size).flatten(1).nonzero(as_tuple=True)
        yield cb[m], cu[m], p


@dataclass
class _Counts:
    """The running sums of a tally (float64 holds integer counts exactly)."""

    both: torch.Tensor  # (L * C,)
    labels: torch.Tensor  # (L,)
    units_paper: torch.Tensor  # (C, n_categories)
    units_lite: torch.Tensor  # (C, n_categories)

    @classmethod
    def zeros(cls, n_labels: int, c: int, ncat: int, device: torch.device) -> _Counts:
        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        return cls(z(n_labels * c), z(n_labels), z(c, ncat), z(c, ncat))

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in vars(self).items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in vars(self).items():
            v.copy_(state[k])


def tally(
    acts: Rows,
    thresholds: np.ndarray,
    data: PackedDataset,
    batch_size: int = 0,
    device: torch.device | str = "cpu",
    max_elements: int = 0,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> Tally:
    """Tally ``I``, ``G`` and both ``A_c`` over the dataset for one layer's activations.

    Works on the active pixels only (about ``quantile`` of all unit pixels): their labels are
    gathered and counted with ``bincount``, so the cost scales with what the units detect, not with
    units x labelled pixels. A batch holds at most ``max_elements`` activations and mask pixels
    (unless ``batch_size`` is given), and maps are upsampled ``max_elements`` pixels at a time.
    ``checkpoint`` saves the running counts, and a run given one that holds state continues from it.
    """
    device = torch.device(device)
    n, c = acts.shape[:2]
    if n != len(data):
        raise ValueError(f"activations cover {n} images but the dataset has {len(data)}")
    sh, sw = data.meta["mask_size"]
    p = sh * sw
    n_labels = data.n_label_slots
    cats = data.categories
    ncat = len(cats)
    label_cat = torch.as_tensor(data.label_category(), device=device)
    thr = torch.as_tensor(thresholds, dtype=torch.float32, device=device)
    masks = data.stream("masks")
    max_elements = batch_elements(max_elements, device)
    bs = batch_size or batch_images(acts, data, max_elements)

    counts = _Counts.zeros(n_labels, c, ncat, device)
    both = counts.both.view(n_labels, c)
    state, start = resume(checkpoint, "tally", "image", n)
    if state is not None:
        counts.load(state["counts"])
    for a in track(range(start, n, bs), "tally", enabled=progress, initial=start // bs):
        # Widened on the device: the host holds only the stored dtypes (float16, uint16).
        x = read_rows(acts, a, a + bs).to(device).float()
        b = len(x)
        pix = read_labels(masks, a, a + bs, device).flatten(2)  # (B, K, P) label numbers, 0 = unlabelled
        pcat = torch.where(pix > 0, label_cat[pix], -1)  # (B, K, P) their categories
        sca = torch.from_numpy(data.scalars[a : a + bs].astype(np.int64)).to(device)  # (B, S)

        # |M_u| per (image, unit); I for pixel labels (the labels under each active pixel, counted
        # per (label, unit)); and which categories each unit's mask touches (lite).
        area = torch.zeros(b * c, dtype=torch.float64, device=device)
        inside = torch.zeros(b * c * ncat, dtype=torch.bool, device=device)
        for ab, au, ap in active_pixels(x, thr, (sh, sw), max_elements):
            area += torch.bincount(ab * c + au, minlength=b * c).double()
            under = pix[ab, :, ap]  # (n_active, K)
            hit = under > 0
            counts.both += torch.bincount((under * c + au[:, None])[hit], minlength=n_labels * c).double()
            touched = pcat[ab, :, ap]  # (n_active, K) categories under each active pixel
            key = ((ab * c + au) * ncat)[:, None] + touched
            inside[key[touched >= 0]] = True
        area = area.view(b, c)
        counts.labels += torch.bincount(pix[pix > 0], minlength=n_labels).double()
        # Image-level labels cover the whole image: I += |M_u|, G += sh * sw.
        sb, si = (sca > 0).nonzero(as_tuple=True)
        slab = sca[sb, si]
        both.index_add_(0, slab, area[sb])
        counts.labels += torch.bincount(slab, minlength=n_labels).double() * p

        # Which categories each image carries (paper) and each unit's mask touches (lite).
        scalar_cat = torch.zeros(b, ncat, dtype=torch.bool, device=device)
        scalar_cat[sb, label_cat[slab]] = True
        present = scalar_cat.clone()
        present_b, present_c = (pcat >= 0).nonzero(as_tuple=True)[0], pcat[pcat >= 0]
        present[present_b, present_c] = True
        counts.units_paper += area.T @ present.double()
        inside = inside.view(b, c, ncat) | scalar_cat[:, None, :]
        counts.units_lite += torch.einsum("bu,buc->uc", area, inside.double())
        if checkpoint and checkpoint.due():
            checkpoint.save({"image": a + b, "counts": counts.state()})

    return Tally(
        both=both.cpu().numpy(),
        labels=counts.labels.cpu().numpy(),
        units_cat_paper=counts.units_paper.cpu().numpy(),
        units_cat_lite=counts.units_lite.cpu().numpy(),
        label_category=label_cat.cpu().numpy(),
        categories=list(cats),
    )


def summarize(
    iou: np.ndarray,
    label_names: list[str],
    label_category: np.ndarray,
    categories: list[str],
    detector_iou: float = 0.04,
) -> pd.DataFrame:
    """One row per unit: best label overall and per category, their IoUs, and detector flags."""
    n_units = iou.shape[1]
    out = pd.DataFrame({"unit": np.arange(n_units)})
    best_l = iou.argmax(0)
    out["label"] = [label_names[i] for i in best_l]
    out["category"] = [categories[label_category[i]] if label_category[i] >= 0 else "-" for i in best_l]
    out["iou"] = iou.max(0)
    out["detector"] = out["iou"] > detector_iou
    for ci, cat in enumerate(categories):
        members = np.flatnonzero(label_category == ci)
        if len(members) == 0:
            continue
        sub = iou[members]
        out[f"{cat}_label"] = [label_names[members[i]] for i in sub.argmax(0)]
        out[f"{cat}_iou"] = sub.max(0)
    return out


def unique_detectors(units: pd.DataFrame, categories: list[str], detector_iou: float) -> pd.DataFrame:
    """Unique detectors per category under both counting rules.

    * ``top_label``: each unit counts once, for its single best label (the paper's figures);
    * ``per_category``: a unit counts in every category where its best label in that category
      exceeds the IoU threshold.

    ``detectors`` is the number of units, ``unique`` the number of distinct labels among them.
    """
    rows = []
    det = units[units["detector"]]
    for cat in categories:
        top = det[det["category"] == cat]
        rows.append(
            {"rule": "top_label", "category": cat, "detectors": len(top), "unique": top["label"].nunique()}
        )
        if f"{cat}_iou" in units:
            pc = units[units[f"{cat}_iou"] > detector_iou]
            rows.append(
                {
                    "rule": "per_category",
                    "category": cat,
                    "detectors": len(pc),
                    "unique": pc[f"{cat}_label"].nunique(),
                }
            )
        else:
            rows.append({"rule": "per_category", "category": cat, "detectors": 0, "unique": 0})
    return pd.DataFrame(rows)
