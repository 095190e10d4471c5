"""Step ``attribution``: every method's maps on probe images, and their faithfulness metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING
from PIL import Image

from cnnscope.artifacts import lcam_attention
from cnnscope.attribution.lcam import Attention
from cnnscope.attribution.perturbation import WEIGHTINGS
from cnnscope.attribution.suite import METHODS, PERTURBATION, TRAINED, MethodName, attribute, score
from cnnscope.bounds import bounded, choice, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.errors import CnnscopeError
from cnnscope.features import LayerCapture
from cnnscope.featurevis import feature_grid
from cnnscope.io import atomic_dir, verify, write_yaml
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import OnDevice, register

log = logging.getLogger("cnnscope")
Weighting = choice("Weighting", WEIGHTINGS)


@dataclass
class Perturbation:
    """Score-CAM and RISE: hundreds of forward passes per image, so they run on the first ``images``
    probe images only (gallery and metrics alike)."""

    images: int = positive(6)
    batch_size: int = positive(64)  # masked inputs per forward pass
    scorecam_weighting: Weighting = Weighting.probability  # probability (paper) | channel_softmax
    rise_masks: int = positive(500)
    rise_grid: int = positive(7)  # cells per side of a RISE mask
    rise_p: float = bounded(0.5, 0, 1, open_lo=True)  # probability a cell is on
    rise_seed: int = bounded(0, 0)


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    packed: str = MISSING  # probe images come from the packed dataset
    layer: str = MISSING  # the class-activation layer (the last conv block)
    methods: list[MethodName] | None = None  # None: every method (L-CAM's when `lcam` is given)
    lcam: str | None = None  # the model's lcam step output (trained L-CAM attention)
    images: int = positive(6)  # gallery images (maps are kept for these)
    metric_images: int = positive(64)  # images the metrics are averaged over (gallery included)
    deletion_steps: int = positive(16)
    perturbation: Perturbation = field(default_factory=Perturbation)


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
    maps, cost = _attribute(loaded.module, cfg, x, targets, _attention(cfg, device))
    with torch.no_grad(), LayerCapture(layer) as cap:
        grid = feature_grid(cap(loaded.module, x[:1])[0])  # the layer's maps for the first image
    metrics = score(loaded.module, x, maps, targets, cfg["deletion_steps"])
    metrics.insert(0, "model", cfg["name"])
    metrics = metrics.merge(cost, on="method", how="left")
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


def _methods(cfg: dict) -> list[str]:
    if cfg["methods"] is not None:
        return cfg["methods"]
    return [m for m in METHODS if cfg["lcam"] is not None or m not in TRAINED]


def _attention(cfg: dict, device: torch.device) -> dict[str, Attention]:
    """The trained L-CAM attention of each variant the study runs, from the lcam step's output."""
    wanted = [m for m in _methods(cfg) if m in TRAINED]
    if not wanted:
        return {}
    if cfg["lcam"] is None:
        raise CnnscopeError(
            f"methods {wanted} need a trained L-CAM attention: give lcam=<the lcam step's output>"
        )
    verify(cfg["lcam"], "lcam")
    out = {}
    for m in wanted:
        state = torch.load(Path(cfg["lcam"]) / lcam_attention(m.removeprefix("lcam_")), weights_only=True)
        if state["layer"] != cfg["layer"]:
            raise CnnscopeError(
                f"{cfg['lcam']} was trained at layer {state['layer']!r}, not {cfg['layer']!r}"
            )
        w = state["state_dict"]["conv.weight"]
        attention = Attention(w.shape[1], w.shape[0])
        attention.load_state_dict(state["state_dict"])
        out[m] = attention.to(device).eval()
    return out


def _attribute(model, cfg: dict, x: torch.Tensor, targets: torch.Tensor, attention: dict):
    """Every method's maps (the perturbation methods' on the first ``perturbation.images`` images)
    and what each cost per image."""
    pert = cfg["perturbation"]
    options = {
        **{m: {"attention": a} for m, a in attention.items()},
        "scorecam": {"weighting": pert["scorecam_weighting"], "batch_size": pert["batch_size"]},
        "rise": {
            "n_masks": pert["rise_masks"],
            "grid": pert["rise_grid"],
            "p": pert["rise_p"],
            "seed": pert["rise_seed"],
            "batch_size": pert["batch_size"],
        },
    }
    maps, cost = {}, []
    k = min(len(x), max(pert["images"], cfg["images"]))
    chosen = _methods(cfg)
    for group, xs in ((False, x), (True, x[:k])):
        methods = [m for m in chosen if (m in PERTURBATION) == group]
        if methods:
            m, c = attribute(model, cfg["layer"], xs, methods, targets[: len(xs)], cfg["progress"], options)
            maps.update(m)
            cost.append(c)
    return {m: maps[m] for m in chosen}, pd.concat(cost, ignore_index=True)


if __name__ == "__main__":
    run_step("attribution", body)
