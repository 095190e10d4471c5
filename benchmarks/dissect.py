"""Time extraction, thresholds and the IoU tally on a Broden-shaped packed set, and print a table.

    python benchmarks/dissect.py --images 63305 --arch resnet18 resnet50 --layer layer4 [--device cuda]
        [--json rows.json] [--keep-activations]

The packed set is random content with Broden's shapes (224 px images, 112 px masks, 4 pixel-label
layers of blob-shaped labels from ~1,200 labels over 6 categories, 1 image-level label), built once
into ``--cache`` and reused. Model weights are random (timing does not depend on them). Each stage
reports its own peak host RSS (``VmHWM``, reset between stages) and peak GPU memory.
``--random-activations`` skips the model, to time the dissect step at full scale on a machine too
slow to extract. ``--json`` appends the table's rows to a file for other scripts
(``benchmarks/profile_stage.py`` picks the slowest stage from it); ``--keep-activations`` keeps each
model's activations in :func:`activations_dir` for ``benchmarks/net2vec.py --activations``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnnscope.artifacts import ExtractArtifact
from cnnscope.data.packed import FORMAT_VERSION, PackedDataset
from cnnscope.device import pick_device
from cnnscope.dissection import batch_elements, tally, unit_thresholds
from cnnscope.features import ExtractParams, LayerCapture, extract_layer
from cnnscope.io import read_json, write_json
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.rows import RowReader, RowWriter

CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
N_LABELS = 1197


def build_packed(root: Path, n: int, size: int, seed: int = 0) -> PackedDataset:
    """A random Broden-shaped packed set (skipped when ``root`` already holds one of that size)."""
    if (root / "meta.json").is_file():
        data = PackedDataset.open(root)
        if len(data) == n and data.meta["image_size"][0] == size and "splits" in data.meta:
            return data
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ms = size // 2
    cell = -(-ms // 7)
    with (
        RowWriter(root / "images.npy", (n, size, size, 3), np.uint8) as images,
        RowWriter(root / "masks.npy", (n, 4, ms, ms), np.uint16) as masks,
    ):
        for a in tqdm(range(0, n, 256), desc="build packed set", disable=n < 5000):
            b = min(n, a + 256) - a
            images.write(a, rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8))
            # Blobs: a coarse 7x7 label grid per layer, upsampled, about half of it labelled.
            coarse = rng.integers(1, N_LABELS + 1, (b, 4, 7, 7)) * (rng.random((b, 4, 7, 7)) < 0.5)
            masks.write(a, coarse.repeat(cell, 2).repeat(cell, 3)[:, :, :ms, :ms])
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
            "splits": ["val" if i % 5 == 0 else "train" for i in range(n)],  # Broden's is about 80/20
        },
    )
    return PackedDataset.open(root)


class _Peak:
    """Peak host RSS (Linux ``VmHWM``, reset per stage through ``clear_refs``) and peak GPU memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resettable = True

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError as e:  # a sandboxed kernel (gVisor) may not offer it: say so once, keep measuring
            if self.resettable:
                print(f"note: peak RSS cannot be reset here ({e}); it is the peak since the process started")
            self.resettable = False
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> tuple[float, float]:
        """``(host GB, GPU GB)`` since the last reset."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        status = Path("/proc/self/status").read_text().splitlines()
        hwm = [line for line in status if line.startswith("VmHWM")]
        kib = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gpu = torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0
        return kib / 2**20, gpu


def _random_activations(out: Path, shape: tuple[int, ...], seed: int = 0) -> None:
    """Gamma-distributed float16 activations of ``shape``, written in blocks (``--random-activations``)."""
    rng = np.random.default_rng(seed)
    with RowWriter(ExtractArtifact(out).activations, shape, np.float16) as w:
        for a in range(0, shape[0], 256):
            b = min(shape[0], a + 256)
            w.write(a, rng.gamma(0.5, 1.0, (b - a, *shape[1:])).astype(np.float16))
    np.save(ExtractArtifact(out).unit_range, np.array([[0.0] * shape[1], [60.0] * shape[1]], np.float32))


def activations_dir(cache: Path, arch: str, layer: str, images: int, size: int) -> Path:
    """Where ``--keep-activations`` leaves a model's activations of the ``images``-image packed set."""
    return cache / f"acts-{arch}-{layer}-{images}-{size}"


class _Rows(list):
    """The rows of one model's stages, each passed to ``emit`` as it is measured (a run stopped by a
    time limit has printed and saved what it measured)."""

    def __init__(self, emit: Callable[[tuple], None]) -> None:
        super().__init__()
        self.emit = emit

    def append(self, row: tuple) -> None:
        super().append(row)
        self.emit(row)


