"""The packed probe dataset: Broden decoded once into memory-mapped arrays.

Dissection reads every mask once per layer; decoding PNGs each time would dominate the run. The
prepare step decodes the dataset once into:

* ``images.npy``  -- ``uint8 (N, H, W, 3)``;
* ``masks.npy``   -- ``uint16 (N, K, sh, sw)``: every pixel-label layer of every pixel category,
  stacked (0 = unlabelled); ``meta["layer_categories"]`` says which category each layer came from;
* ``scalars.npy`` -- ``int32 (N, S)``: image-level label numbers, 0-padded;
* ``meta.json``   -- label table (number, name, primary category), categories, image names, sizes.

All arrays are ``.npy`` so they open with ``numpy.load(..., mmap_mode="r")`` and stream in batches.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnscope.data.broden import BrodenDataset
from cnnscope.errors import DatasetError
from cnnscope.io import read_json, write_json
from cnnscope.progress import track
from cnnscope.rows import RowReader, Rows, RowWriter, read_rows

if TYPE_CHECKING:  # torch is imported when masks are read as tensors, not by the prepare step
    import torch

FORMAT_VERSION = 1


def pack(dataset: BrodenDataset, out: str | Path, workers: int = 2, progress: bool = True) -> None:
    """Decode every image, mask and image-level label of ``dataset`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recs = dataset.records
    ih, iw, sh, sw = recs[0].ih, recs[0].iw, recs[0].sh, recs[0].sw
    for r in recs:
        if (r.ih, r.iw, r.sh, r.sw) != (ih, iw, sh, sw):
            raise DatasetError(
                f"{dataset.root / 'index.csv'}: {r.image} is {r.iw}x{r.ih} (masks {r.sw}x{r.sh}) "
                f"but the first image is {iw}x{ih} (masks {sw}x{sh}); a packed set needs one size "
                "(use one of broden1_224/227/384, which are uniform)"
            )
    pix = dataset.pixel_categories
    layers_per_cat = {c: max(len(r.masks[c]) for r in recs) for c in pix}
    layer_cats = [c for c in pix for _ in range(layers_per_cat[c])]
    offset = {c: layer_cats.index(c) for c in pix}
    n_scalar = max(1, max(sum(len(v) for v in r.scalars.values()) for r in recs))

    # Written row by row with pwrite (cnnscope.rows): full Broden is 16 GB, which a memmap would
    # hold in the process's memory.
    images = RowWriter(out / "images.npy", (len(recs), ih, iw, 3), np.uint8)
    masks = RowWriter(out / "masks.npy", (len(recs), len(layer_cats), sh, sw), np.uint16)
    scalars = np.zeros((len(recs), n_scalar), np.int32)

    def load(i: int) -> set[int]:
        """Decode and write image ``i``; returns the label numbers its masks use."""
        img = dataset.image(i)
        if img.shape[:2] != (ih, iw):
            raise DatasetError(
                f"image {dataset.root / 'images' / recs[i].image} is {img.shape[1]}x{img.shape[0]}"
                f" but index.csv says {iw}x{ih}"
            )
        images.write(i, img[None])
        row = np.zeros((1, len(layer_cats), sh, sw), np.uint16)
        for c in pix:
            for j, file in enumerate(recs[i].masks[c]):
                row[0, offset[c] + j] = dataset.mask(i, file)
        masks.write(i, row)
        vals = [v for c in dataset.categories for v in recs[i].scalars[c]]
        scalars[i, : len(vals)] = vals
        return set(np.unique(row).tolist())

    with images, masks, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # pool ends first
        used = set().union(
            *track(
                pool.map(load, range(len(recs))),
                "pack",
                enabled=progress,
                total=len(recs),
            )
        )
    np.save(out / "scalars.npy", scalars)
    used |= set(np.unique(scalars).tolist())
    unknown = sorted(used - set(dataset.labels) - {0})
    if unknown:
        raise DatasetError(
            f"{dataset.root}: label number(s) {unknown[:10]} appear in masks or index.csv but not "
            "in label.csv; the dataset is inconsistent, re-download or regenerate it"
        )
    write_json(
        out / "meta.json",
        {
            "format_version": FORMAT_VERSION,
            "source": str(dataset.root),
            "n_images": len(recs),
            "image_size": [ih, iw],
            "mask_size": [sh, sw],
            "categories": list(dataset.categories),
            "pixel_categories": list(pix),
            "image_categories": list(dataset.image_categories),
            "layer_categories": layer_cats,
            "images": [r.image for r in recs],
            "splits": [r.split for r in recs],
            "labels": [
                {
                    "number": lb.number,
                    "name": lb.name,
                    "primary": lb.primary,
                    "categories": list(lb.categories),
                }
                for lb in sorted(dataset.labels.values(), key=lambda x: x.number)
            ],
        },
    )


@dataclass
class PackedDataset:
    """Memory-mapped view of a packed probe dataset (see the module docstring)."""

    root: Path
    meta: dict
    images: np.ndarray
    masks: np.ndarray
    scalars: np.ndarray

    @classmethod
    def open(cls, root: str | Path) -> PackedDataset:
        root = Path(root)
        if not (root / "meta.json").is_file():
            raise DatasetError(f"{root} is not a packed dataset (no meta.json); run the prepare step first")
        meta = read_json(root / "meta.json")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{root} was packed by another cnnscope version; re-run prepare")
        return cls(
            root=root,
            meta=meta,
            images=np.load(root / "images.npy", mmap_mode="r"),
            masks=np.load(root / "masks.npy", mmap_mode="r"),
            scalars=np.load(root / "scalars.npy"),
        )

    def __len__(self) -> int:
        return int(self.meta["n_images"])

    def stream(self, name: str) -> RowReader | np.ndarray:
        """``images`` or ``masks`` for reading end to end in batches: a :class:`RowReader` of the packed
        file (the process's memory stays at one batch), or the array itself if it is not that file."""
        arr = getattr(self, name)
        path = self.root / f"{name}.npy"
        if isinstance(arr, np.memmap) and arr.filename and Path(arr.filename) == path.resolve():
            return RowReader(path)
        return arr

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    @property
    def n_label_slots(self) -> int:
        """Size of a table indexed by label number (max label number + 1; slot 0 unused)."""
        return max(lb["number"] for lb in self.meta["labels"]) + 1

    def label_names(self) -> list[str]:
        names = ["-"] * self.n_label_slots
        for lb in self.meta["labels"]:
            names[lb["number"]] = lb["name"]
        return names

    def label_category(self) -> np.ndarray:
        """Primary category index (into :attr:`categories`) per label number; -1 for none."""
        cats = self.categories
        out = np.full(self.n_label_slots, -1, np.int64)
        for lb in self.meta["labels"]:
            out[lb["number"]] = cats.index(lb["primary"])
        return out


def read_labels(masks: Rows, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Label numbers ``long (B, layers, sh, sw)`` of the mask rows ``[start, stop)``, widened on
    ``device``: the host holds only the stored uint16, which travels as int16 (every device supports
    it) and is widened back with ``& 0xFFFF``. The one reader of packed masks as tensors."""
    import torch

    return read_rows(masks, start, stop).view(torch.int16).to(device).long() & 0xFFFF
