"""Step ``extract``: one layer's activations over the packed probe set (see cnnscope.features)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.artifacts import ExtractArtifact
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.features import ExtractParams, extract_layer
from cnnscope.io import write_json
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, Resumable, register


@dataclass
class Config(OnDevice, Resumable, ExtractParams):
    model: ModelSpec = MISSING
    layer: str = MISSING
    packed: str = MISSING


register("extract", Config, model="convnet")


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(packed="prepare")
    data = PackedDataset.open(cfg.packed)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    resolve_layer(loaded.module, cfg.layer, loaded.meta["arch"])  # fail before any work
    # Resumed partial work must also match the weights and the device.
    out.identify(weights=loaded.digest(), device=str(device))
    with out.write(resumable=True) as tmp:
        info = extract_layer(
            loaded,
            cfg.layer,
            data.stream("images"),
            tmp,
            cfg,
            device=device,
            model_name=loaded.meta["arch"],
            progress=cfg.progress,
            checkpoint_s=cfg.checkpoint_s,
            image_names=data.meta["images"],
        )
        write_json(ExtractArtifact(tmp).meta, {**info, "device": str(device)})
    out.done("%s %s %s on %s", loaded.meta["arch"], cfg.layer, info["shape"], device)


if __name__ == "__main__":
    run_step("extract", body)
