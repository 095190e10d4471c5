"""Step ``attribution``: every method's maps on probe images, and their faithfulness metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import MISSING
from PIL import Image

from cnnscope.attribution.suite import MethodName, attribute, score
from cnnscope.bounds import positive
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.features import LayerCapture
from cnnscope.featurevis import feature_grid
from cnnscope.io import atomic_dir, verify, write_yaml
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import OnDevice, register

log = logging.getLogger("cnnscope")


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    packed: str = MISSING  # probe images come from the packed dataset
    layer: str = MISSING  # the class-activation layer (the last conv block)
    methods: list[MethodName] = field(default_factory=lambda: list(MethodName))
    images: int = positive(6)  # gallery images (maps are kept for these)
    metric_images: int = positive(64)  # images the metrics are averaged over (gallery included)
    deletion_steps: int = positive(16)


register("attribution", Config)


def body(cfg: dict) -> None:
    verify(cfg["packed"], "prepare")
    data = PackedDataset.open(cfg["packed"])
    device = pick_device(cfg["device"])
    loaded = load_model(ModelSpec(**cfg["model"]), device)
    layer = resolve_layer(loaded.module, cfg["layer"], cfg["name"])  # fail before any work
    n = min(len(data), max(cfg["images"], cfg["metric_images"]))
    idx = np.unique(np.linspace(0, len(data) - 1, n).round().astype(int))
    x = loaded.normalize(torch.from_numpy(np.array(data.images[idx])).to(device))
    with torch.no_grad():
        targets = loaded.module(x).argmax(1)
    maps, seconds = attribute(loaded.module, cfg["layer"], x, cfg["methods"], targets, cfg["progress"])
    with torch.no_grad(), LayerCapture(layer) as cap:
        grid = feature_grid(cap(loaded.module, x[:1])[0])  # the layer's maps for the first image
    metrics = score(loaded.module, x, maps, targets, cfg["deletion_steps"])
    metrics.insert(0, "model", cfg["name"])
    metrics["seconds_per_image"] = metrics["method"].map(seconds)
    k = cfg["images"]
    with atomic_dir(cfg["out"]) as tmp:
        np.savez_compressed(
            tmp / "maps.npz", **{m: v[:k].cpu().numpy().astype(np.float16) for m, v in maps.items()}
        )
        np.save(tmp / "images.npy", idx[:k])
        np.save(tmp / "targets.npy", targets[:k].cpu().numpy())
        metrics.to_csv(tmp / "metrics.csv", index=False)
        Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).save(tmp / "feature_grid.png")
        write_yaml(tmp / "config.yaml", cfg)
    log.info("attribution: %d methods on %d images of %s -> %s", len(maps), len(idx), cfg["name"], cfg["out"])


if __name__ == "__main__":
    run_step("attribution", body)
