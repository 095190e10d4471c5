"""Step ``attribution``: every method's maps on probe images, and their faithfulness metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING
from PIL import Image

from cnnscope.artifacts import AttributionArtifact
from cnnscope.attribution.localisation import PROBE_PLACEMENT, localise, probe_object_masks, scaled_tolerance
from cnnscope.attribution.suite import (
    METHODS,
    PERTURBATION,
    TRAINED,
    MethodName,
    MethodParams,
    attribute,
    score,
    trained_attention,
)
from cnnscope.bounds import bounded, choice, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.data.sample import evenly_spread
from cnnscope.data.shapetexture import PLACEMENTS, localisation_set
from cnnscope.device import pick_device
from cnnscope.features import LayerCapture
from cnnscope.featurevis import feature_grid, filter_grid, first_conv
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register


@dataclass
class Perturbation(MethodParams):
    """The perturbation methods (:data:`~cnnscope.attribution.suite.PERTURBATION`; their settings: a
    field each, named as the method): hundreds of forward passes per image, so they run on the first
    ``images`` probe images only (gallery and metrics alike)."""

    images: int = positive(6)


Placement = choice("Placement", PLACEMENTS)


@dataclass
class Localisation:
    """The pointing game and energy share (:mod:`cnnscope.attribution.localisation`) on the
    shape/texture world's originals, whose object masks are known by construction, each map explaining
    the image's true class, for a model trained on the world (``world``: the study sets it); and
    (``probe``) on the metric images of the probe set that have object masks, each map explaining the
    model's top-1 class, for every model."""

    world: bool = False
    probe: bool = True
    images: int = positive(64)  # world originals per placement, classes balanced (perturbation: fewer)
    seed: int = bounded(0, 0)
    # where the objects lie: as trained, and anywhere (smaller), where the centre is no good guess
    placements: list[Placement] = field(default_factory=lambda: list(PLACEMENTS))


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
    localisation: Localisation = field(default_factory=Localisation)


register("attribution", Config, model="convnet")


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(packed="prepare", lcam="lcam")
    data = PackedDataset.open(cfg.packed)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    layer = resolve_layer(loaded.module, cfg.layer, cfg.name)  # fail before any work
    idx = evenly_spread(len(data), max(cfg.images, cfg.metric_images))
    x = loaded.normalize(torch.from_numpy(np.array(data.images[idx])).to(device))
    with torch.no_grad():
        targets = loaded.module(x).argmax(1)
    attention = trained_attention(cfg.lcam, _methods(cfg), cfg.layer, device)
    maps, cost = _attribute(loaded.module, cfg, x, targets, attention)
    with torch.no_grad(), LayerCapture(layer) as cap:
        grid = feature_grid(cap(loaded.module, x[:1])[0])  # the layer's maps for the first image
    stem = first_conv(loaded.module, x[:1])
    filters = filter_grid(stem.weight) if stem is not None and stem.in_channels == 3 else None
    metrics = score(loaded.module, x, maps, targets, cfg.deletion_steps)
    metrics.insert(0, "model", cfg.name)
    metrics = metrics.merge(cost, on="method", how="left")
    located = _localise(loaded, cfg, data.images.shape[1], device, attention)
    if cfg.localisation.probe:
        located = _localise_probe(cfg, data, idx, maps, targets, located)
    k = cfg.images
    with out.write() as tmp:
        made = AttributionArtifact(tmp)
        np.savez_compressed(made.maps, **{m: v[:k].cpu().numpy().astype(np.float16) for m, v in maps.items()})
        np.save(made.images, idx[:k])
        np.save(made.targets, targets[:k].cpu().numpy())
        metrics.to_csv(made.metrics, index=False)
        Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).save(made.feature_grid)
        if filters is not None:
            Image.fromarray((filters.numpy() * 255).round().astype(np.uint8)).save(made.first_filters)
        if located is not None:
            located.to_csv(made.localisation, index=False)
    out.done("%d methods on %d images of %s", len(maps), len(idx), cfg.name)


def _localise(loaded, cfg: Config, size: int, device: torch.device, attention: dict) -> pd.DataFrame | None:
    """Every method's localisation of the true class on the world's originals (``None`` unless the
    study says the model is a world model)."""
    if not cfg.localisation.world or not cfg.localisation.placements:
        return None
    loc, tables = cfg.localisation, []
    for placement in dict.fromkeys(str(p) for p in loc.placements):
        images, labels, masks = localisation_set(loc.images, size, loc.seed, placement)
        x = loaded.normalize(torch.from_numpy(images).to(device))
        maps, _ = _attribute(loaded.module, cfg, x, torch.from_numpy(labels).to(device), attention)
        table = localise(maps, torch.from_numpy(masks), torch.from_numpy(labels), scaled_tolerance(size))
        tables.append(table.assign(model=cfg.name, placement=placement))
    table = pd.concat(tables, ignore_index=True)
    return table[["model", "placement", *(c for c in table.columns if c not in ("model", "placement"))]]


def _localise_probe(
    cfg: Config,
    data: PackedDataset,
    idx: np.ndarray,
    maps: dict[str, torch.Tensor],
    targets: torch.Tensor,
    located: pd.DataFrame | None,
) -> pd.DataFrame | None:
    """``located`` with the rows of placement :data:`PROBE_PLACEMENT`: every method's maps of the
    metric images that show a labelled object, scored against the union of the objects' masks."""
    masks = probe_object_masks(data, idx, tuple(data.images.shape[1:3]))
    if masks is None or not masks.flatten(1).any(1).any():
        return located
    keep = masks.flatten(1).any(1)
    kept = {m: v.detach().cpu()[keep[: len(v)]] for m, v in maps.items()}
    size = data.images.shape[1]
    table = localise(kept, masks[keep], targets.cpu()[keep], scaled_tolerance(size))
    table = table.assign(model=cfg.name, placement=PROBE_PLACEMENT)
    table = table[["model", "placement", *(c for c in table.columns if c not in ("model", "placement"))]]
    return table if located is None else pd.concat([located, table], ignore_index=True)


def _methods(cfg: Config) -> list[str]:
    if cfg.methods is not None:
        return cfg.methods
    return [m for m in METHODS if cfg.lcam is not None or m not in TRAINED]


def _attribute(model, cfg: Config, x: torch.Tensor, targets: torch.Tensor, attention: dict):
    """Every method's maps (the perturbation methods' on the first ``perturbation.images`` images)
    and what each cost per image."""
    maps, cost = {}, []
    k = min(len(x), max(cfg.perturbation.images, cfg.images))
    chosen = _methods(cfg)
    for group, xs in ((False, x), (True, x[:k])):
        methods = [m for m in chosen if (m in PERTURBATION) == group]
        if methods:
            m, c = attribute(
                model, cfg.layer, xs, methods, targets[: len(xs)], cfg.progress, cfg.perturbation, attention
            )
            maps.update(m)
            cost.append(c)
    return {m: maps[m] for m in chosen}, pd.concat(cost, ignore_index=True)


if __name__ == "__main__":
    run_step("attribution", body)
