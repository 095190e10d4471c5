"""Time extraction, thresholds and the IoU tally on a Broden-shaped packed set, and print a table.

    python benchmarks/dissect.py --images 500 --arch resnet18 --layer layer4 [--device cuda]

The packed set is random content with Broden's shapes (224 px images, 112 px masks, 4 pixel-label
layers of blob-shaped labels from ~1,200 labels over 6 categories, 1 image-level label), built once
into ``--cache`` and reused. Model weights are random (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from cnnscope.data.packed import FORMAT_VERSION, PackedDataset
from cnnscope.dissection import tally, unit_thresholds
from cnnscope.features import extract_layer, pick_device
from cnnscope.io import write_json
from cnnscope.models.registry import ModelSpec, load_model

CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
N_LABELS = 1197


def build_packed(root: Path, n: int, size: int, seed: int = 0) -> PackedDataset:
    """A random Broden-shaped packed set (skipped when ``root`` already holds one of that size)."""
    if (root / "meta.json").is_file():
        data = PackedDataset.open(root)
        if len(data) == n and data.meta["image_size"][0] == size:
            return data
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ms = size // 2
    images = open_memmap(root / "images.npy", "w+", np.uint8, (n, size, size, 3))
    masks = open_memmap(root / "masks.npy", "w+", np.uint16, (n, 4, ms, ms))
    for i in range(n):
        images[i] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        # Blobs: a coarse 7x7 label grid per layer, upsampled, about half of it labelled.
        coarse = rng.integers(1, N_LABELS + 1, (4, 7, 7)) * (rng.random((4, 7, 7)) < 0.5)
        masks[i] = np.kron(coarse, np.ones((ms // 7 + 1, ms // 7 + 1)))[:, :ms, :ms]
    np.save(root / "scalars.npy", rng.integers(1, N_LABELS + 1, (n, 1)).astype(np.int32))
    labels = [
        {"number": k, "name": f"l{k}", "primary": CATEGORIES[k % 6], "categories": [CATEGORIES[k % 6]]}
        for k in range(1, N_LABELS + 1)
    ]
    write_json(
        root / "meta.json",
        {
            "format_version": FORMAT_VERSION,
            "source": "benchmark",
            "n_images": n,
            "image_size": [size, size],
            "mask_size": [ms, ms],
            "categories": CATEGORIES,
            "labels": labels,
            "layer_categories": ["color", "object", "part", "material"],
        },
    )
    images.flush()
    masks.flush()
    return PackedDataset.open(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    a = p.parse_args()
    device = pick_device(a.device)
    rows = []

    t = time.perf_counter()
    data = build_packed(a.cache / f"packed-{a.images}-{a.size}", a.images, a.size)
    rows.append(("packed set (build or reuse)", time.perf_counter() - t))

    loaded = load_model(ModelSpec("torchvision", a.arch), device)
    out = Path(tempfile.mkdtemp(prefix="acts-", dir=a.cache))
    t = time.perf_counter()
    info = extract_layer(
        loaded, a.layer, data.images, out, batch_size=a.batch_size, device=device, progress=False
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    rows.append((f"extract {a.arch} {a.layer} {tuple(info['shape'][1:])}", time.perf_counter() - t))

    acts = np.load(out / "activations.npy", mmap_mode="r")
    t = time.perf_counter()
    thr, method, _ = unit_thresholds(
        acts, 0.005, np.load(out / "unit_range.npy"), device=device, progress=False
    )
    rows.append((f"thresholds ({method})", time.perf_counter() - t))

    t = time.perf_counter()
    tally(acts, thr, data, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rows.append(("IoU tally (both modes)", time.perf_counter() - t))

    total = sum(s for name, s in rows[1:])
    print(f"device: {device}  images: {a.images}  threads: {torch.get_num_threads()}")
    print(f"{'stage':<45} {'seconds':>9} {'images/s':>10}")
    for name, s in rows:
        print(f"{name:<45} {s:9.2f} {a.images / s:10.1f}")
    print(f"{'dissection total (after preparation)':<45} {total:9.2f} {a.images / total:10.1f}")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak host RSS: {rss_gb:.2f} GB", end="")
    if device.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GB", end="")
    print()


if __name__ == "__main__":
    main()
