"""Time sealing and verifying artifacts of full Broden's size, before (SHA-256 of every file, every
time) and after (xxh3-128 once at seal time, a ``stat`` per file at each routine check), and print a
table.

    python benchmarks/integrity.py [--images 63305] [--cache DIR]

The artifacts are the packed set ``benchmarks/dissect.py`` builds (224 px images, 112 px masks: about
16 GB at full size) and random float16 activations of ResNet-18 and ResNet-50 ``layer4`` over it
(3.2 and 12.7 GB). "verify, routine" is what every step does to each input before use; "verify,
full" is ``cnnscope verify --full``. The page cache is dropped before each timed pass where the
machine allows it (root), so the reads come from the disk, as a job's first reads do.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from dissect import build_packed

from cnnscope.artifacts import ExtractArtifact
from cnnscope.io import MANIFEST, file_digest, seal, verify
from cnnscope.rows import RowWriter

SHAPES = {"resnet18 layer4": (512, 7, 7), "resnet50 layer4": (2048, 7, 7)}


def _activations(root: Path, n: int, shape: tuple[int, ...]) -> Path:
    """Random float16 bytes of ``(n, *shape)`` (what is hashed does not matter), built once."""
    path = ExtractArtifact(root).activations
    if (root / "done").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with RowWriter(path, (n, *shape), np.float16) as w:
        for a in range(0, n, 1024):
            b = min(n, a + 1024)
            w.write(a, rng.integers(0, 1 << 14, (b - a, *shape), dtype=np.uint16).view(np.float16))
    (root / "done").write_text("")
    return root


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")
        return True
    except OSError:
        return False


def _timed(fn: Callable[[], object]) -> float:
    _drop_caches()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (MANIFEST, "done"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=63305, help="63305 is full Broden")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    a = p.parse_args()
    artifacts = {"packed set": build_packed(a.cache / f"packed-{a.images}-224", a.images, 224).root}
    for name, shape in SHAPES.items():
        artifacts[f"{name} activations"] = _activations(
            a.cache / f"integrity-{name.replace(' ', '-')}-{a.images}", a.images, shape
        )
    print(f"{a.images} images; page cache dropped before each pass: {_drop_caches()}")
    print(f"{'artifact':<28} {'GB':>6} {'seal before':>12} {'seal after':>11} {'verify before':>14}"
          f" {'routine after':>14} {'full after':>11}")  # fmt: skip
    for name, root in artifacts.items():
        files = _files(root)
        gb = sum(f.stat().st_size for f in files) / 1e9
        sha = _timed(lambda files=files: [file_digest(f, "sha256") for f in files])  # old seal = old verify
        sealed = _timed(lambda root=root: seal(root))
        routine = _timed(lambda root=root: verify(root, "bench"))
        full = _timed(lambda root=root: verify(root, "bench", full=True))
        times = f"{sha:11.1f}s {sealed:10.1f}s {sha:13.1f}s {routine:13.3f}s {full:10.1f}s"
        print(f"{name:<28} {gb:6.1f} {times}")


if __name__ == "__main__":
    main()
