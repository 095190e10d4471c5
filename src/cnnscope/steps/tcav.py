"""Step ``tcav``: TCAV (Kim et al. 2018) of the shape/texture world's concepts for a model trained on
it (:mod:`cnnscope.attribution.world_concepts`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, OmegaConf

from cnnscope.artifacts import TcavArtifact, TrainArtifact
from cnnscope.attribution.world_concepts import CONTROL, WorldTcavParams, world_tcav
from cnnscope.device import pick_device
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register


@dataclass
class Config(WorldTcavParams, OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    layers: list[str] = MISSING  # where the concepts are sought (the study: the model's tcav_layers)
    world: str = MISSING  # the model's train artifact: the world it learned (its image size)


register("tcav", Config, model="convnet")


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(world="train")
    size = int(OmegaConf.load(TrainArtifact(cfg.world).config).train.image_size)
    loaded = load_model(cfg.model, pick_device(cfg.device))
    for layer in cfg.layers:
        resolve_layer(loaded.module, layer, cfg.name)  # fail before any work
    table = world_tcav(loaded, list(cfg.layers), size, cfg, progress=cfg.progress)
    table.insert(0, "model", cfg.name)
    with out.write() as tmp:
        table.to_csv(TcavArtifact(tmp).scores, index=False)
    last = table[table["layer"] == cfg.layers[-1]]
    controls = last[last["cue"] == CONTROL]["significant"]
    out.done(
        "%s at %s: controls significant in %.0f%% of cells; the class's own concept significant for %s",
        cfg.name,
        cfg.layers[-1],
        100 * controls.mean() if len(controls) else float("nan"),
        ", ".join(
            f"{cue} {int(g['significant'].sum())}/{len(g)} (mean TCAV {g['tcav'].mean():.2f})"
            for cue, g in last[last["own"]].groupby("cue")
        ),
    )


if __name__ == "__main__":
    run_step("tcav", body)
