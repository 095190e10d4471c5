"""Time Net2Vec on a Broden-shaped packed set beside a dissection tally pass, and print a table.

    python benchmarks/net2vec.py --images 63305 --arch resnet18 --layer layer4 [--device cuda]
        [--activations DIR]

The packed set is the one ``benchmarks/dissect.py`` builds (random content in Broden's shapes: 224 px
images, 112 px masks, ~1,200 labels, every fifth image in val), so every label is a concept and all
of them are learned at once, as in a full Broden run. Activations come from the model with random
weights (``--random-activations``: gamma noise of the layer's shape, to skip a slow extraction;
``--activations``: those ``benchmarks/dissect.py --keep-activations`` left, to skip it altogether).
Stages: the concept pass, thresholds, one IoU tally pass (the yardstick: the issue asks an epoch to
cost at most about three), one segmentation epoch, the val evaluation and the classification
embeddings; each with its seconds (the fastest of ``--repeat`` runs), images/s, peak host RSS and
peak GPU memory.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dissect import _Peak, _random_activations, activations_dir, build_packed

from cnnscope.artifacts import ExtractArtifact
from cnnscope.device import pick_device
from cnnscope.dissection import batch_elements, batch_images, tally, unit_thresholds
from cnnscope.features import extract_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.net2vec import classification, segmentation
from cnnscope.net2vec.classification import ClassificationParams
from cnnscope.net2vec.concepts import concept_stats
from cnnscope.net2vec.segmentation import Problem, SegmentationParams, unit_scale
from cnnscope.rows import RowReader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500, help="63305 is full Broden")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-elements", type=int, default=0, help="values per batch tensor (0: per device)")
    p.add_argument("--batch-size", type=int, default=16, help="segmentation images per step")
    p.add_argument("--random-activations", action="store_true", help="gamma noise instead of the model")
    p.add_argument(
        "--activations",
        action="store_true",
        help="reuse the model's activations that dissect.py --keep-activations left for this set",
    )
    p.add_argument(
        "--classification-only",
        action="store_true",
        help="only the concept pass and the classification embeddings (no tally, no segmentation)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per stage; the fastest is reported")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    a = p.parse_args()
    device = pick_device(a.device)
    data = build_packed(a.cache / f"packed-{a.images}-{a.size}", a.images, a.size)
    peak = _Peak(device)
    elements = batch_elements(a.max_elements, device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    print(f"device: {device} ({gpu})  threads: {torch.get_num_threads()}  max_elements: {elements}")
    if a.activations:
        out = activations_dir(a.cache, a.arch, a.layer, a.images, a.size)
        if not (ExtractArtifact(out).activations).is_file():
            p.error(f"no activations in {out}: run dissect.py --keep-activations with these sizes first")
    else:
        out = Path(tempfile.mkdtemp(prefix="acts-", dir=a.cache))
    rows = []

    def stage(name: str, images: int, fn):
        """Run ``fn`` ``--repeat`` times; the fastest run's seconds (shared machines are noisy)."""
        peak.reset()
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        rows.append((name, min(times), images, *peak.read()))
        what, seconds, _, host, gpu_gb = rows[-1]
        print(f"{what:<44} {seconds:8.2f} {images / seconds:9.1f} {host:8.2f} {gpu_gb:7.2f}")
        return result

    print(f"{'stage':<44} {'seconds':>8} {'images/s':>9} {'host GB':>8} {'GPU GB':>7}")
    try:
        if a.activations:
            print(f"activations: {out} (kept by dissect.py)")
        elif a.random_activations:
            shape = {"resnet18": (512, 7, 7), "resnet50": (2048, 7, 7)}[a.arch]
            stage("random activations", len(data), lambda: _random_activations(out, (len(data), *shape)))
        else:
            loaded = load_model(ModelSpec("torchvision", a.arch), device)
            stage(
                f"extract {a.arch} {a.layer}",
                len(data),
                lambda: extract_layer(
                    loaded, a.layer, data.stream("images"), out, device=device, progress=False
                ),
            )
        acts = RowReader(ExtractArtifact(out).activations)
        if not a.classification_only:
            thr, _, _ = stage(
                "thresholds",
                len(data),
                lambda: unit_thresholds(
                    acts, 0.005, np.load(ExtractArtifact(out).unit_range), device=device, progress=False
                ),
            )
            stage(
                "IoU tally pass (the yardstick)",
                len(data),
                lambda: tally(acts, thr, data, device=device, progress=False),
            )
        stats = stage(
            "net2vec concept pass",
            len(data),
            lambda: concept_stats(acts, data, batch_images(acts, data, elements), device, progress=False),
        )
        if not a.classification_only:
            _segmentation(stage, acts, data, stats, thr, device, elements, a.batch_size)
        cls = stats.concepts("classification", 1)
        stage(
            f"net2vec classification ({len(cls)} concepts)",
            int((stats.split == "train").sum()),
            lambda: classification.fit(stats, cls, ClassificationParams(), device),
        )
    finally:
        if not a.activations:
            shutil.rmtree(out, ignore_errors=True)
    if not a.classification_only:
        tally_s = next(r[1] for r in rows if r[0].startswith("IoU tally"))
        epoch_s = next(r[1] for r in rows if r[0].endswith("epoch"))
        print(f"{'segmentation epoch / tally pass':<44} {epoch_s / tally_s:8.1f}x")


def _segmentation(stage, acts, data, stats, thr, device, elements: int, batch_size: int) -> None:
    """Time one segmentation epoch over every segmentation concept, and the val evaluation."""
    labels = stats.concepts("segmentation", 1)
    params = SegmentationParams(epochs=1, batch_size=batch_size)
    problem = Problem.build(
        acts, data, stats, labels, unit_scale(thr, "threshold"), device, elements, batch_size
    )
    n_train, n_val = int((stats.split == "train").sum()), int((stats.split == "val").sum())
    print(f"  {len(labels)} segmentation concepts, batch {problem.batch_size} images")
    w, b, _ = stage(
        "net2vec segmentation epoch", n_train, lambda: segmentation.train(problem, params, progress=False)
    )
    single = np.zeros(len(labels), np.int64)
    stage(
        "net2vec evaluation (val, 7 variants)",
        n_val,
        lambda: segmentation.evaluate(problem, w, b, single, thr, params.top_k, progress=False),
    )


if __name__ == "__main__":
    main()
