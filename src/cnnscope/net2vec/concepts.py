"""Which labels Net2Vec learns, on which images, and each image's averaged activations: one pass.

Broden annotates each image for some categories only (an ADE20K image has object and part masks but
no texture label), so an image that does not carry a concept's category says nothing about the
concept: it is neither a positive nor a negative. As in dissection's ``paper`` mode, the images of a
concept ``l`` are those that carry any label of ``cat(l)``, its primary category (a pixel label of
that category anywhere, or an image-level one). Training and evaluation both use only those images.

* segmentation concepts: labels with labelled pixels (in masks) in at least ``min_train_images``
  train images and one val image;
* classification concepts: any label (pixel or image-level) present in as many images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnscope.data.packed import PackedDataset, read_labels
from cnnscope.progress import track
from cnnscope.rows import Rows, read_rows

SPLITS = ("train", "val")


@dataclass
class ConceptStats:
    """What one pass over the probe set finds (``N`` images, ``S`` label slots, ``C`` categories)."""

    means: np.ndarray  # float32 (N, K): each unit's spatially averaged activation per image
    pixel_present: np.ndarray  # bool (N, S): the image has a pixel labelled with the label
    present: np.ndarray  # bool (N, S): the image carries the label (pixels or image level)
    has_category: np.ndarray  # bool (N, C): the image carries a label of the category
    train_pixels: np.ndarray  # float64 (S,): labelled pixels over the train split
    label_category: np.ndarray  # int (S,): primary category per label number, -1 for none
    split: np.ndarray  # str (N,): "train" | "val" | other

    def universe(self, labels: np.ndarray) -> np.ndarray:
        """bool (N, L): the images that carry each label's category (its positives and negatives)."""
        return self.has_category[:, self.label_category[labels]]

    def support(self, present: np.ndarray, labels: np.ndarray, split: str) -> np.ndarray:
        """Images of ``split`` where each label is present."""
        return present[self.split == split][:, labels].sum(0)

    def concepts(self, kind: str, min_train_images: int) -> np.ndarray:
        """The label numbers learned for ``kind`` ("segmentation" | "classification"), ascending."""
        present = self.pixel_present if kind == "segmentation" else self.present
        labels = np.flatnonzero(self.label_category >= 0)
        train = self.support(present, labels, "train")
        val = self.support(present, labels, "val")
        return labels[(train >= min_train_images) & (val >= 1)]


def _labels_of(
    data: PackedDataset, masks: Rows, start: int, stop: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[start, stop)``: each label's labelled pixels ``(B, S)`` and whether the image carries
    the label ``bool (B, S)`` (pixels or an image-level label); slot 0 (unlabelled) counts nothing."""
    slots = data.n_label_slots
    pix = read_labels(masks, start, stop, device).flatten(1)
    b = len(pix)
    img = torch.arange(b, device=device)[:, None].expand_as(pix)
    counts = torch.bincount((img * slots + pix).flatten(), minlength=b * slots).view(b, slots)
    counts[:, 0] = 0
    sca = torch.from_numpy(data.scalars[start:stop].astype(np.int64)).to(device)
    scalar = torch.zeros(b, slots, dtype=torch.bool, device=device)
    scalar[torch.arange(b, device=device)[:, None].expand_as(sca), sca] = True
    scalar[:, 0] = False
    return counts, (counts > 0) | scalar


def label_presence(data: PackedDataset, batch_size: int = 256) -> np.ndarray:
    """``bool (N, S)``: whether each probe image carries each label (pixels or image level), as
    :attr:`ConceptStats.present` but without activations (TCAV's concept image sets)."""
    masks = data.stream("masks")
    cpu = torch.device("cpu")
    return np.concatenate(
        [
            _labels_of(data, masks, a, min(a + batch_size, len(data)), cpu)[1].numpy()
            for a in range(0, len(data), batch_size)
        ]
    )


def concept_stats(
    acts: Rows, data: PackedDataset, batch_size: int, device: torch.device, progress: bool = True
) -> ConceptStats:
    """One pass over activations ``(N, K, h, w)`` and the packed masks and image-level labels."""
    n, k = acts.shape[:2]
    if n != len(data):
        raise ValueError(f"activations cover {n} images but the dataset has {len(data)}")
    split = np.asarray(data.meta.get("splits") or ["train"] * n)
    slots = data.n_label_slots
    label_cat = data.label_category()
    ncat = len(data.categories)
    means = np.zeros((n, k), np.float32)
    pixel_present = np.zeros((n, slots), bool)
    present = np.zeros((n, slots), bool)
    train_pixels = torch.zeros(slots, dtype=torch.float64, device=device)
    is_train = torch.as_tensor(split == "train", device=device)
    masks = data.stream("masks")
    for a in track(range(0, n, batch_size), "concepts", enabled=progress):
        x = read_rows(acts, a, a + batch_size).to(device).float()
        b = len(x)
        means[a : a + b] = x.mean((2, 3)).cpu().numpy()
        counts, carried = _labels_of(data, masks, a, a + b, device)
        train_pixels += counts[is_train[a : a + b]].sum(0).double()
        pixel_present[a : a + b] = (counts > 0).cpu().numpy()
        present[a : a + b] = carried.cpu().numpy()
    has_category = np.zeros((n, ncat), bool)
    rows, labels = np.nonzero(present)
    keep = label_cat[labels] >= 0
    has_category[rows[keep], label_cat[labels[keep]]] = True
    return ConceptStats(
        means, pixel_present, present, has_category, train_pixels.cpu().numpy(), label_cat, split
    )