def bench(
    arch: str,
    layer: str,
    data: PackedDataset,
    a: argparse.Namespace,
    device: torch.device,
    emit: Callable[[tuple], None],
) -> list:
    """``(stage, seconds, host GB, GPU GB)`` for extraction (or random activations), thresholds, tally."""
    rows, peak = _Rows(emit), _Peak(device)
    loaded = load_model(ModelSpec("torchvision", arch), device)
    out = Path(tempfile.mkdtemp(prefix="acts-", dir=a.cache))
    keep = a.keep_activations and not a.random_activations
    try:
        peak.reset()
        t = time.perf_counter()
        if a.random_activations:
            x = torch.zeros(1, 3, a.size, a.size, device=device)
            with LayerCapture(resolve_layer(loaded.module, layer, arch)) as cap, torch.no_grad():
                shape = (len(data), *cap(loaded.module, x).shape[1:])
            del loaded
            _random_activations(out, shape)
            what = f"random activations {arch} {layer} {shape[1:]}"
        else:
            info = extract_layer(
                loaded,
                layer,
                data.stream("images"),
                out,
                ExtractParams(batch_size=a.batch_size),
                device=device,
                model_name=arch,
                progress=False,
            )
            what = f"extract {arch} {layer} {tuple(info['shape'][1:])}"
        rows.append((what, time.perf_counter() - t, *peak.read()))
        if a.extract_only:
            return rows

        acts = RowReader(ExtractArtifact(out).activations)
        peak.reset()
        t = time.perf_counter()
        thr, method, _ = unit_thresholds(
            acts,
            0.005,
            np.load(ExtractArtifact(out).unit_range),
            device=device,
            max_elements=a.max_elements,
            progress=False,
        )
        rows.append((f"thresholds ({method})", time.perf_counter() - t, *peak.read()))

        peak.reset()
        t = time.perf_counter()
        tally(acts, thr, data, device=device, max_elements=a.max_elements, progress=False)
        rows.append(("IoU tally (both modes)", time.perf_counter() - t, *peak.read()))
        if keep:
            kept = activations_dir(a.cache, arch, layer, len(data), a.size)
            shutil.rmtree(kept, ignore_errors=True)  # the benchmark's own earlier copy
            out.rename(kept)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return rows


STAGES = ("extract", "thresholds", "tally")  # the stage each of bench()'s rows times, in its order


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500, help="63305 is full Broden")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--arch", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--layer", default="layer4")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=ExtractParams().batch_size, help="extraction batch")
    p.add_argument("--max-elements", type=int, default=0, help="dissect's max_elements (0: per device)")
    p.add_argument(
        "--random-activations",
        action="store_true",
        help="skip the model: time thresholds and tally on random activations of the layer's shape",
    )
    p.add_argument("--extract-only", action="store_true", help="stop after extraction (its memory, timing)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    p.add_argument("--json", type=Path, help="append the rows to this file (arch, stage, seconds, memory)")
    p.add_argument("--keep-activations", action="store_true", help="keep them for net2vec.py --activations")
    a = p.parse_args()
    device = pick_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t = time.perf_counter()
    data = build_packed(a.cache / f"packed-{a.images}-{a.size}", a.images, a.size)
    print(
        f"packed set: {a.images} images at {a.size} px (built or reused in {time.perf_counter() - t:.1f} s)"
    )
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    elements = batch_elements(a.max_elements, device)
    print(f"device: {device} ({gpu})  threads: {torch.get_num_threads()}  max_elements: {elements}")
    print(f"{'stage':<52} {'seconds':>8} {'images/s':>9} {'host GB':>8} {'GPU GB':>7}")
    table = read_json(a.json) if a.json and a.json.is_file() else []  # --json appends to its rows
    start = len(table)
    for arch in a.arch:

        def emit(row: tuple, arch: str = arch) -> None:
            name, s, host, gpu_gb = row
            stage = STAGES[sum(r["arch"] == arch for r in table[start:])]
            print(f"{name:<52} {s:8.2f} {a.images / s:9.1f} {host:8.2f} {gpu_gb:7.2f}")
            table.append(
                {
                    "arch": arch,
                    "layer": a.layer,
                    "stage": stage,
                    "what": name,
                    "images": a.images,
                    "seconds": s,
                    "host_gb": host,
                    "gpu_gb": gpu_gb,
                    "device": str(device),
                    "gpu": gpu,
                }
            )
            if a.json:
                write_json(a.json, table)

        rows = bench(arch, a.layer, data, a, device, emit)
        if len(rows) < 3:
            continue
        total = sum(r[1] for r in rows)
        print(
            f"{arch + ' dissection total (after preparation)':<52} {total:8.2f} {a.images / total:9.1f}"
            f" {max(r[2] for r in rows):8.2f} {max(r[3] for r in rows):7.2f}"
        )
        print(f"{arch + ' tally share of the dissection':<52} {rows[2][1] / total:8.0%}")


if __name__ == "__main__":
    main()
