"""Step ``featurevis``: activation-maximization images of a dissected layer's top units."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cnnscope.errors import CnnscopeError
from cnnscope.features import pick_device
from cnnscope.featurevis import maximize
from cnnscope.io import atomic_dir, write_json, write_yaml
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")


def body(cfg: dict) -> None:
    table = Path(cfg["dissection"]) / "units.csv"
    if not table.is_file():
        raise CnnscopeError(f"{table} is missing; run the dissect step first")
    top = pd.read_csv(table).sort_values("iou", ascending=False).head(cfg["units"])
    device = pick_device(cfg["device"])
    loaded = load_model(ModelSpec(**cfg["model"]), device)
    traces = {}
    with atomic_dir(cfg["out"]) as tmp:
        for _, row in top.iterrows():
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
