"""Step ``featurevis``: activation-maximization images of a dissected layer's top units."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import MISSING
from PIL import Image

from cnnscope.bounds import bounded, choice, positive
from cnnscope.device import pick_device
from cnnscope.featurevis import PARAMETRISATIONS, maximize
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
    layer: str = MISSING
    units: int = positive(4)
    size: int = bounded(64, 8)
    steps: int = positive(128)
    lr: float = bounded(0.05, 0, open_lo=True)
    param: Parametrisation = Parametrisation.fourier
    seed: int = bounded(0, 0)


register("featurevis", Config)


def body(cfg: dict) -> None:
    verify(cfg["dissection"], "dissect")
    top = (
        pd.read_csv(Path(cfg["dissection"]) / "units.csv")
        .sort_values("iou", ascending=False)
        .head(cfg["units"])
    )
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
        write_yaml(tmp / "config.yaml", cfg)
    log.info("featurevis: %d units of %s -> %s", len(traces), cfg["layer"], cfg["out"])


if __name__ == "__main__":
    run_step("featurevis", body)
