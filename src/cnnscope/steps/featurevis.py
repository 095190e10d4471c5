"""Step ``featurevis``: activation-maximization images of a dissected layer's top units, and
reconstructions of a few probe images from the layer's features (network inversion, Mahendran &
Vedaldi 2015), which show what the layer keeps of an image."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING
from PIL import Image

from cnnscope.artifacts import UNITS
from cnnscope.bounds import bounded, choice, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.featurevis import PARAMETRISATIONS, invert, maximize
from cnnscope.io import atomic_dir, verify, write_json, write_yaml
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.progress import track
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import OnDevice, register

log = logging.getLogger("cnnscope")
Parametrisation = choice("Parametrisation", PARAMETRISATIONS)


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    dissection: str = MISSING  # a dissect step's output: its top units are visualised
    packed: str = MISSING  # probe images to reconstruct come from the packed dataset
    layer: str = MISSING
    units: int = positive(4)
    size: int = bounded(64, 8)
    steps: int = positive(128)
    lr: float = bounded(0.05, 0, open_lo=True)
    param: Parametrisation = Parametrisation.fourier
    seed: int = bounded(0, 0)
    inversions: int = bounded(2, 0)  # probe images reconstructed from the layer (evenly spaced)
    inversion_steps: int = positive(150)


register("featurevis", Config)


def body(cfg: dict) -> None:
    verify(cfg["dissection"], "dissect")
    top = pd.read_csv(Path(cfg["dissection"]) / UNITS).sort_values("iou", ascending=False).head(cfg["units"])
    device = pick_device(cfg["device"])
    loaded = load_model(ModelSpec(**cfg["model"]), device)
    traces = {}
    with atomic_dir(cfg["out"]) as tmp:
        for _, row in track(list(top.iterrows()), "featurevis", enabled=cfg["progress"]):
            unit = int(row["unit"])
            trace = maximize(
                loaded.module,
                cfg["layer"],
                unit,
                loaded.mean,
                loaded.std,
                cfg["size"],
                cfg["steps"],
                cfg["lr"],
                cfg["param"],
                seed=cfg["seed"],
            )
            image = (trace.image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            Image.fromarray(image).save(tmp / f"unit_{unit}.png")
            traces[unit] = {"label": row["label"], "iou": float(row["iou"]), "activation": trace.values}
        write_json(tmp / "traces.json", traces)
        write_json(tmp / "inversions.json", _inversions(cfg, loaded, tmp))
        write_yaml(tmp / "config.yaml", cfg)
    log.info("featurevis: %d units of %s -> %s", len(traces), cfg["layer"], cfg["out"])


def _inversions(cfg: dict, loaded, tmp: Path) -> list[dict]:
    """Reconstruct ``inversions`` probe images from the layer; ``inversion_<image>.png`` each."""
    verify(cfg["packed"], "prepare")
    data = PackedDataset.open(cfg["packed"])
    n = min(cfg["inversions"], len(data))
    out = []
    for i in np.unique(np.linspace(0, len(data) - 1, n).round().astype(int)) if n else []:
        target = torch.from_numpy(np.array(data.images[i])).permute(2, 0, 1).float() / 255
        image, losses = invert(
            loaded.module,
            cfg["layer"],
            target,
            loaded.mean,
            loaded.std,
            steps=cfg["inversion_steps"],
            seed=cfg["seed"],
        )
        pixels = (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(tmp / f"inversion_{i}.png")
        out.append({"image": int(i), "name": data.meta["images"][i], "feature_loss": losses[-1]})
    return out


if __name__ == "__main__":
    run_step("featurevis", body)
