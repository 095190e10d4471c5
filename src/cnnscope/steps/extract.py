"""Step ``extract``: one layer's activations over the packed probe set (see cnnscope.features)."""

from __future__ import annotations

import logging

from cnnscope.data.packed import PackedDataset
from cnnscope.features import extract_layer, pick_device
from cnnscope.io import atomic_dir, write_json, write_yaml
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")


def body(cfg: dict) -> None:
    data = PackedDataset.open(cfg["packed"])
    device = pick_device(cfg["device"])
    loaded = load_model(ModelSpec(**cfg["model"]), device)
    with atomic_dir(cfg["out"]) as tmp:
        info = extract_layer(
            loaded,
            cfg["layer"],
            data.images,
            tmp,
            batch_size=cfg["batch_size"],
            device=device,
            amp=cfg["amp"],
            store_dtype=cfg["store_dtype"],
            model_name=cfg["model"]["arch"],
            progress=cfg["progress"],
        )
        write_json(tmp / "meta.json", {**info, "device": str(device)})
        write_yaml(tmp / "config.yaml", cfg)
    log.info(
        "extract: %s %s %s on %s -> %s", cfg["model"]["arch"], cfg["layer"], info["shape"], device, cfg["out"]
    )


if __name__ == "__main__":
    run_step("extract", body)
