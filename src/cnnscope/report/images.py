"""The report's small images: a unit's top images with its mask, as dissection scored it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnscope.artifacts import ExtractArtifact
from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import unit_masks
from cnnscope.features import top_images
from cnnscope.report.inputs import LayerResult


def unit_strip(data: PackedDataset, res: LayerResult, unit: int, k: int, scale: int) -> np.ndarray:
    """The unit's ``k`` top-activating images side by side, pixels outside its mask dimmed.

    The mask is the one the IoU tally scores (:func:`cnnscope.dissection.unit_masks`, at the probe
    set's mask resolution), enlarged to image resolution by nearest neighbour.
    """
    extracted = ExtractArtifact(res.extract_dir)
    maxima = np.load(extracted.maxima, mmap_mode="r")
    acts = np.load(extracted.activations, mmap_mode="r")
    top = top_images(maxima, unit, k)
    maps = torch.from_numpy(np.asarray(acts[top, unit], np.float32))
    thr = torch.full((len(top),), float(res.thresholds[unit]))
    masks = unit_masks(maps, thr, tuple(data.meta["mask_size"]))
    masks = F.interpolate(masks[:, None].float(), size=tuple(data.meta["image_size"]), mode="nearest")[:, 0]
    tiles = []
    for i, mask in zip(top, masks.bool().numpy(), strict=True):
        img = np.asarray(data.images[i]).astype(np.float32)
        img = np.where(mask[..., None], img, img * 0.25 + 40)
        tile = np.kron(img, np.ones((scale, scale, 1))) if scale > 1 else img
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    return np.concatenate(tiles, axis=1).clip(0, 255).astype(np.uint8)
