"""Profile one dissection stage with torch.profiler: its op table and a Chrome trace.

    python benchmarks/profile_stage.py --table dissect.json --images 4096 --device cuda --out DIR

The stage is ``--stage``, or the slowest stage of the first model in ``--table`` (the rows that
``benchmarks/dissect.py --json`` wrote), run on an ``--images``-image packed set of the same shapes
(``dissect.py``'s ``build_packed``): what the stage spends its time on does not depend on how many
batches it runs, and a short trace stays readable. The stages before it run first, unprofiled.
Writes ``profile.txt`` (ops by self device time and by self CPU time, with the stage's wall time) and
``trace.json.gz`` (open it in Perfetto or chrome://tracing).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dissect import STAGES, build_packed
from torch.profiler import ProfilerActivity, profile

from cnnscope.artifacts import ExtractArtifact
from cnnscope.device import pick_device
from cnnscope.dissection import tally, unit_thresholds
from cnnscope.features import ExtractParams, extract_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.rows import RowReader


def slowest(table: Path) -> tuple[str, str, str]:
    """``(arch, layer, stage)`` of the slowest row of the first model in a ``dissect.py --json`` table."""
    rows = json.loads(table.read_text())
    first = [r for r in rows if r["arch"] == rows[0]["arch"]]
    worst = max(first, key=lambda r: r["seconds"])
    return worst["arch"], worst["layer"], worst["stage"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=STAGES, help="default: the slowest in --table")
    p.add_argument("--table", type=Path, help="rows from dissect.py --json (for the stage, arch, layer)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=ExtractParams().batch_size, help="extraction batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    a = p.parse_args()
    arch, layer, stage = a.arch, a.layer, a.stage
    if stage is None:
        if a.table is None:
            p.error("give --stage or --table")
        arch, layer, stage = slowest(a.table)
    device = pick_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = build_packed(a.cache / f"packed-{a.images}-{a.size}", a.images, a.size)
    loaded = load_model(ModelSpec("torchvision", arch), device)
    acts_dir = Path(tempfile.mkdtemp(prefix="acts-", dir=a.cache))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def extract() -> None:
        params = ExtractParams(batch_size=a.batch_size)
        extract_layer(
            loaded,
            layer,
            data.stream("images"),
            acts_dir,
            params,
            device=device,
            model_name=arch,
            progress=False,
        )

    def thresholds() -> np.ndarray:
        acts = RowReader(ExtractArtifact(acts_dir).activations)
        unit_range = np.load(ExtractArtifact(acts_dir).unit_range)
        return unit_thresholds(acts, 0.005, unit_range, device=device, progress=False)[0]

    try:
        if stage != "extract":
            extract()
        thr = thresholds() if stage == "tally" else None
        run = {
            "extract": extract,
            "thresholds": thresholds,
            "tally": lambda: tally(RowReader(ExtractArtifact(acts_dir).activations), thr, data, device=device,
                                   progress=False),
        }[stage]  # fmt: skip
        if stage == "extract":
            shutil.rmtree(acts_dir)
            acts_dir.mkdir()
        with profile(activities=activities) as prof:
            t = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t
    finally:
        shutil.rmtree(acts_dir, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    ops = prof.key_averages()
    head = (
        f"{stage} of {arch} {layer} on {a.images} images at {a.size} px, {device}"
        f" ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}:"
        f" {seconds:.2f} s under the profiler, {a.images / seconds:.0f} images/s\n"
    )
    tables = [head]
    if device.type == "cuda":
        tables += ["\nby self device time\n", ops.table(sort_by="self_device_time_total", row_limit=25)]
    tables += ["\nby self CPU time\n", ops.table(sort_by="self_cpu_time_total", row_limit=25)]
    (a.out / "profile.txt").write_text("".join(tables))
    trace = a.out / "trace.json"
    prof.export_chrome_trace(str(trace))
    with trace.open("rb") as src, gzip.open(a.out / "trace.json.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    print(head + "".join(tables[1:3]))


if __name__ == "__main__":
    main()
