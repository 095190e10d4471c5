"""Do the maps point at the object? Localisation scores against object masks known by construction.

* **Pointing game** (Zhang et al., ECCV 2016, "Top-down neural attention by excitation backprop"), as
  TorchRay's ``benchmark/pointing_game.py`` defines it: the map's maximiser (the first in row-major
  order) is a hit when some object pixel lies strictly within ``tolerance`` pixels of it
  (``du² + dv² < tolerance²``); 15 px at 224 px, here scaled to the image size. Accuracy is reported
  pooled over images and, as TorchRay's ``accuracy``, as the mean of the per-class accuracies.
  Baseline: the image's centre pixel ``(W // 2, H // 2)`` as the point, as TorchRay reports it.
* **Energy-based pointing game** (Wang et al., CVPR-W 2020, Score-CAM §4.2): the share of the map's
  mass inside the object, ``Σ_{mask} L / Σ L``. Score-CAM measured it inside the object's bounding box;
  the world knows the object's exact mask too, so both are given (``energy_box``, ``energy_mask``).
  Baseline: a uniform map, whose share is the region's share of the image.

The world's originals have one object whose class the map explains. A Broden probe set has object
masks too (its ``object`` category), but no map from a model's classes to its labels: on probe images
(:func:`probe_object_masks`) the object is every pixel of any labelled object, and the map explains the
model's top-1 class. That asks less (the map need only find some object, and an image of two objects
doubles the target), so it is reported apart, as its own placement.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cnnscope.data.packed import PackedDataset, read_labels

TOLERANCE_224 = 15.0  # the pointing game's tolerance in pixels at 224 x 224 (Zhang et al.; TorchRay)
CENTRE = "centre point / uniform map"  # the baseline's row in the tables
OBJECT_CATEGORY = "object"  # Broden's category of object masks
PROBE_PLACEMENT = "probe set"  # the tables' placement of the probe images' objects


def scaled_tolerance(size: int) -> float:
    """The pointing game's 15 px at 224 px, scaled to a ``size``-pixel image."""
    return TOLERANCE_224 * size / 224


def probe_object_masks(data: PackedDataset, idx: np.ndarray, size: tuple[int, int]) -> torch.Tensor | None:
    """``bool (len(idx), H, W)``: the pixels of the probe images ``idx`` labelled with any object
    (Broden's ``object`` category, in any of the mask layers), from the half-resolution masks by
    nearest-neighbour upsampling to ``size``; ``None`` if the probe set has no object category."""
    if OBJECT_CATEGORY not in data.categories:
        return None
    objects = torch.from_numpy(data.label_category() == data.categories.index(OBJECT_CATEGORY))
    labels = read_labels(np.asarray(data.masks[idx]), 0, len(idx), torch.device("cpu"))
    inside = objects[labels].any(1)  # (n, sh, sw)
    return F.interpolate(inside[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


def maximisers(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> ``(N, 2)`` the ``(u, v)`` (column, row) of each map's first maximum."""
    flat = maps.flatten(1).argmax(1)
    w = maps.shape[-1]
    return torch.stack([flat % w, flat // w], dim=1)


def pointing_hits(points: torch.Tensor, masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """``(N, 2)`` points ``(u, v)`` and ``(N, H, W)`` boolean masks -> ``(N,)`` hits: some mask pixel
    lies strictly within ``tolerance`` of the point."""
    h, w = masks.shape[-2:]
    v = torch.arange(h, dtype=torch.float64)[None, :, None] - points[:, 1, None, None].double()
    u = torch.arange(w, dtype=torch.float64)[None, None, :] - points[:, 0, None, None].double()
    accept = v**2 + u**2 < tolerance**2
    return (masks.bool() & accept).flatten(1).any(1)


def boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` masks -> their bounding boxes as masks (every pixel between the extreme rows and
    columns of the object; an empty mask stays empty)."""
    rows, cols = masks.bool().any(2), masks.bool().any(1)

    def span(x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(x.shape[1])
        first = torch.where(x, idx, x.shape[1]).amin(1, keepdim=True)
        last = torch.where(x, idx, -1).amax(1, keepdim=True)
        return (idx >= first) & (idx <= last)

    return span(rows)[:, :, None] & span(cols)[:, None, :]


def energy_share(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``(N,)``: each map's mass inside its region over its total mass (``NaN`` for an all-zero map)."""
    m = maps.double().clamp(min=0)
    total = m.flatten(1).sum(1)
    inside = (m * regions.double()).flatten(1).sum(1)
    return torch.where(total > 0, inside / total, torch.full_like(total, float("nan")))


def _class_mean(hits: torch.Tensor, labels: torch.Tensor) -> float:
    """TorchRay's accuracy: the mean over classes present of each class's hit rate."""
    return float(np.mean([hits[labels == c].double().mean().item() for c in labels.unique()]))


def localise(
    maps: dict[str, torch.Tensor], masks: torch.Tensor, labels: torch.Tensor, tolerance: float
) -> pd.DataFrame:
    """Per method (each over the images it has maps for, the first ``len(maps[m])``), and for the
    baseline: pointing accuracy (pooled and class-mean), and the mean energy share in the mask and in
    its box."""
    box = boxes(masks)
    rows = []
    for name, m in maps.items():
        n = len(m)
        hits = pointing_hits(maximisers(m.detach().cpu()), masks[:n], tolerance)
        rows.append(
            {
                "method": name,
                "images": n,
                "pointing": float(hits.double().mean()),
                "pointing_class_mean": _class_mean(hits, labels[:n]),
                "energy_mask": float(energy_share(m.detach().cpu(), masks[:n]).nanmean()),
                "energy_box": float(energy_share(m.detach().cpu(), box[:n]).nanmean()),
            }
        )
    h, w = masks.shape[-2:]
    centre = torch.tensor([[w // 2, h // 2]]).expand(len(masks), 2)
    hits = pointing_hits(centre, masks, tolerance)
    uniform = torch.ones(masks.shape, dtype=torch.float64)
    rows.append(
        {
            "method": CENTRE,
            "images": len(masks),
            "pointing": float(hits.double().mean()),
            "pointing_class_mean": _class_mean(hits, labels),
            "energy_mask": float(energy_share(uniform, masks).mean()),
            "energy_box": float(energy_share(uniform, box).mean()),
        }
    )
    return pd.DataFrame(rows)
