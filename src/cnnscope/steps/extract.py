"""Step ``extract``: one layer's activations over the packed probe set (see cnnscope.features)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.bounds import choice, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.features import extract_layer
from cnnscope.io import resumable_dir, verify, write_json, write_yaml
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.steps.runner import result_config, run_step
from cnnscope.steps.schema import OnDevice, Resumable, register

log = logging.getLogger("cnnscope")
StoreDtype = choice("StoreDtype", ("float16", "float32"))  # what .npy holds (it has no bfloat16)


@dataclass
class Config(OnDevice, Resumable):
    model: ModelSpec = MISSING
    layer: str = MISSING
    packed: str = MISSING
    batch_size: int = positive(64)
    amp: bool = True  # autocast on the GPU
    store_dtype: StoreDtype = StoreDtype.float16


register("extract", Config)


def body(cfg: dict) -> None:
    packed = verify(cfg["packed"], "prepare")
    data = PackedDataset.open(cfg["packed"])
    device = pick_device(cfg["device"])
    loaded = load_model(ModelSpec(**cfg["model"]), device)
    resolve_layer(loaded.module, cfg["layer"], loaded.meta["arch"])  # fail before any work
    # What partial work must match to be resumed: the settings, the probe set, the weights, the device.
    fingerprint = {
        "config": result_config(cfg),
        "packed": packed,
        "weights": loaded.digest(),
        "device": str(device),
    }
    with resumable_dir(cfg["out"], fingerprint) as (tmp, resumed):
        if resumed:
            log.info("extract: continuing the work a killed run left in %s", tmp)
        info = extract_layer(
            loaded,
            cfg["layer"],
            data.stream("images"),
            tmp,
            batch_size=cfg["batch_size"],
            device=device,
            amp=cfg["amp"],
            store_dtype=cfg["store_dtype"],
            model_name=loaded.meta["arch"],
            progress=cfg["progress"],
            checkpoint_s=cfg["checkpoint_s"],
            image_names=data.meta["images"],
        )
        write_json(tmp / "meta.json", {**info, "device": str(device)})
        write_yaml(tmp / "config.yaml", cfg)
    log.info(
        "extract: %s %s %s on %s -> %s", loaded.meta["arch"], cfg["layer"], info["shape"], device, cfg["out"]
    )


if __name__ == "__main__":
    run_step("extract", body)
