"""Step ``sanity``: the sanity checks of every attribution method's maps (Adebayo et al. 2018): cascading
model-parameter randomisation, and data randomisation against the same architecture trained on permuted
labels where the study has one."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING

from cnnscope.artifacts import SanityArtifact, TrainArtifact
from cnnscope.attribution.sanity import blocks, cascading, hog_similarity, spearman, ssim
from cnnscope.attribution.suite import METHODS, PERTURBATION, TRAINED, MethodName, attribute
from cnnscope.bounds import bounded, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.data.sample import evenly_spread
from cnnscope.device import pick_device
from cnnscope.errors import CnnscopeError
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    packed: str = MISSING  # probe images come from the packed dataset
    layer: str = MISSING  # the class-activation layer
    # None: every method but L-CAM's (its attention is trained on the intact model) and the perturbation
    # methods (hundreds of forward passes per image, at every step)
    methods: list[MethodName] | None = None
    images: int = positive(16)  # probe images, spread over the set
    seed: int = bounded(0, 0)  # the re-initialisation
    # The train artifact of the same architecture trained on permuted labels (the study wires it:
    # models[].labels: permuted); None: no data-randomisation check
    random_labels: str | None = None


register("sanity", Config, model="convnet")


def _methods(cfg: Config) -> list[str]:
    chosen = (
        [str(m) for m in cfg.methods]
        if cfg.methods is not None
        else [m for m in METHODS if m not in TRAINED | PERTURBATION]
    )
    trained = [m for m in chosen if m in TRAINED]
    if trained:
        raise CnnscopeError(
            f"sanity.methods {trained}: L-CAM's attention is trained on the intact model, so randomising "
            "the model says nothing about it; leave them out"
        )
    return chosen


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(packed="prepare", random_labels="train")
    methods = _methods(cfg)
    twin = _permuted_twin(cfg)  # refused before any work
    data = PackedDataset.open(cfg.packed)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    resolve_layer(loaded.module, cfg.layer, cfg.name)  # fail before any work
    idx = evenly_spread(len(data), cfg.images)
    x = loaded.normalize(torch.from_numpy(np.array(data.images[idx])).to(device))
    with torch.no_grad():
        targets = loaded.module(x).argmax(1)  # the trained model's classes, explained at every step
    trained, _ = attribute(loaded.module, cfg.layer, x, methods, targets)
    rows, kept = [], {f"{m}@0": v[0].cpu().numpy() for m, v in trained.items()}
    for m in methods:
        rows.append({"method": m, "step": 0, "randomised": "", **_similarity(trained[m], trained[m])})
    order = blocks(loaded.module)
    for k, block, randomised in cascading(loaded.module, cfg.seed):
        maps, _ = attribute(randomised, cfg.layer, x, methods, targets, progress=False)
        for m in methods:
            rows.append({"method": m, "step": k, "randomised": block, **_similarity(trained[m], maps[m])})
            kept[f"{m}@{k}"] = maps[m][0].cpu().numpy()
    table = pd.DataFrame(rows)
    table.insert(0, "model", cfg.name)
    labels = None
    if twin is not None:
        labels, maps = _data_randomisation(cfg, twin, x, targets, trained, device)
        kept.update({f"{m}@labels": v[0].cpu().numpy() for m, v in maps.items()})
    with out.write() as tmp:
        made = SanityArtifact(tmp)
        table.to_csv(made.randomisation, index=False)
        if labels is not None:
            labels.to_csv(made.labels, index=False)
        np.savez_compressed(made.maps, **{k: v.astype(np.float16) for k, v in kept.items()})
    last = table[table["step"] == len(order)].set_index("method")["spearman"]
    out.done(
        "%d methods, %d blocks randomised from %s down; rank correlation at the end: %s",
        len(methods),
        len(order),
        order[0],
        ", ".join(f"{m} {v:.2f}" for m, v in last.items()),
    )


def _similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """The paper's similarities of two sets of maps, each averaged over the images (a constant map's
    undefined correlations left out; ``NaN`` where every one is undefined)."""

    def mean(v: np.ndarray) -> float:
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    return {"spearman": mean(spearman(a, b)), "ssim": mean(ssim(a, b)), "hog": mean(hog_similarity(a, b))}


def _permuted_twin(cfg: Config) -> dict | None:
    """The permuted-label model's training metrics (``None``: no check asked for); a model trained on
    the true labels is refused."""
    if cfg.random_labels is None:
        return None
    metrics = json.loads(TrainArtifact(cfg.random_labels).metrics.read_text())
    if metrics.get("labels") != "permuted":
        raise CnnscopeError(
            f"sanity.random_labels {cfg.random_labels} was trained on "
            f"{metrics.get('labels', 'shapes')} labels; point it at one trained with train.labels=permuted"
        )
    return metrics


def _data_randomisation(
    cfg: Config,
    metrics: dict,
    x: torch.Tensor,
    targets: torch.Tensor,
    trained: dict[str, torch.Tensor],
    device: torch.device,
) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """Each method's maps of the permuted-label model for the trained model's images and classes, and
    their similarity to the trained model's; with how well that model fits its (permuted) training set
    and generalises (its training metrics)."""
    checkpoint = str(TrainArtifact(cfg.random_labels).model)
    twin = load_model(dataclasses.replace(cfg.model, checkpoint=checkpoint), device)
    maps, _ = attribute(twin.module, cfg.layer, x, list(trained), targets, progress=False)
    rows = [
        {
            "model": cfg.name,
            "method": m,
            **_similarity(trained[m], maps[m]),
            "twin_train_accuracy": metrics["train_accuracy"],
            "twin_val_accuracy": metrics["val_accuracy"],
        }
        for m in trained
    ]
    return pd.DataFrame(rows), maps


if __name__ == "__main__":
    run_step("sanity", body)
