"""Step ``sanity``: cascading model-parameter randomisation of every attribution method's maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING

from cnnscope.artifacts import SanityArtifact
from cnnscope.attribution.sanity import blocks, cascading, spearman, ssim
from cnnscope.attribution.suite import METHODS, PERTURBATION, TRAINED, MethodName, attribute
from cnnscope.bounds import bounded, positive
from cnnscope.data.packed import PackedDataset
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
    out.verify(packed="prepare")
    methods = _methods(cfg)
    data = PackedDataset.open(cfg.packed)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    resolve_layer(loaded.module, cfg.layer, cfg.name)  # fail before any work
    idx = np.unique(np.linspace(0, len(data) - 1, min(len(data), cfg.images)).round().astype(int))
    x = loaded.normalize(torch.from_numpy(np.array(data.images[idx])).to(device))
    with torch.no_grad():
        targets = loaded.module(x).argmax(1)  # the trained model's classes, explained at every step
    trained, _ = attribute(loaded.module, cfg.layer, x, methods, targets)
    rows, kept = [], {f"{m}@0": v[0].cpu().numpy() for m, v in trained.items()}
    for m in methods:
        rows.append({"method": m, "step": 0, "randomised": "", "spearman": 1.0, "ssim": 1.0})
    order = blocks(loaded.module)
    for k, block, randomised in cascading(loaded.module, cfg.seed):
        maps, _ = attribute(randomised, cfg.layer, x, methods, targets, progress=False)
        for m in methods:
            rho, sim = spearman(trained[m], maps[m]), ssim(trained[m], maps[m])
            rows.append(
                {
                    "method": m,
                    "step": k,
                    "randomised": block,
                    "spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
                    "ssim": float(np.mean(sim)),
                }
            )
            kept[f"{m}@{k}"] = maps[m][0].cpu().numpy()
    table = pd.DataFrame(rows)
    table.insert(0, "model", cfg.name)
    with out.write() as tmp:
        made = SanityArtifact(tmp)
        table.to_csv(made.randomisation, index=False)
        np.savez_compressed(made.maps, **{k: v.astype(np.float16) for k, v in kept.items()})
    last = table[table["step"] == len(order)].set_index("method")["spearman"]
    out.done(
        "%d methods, %d blocks randomised from %s down; rank correlation at the end: %s",
        len(methods),
        len(order),
        order[0],
        ", ".join(f"{m} {v:.2f}" for m, v in last.items()),
    )


if __name__ == "__main__":
    run_step("sanity", body)
