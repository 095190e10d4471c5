"""Training images in ImageNet's folder layout (``<root>/<class>/<image>``), read batch by batch.

A class folder's label is its index among the model's class names when the model has them (a folder
that names no class is refused), else its index among the sorted folder names, which must then be as
many as the model's outputs (ImageNet's own ``train/`` sorts its 1,000 WordNet ids into the order
torchvision's models use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnscope.data.rgb import read_rgb
from cnnscope.errors import DatasetError

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG"}


def image_folder(
    root: str | Path, outputs: int, class_names: tuple[str, ...] | None = None
) -> tuple[list[Path], np.ndarray]:
    """Every image under ``root``'s class folders, and its label."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise DatasetError(
            f"{root} holds no class folders; give a folder in ImageNet layout (<class>/<image>)"
        )
    if class_names is not None:
        unknown = [f.name for f in folders if f.name not in class_names]
        if unknown:
            raise DatasetError(
                f"{root}: folder(s) {unknown[:5]} name no class of the model; rename them to its class names"
            )
        index = {f: class_names.index(f.name) for f in folders}
    else:
        if len(folders) != outputs:
            raise DatasetError(
                f"{root} has {len(folders)} class folders but the model has {outputs} outputs; give the "
                "model a classes file (one name per output) or one folder per output"
            )
        index = {f: i for i, f in enumerate(folders)}
    paths, labels = [], []
    for f in folders:
        files = sorted(p for p in f.iterdir() if p.suffix in SUFFIXES)
        paths += files
        labels += [index[f]] * len(files)
    if not paths:
        raise DatasetError(f"{root}: no images ({', '.join(sorted(SUFFIXES))}) in its class folders")
    return paths, np.asarray(labels, np.int64)


def load_images(paths: list[Path], size: int) -> np.ndarray:
    """``uint8 (B, size, size, 3)``: each image's shorter side resized to ``size``, centre-cropped."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        im = read_rgb(p)
        scale = size / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        out[i] = np.asarray(im.crop((left, top, left + size, top + size)))
    return out
