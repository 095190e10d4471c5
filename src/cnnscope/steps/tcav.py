"""Step ``tcav``: TCAV (Kim et al. 2018) at one layer of a model trained on the shape/texture world, of
the world's concepts (:mod:`cnnscope.attribution.world_concepts`) and the probe set's
(:mod:`cnnscope.attribution.probe_concepts`), and how the probe concepts' CAVs agree with the layer's
Net2Vec embeddings where the study has them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import MISSING, OmegaConf

from cnnscope.artifacts import Net2VecArtifact, TcavArtifact, TrainArtifact
from cnnscope.attribution.probe_concepts import (
    PROBE_OWN_CUES,
    net2vec_agreement,
    net2vec_directions,
    probe_family,
)
from cnnscope.attribution.world_concepts import (
    CONTROL,
    WorldTcavParams,
    class_gradients,
    family_tcav,
    world_family,
)
from cnnscope.bounds import bounded
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.progress import track
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register

WORLD_OWN_CUES = ("texture", "shape")


@dataclass
class Config(WorldTcavParams, OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    layer: str = MISSING  # where the concepts are sought (the study: each of the model's tcav_layers)
    world: str = MISSING  # the model's train artifact: the world it learned (its image size)
    packed: str = MISSING  # the probe set, whose Broden concepts are tested too
    probe_min_images: int = bounded(10, 2)  # a probe concept is tested where this many images carry it
    net2vec: str | None = None  # the layer's net2vec artifact: its embeddings are compared with the CAVs


register("tcav", Config, model="convnet")


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(world="train", packed="prepare", net2vec="net2vec")
    size = int(OmegaConf.load(TrainArtifact(cfg.world).config).train.image_size)
    data = PackedDataset.open(cfg.packed)
    loaded = load_model(cfg.model, pick_device(cfg.device))
    resolve_layer(loaded.module, cfg.layer, cfg.name)  # fail before any work
    families = [(world_family(size, cfg), WORLD_OWN_CUES)]
    families.append((probe_family(data, size, cfg, cfg.probe_min_images), PROBE_OWN_CUES))
    gradients = class_gradients(loaded, cfg.layer, size, cfg)
    tested = [
        family_tcav(loaded, cfg.layer, family, gradients, cfg, own)
        for family, own in track(families, "tcav", enabled=cfg.progress)
    ]
    probe = tested[-1]  # the probe set's concepts, which Net2Vec embeds too
    agreement = None
    if cfg.net2vec is not None:
        embeddings = dict(np.load(Net2VecArtifact(cfg.net2vec).embeddings))
        agreement, per_row = net2vec_agreement(
            probe.table, probe.cavs, gradients, net2vec_directions(embeddings, data)
        )
        probe.table["net2vec_tcav"] = per_row
    table = pd.concat([t.table for t in tested], ignore_index=True)
    table.insert(0, "layer", cfg.layer)
    table.insert(0, "model", cfg.name)
    with out.write() as tmp:
        table.to_csv(TcavArtifact(tmp).scores, index=False)
        if agreement is not None:
            agreement.insert(0, "layer", cfg.layer)
            agreement.insert(0, "model", cfg.name)
            agreement.to_csv(TcavArtifact(tmp).net2vec, index=False)
    out.done("%s at %s: %s", cfg.name, cfg.layer, "; ".join(_summary(t.table) for t in tested))


def _summary(table: pd.DataFrame) -> str:
    """A family's line: its controls' false-positive rate, and its own concepts' significance."""
    controls = table[table["cue"] == CONTROL]["significant"]
    own = ", ".join(
        f"{cue} {int(g['significant'].sum())}/{len(g)} (mean TCAV {g['tcav'].mean():.2f})"
        for cue, g in table[table["own"]].groupby("cue")
    )
    rate = f"{100 * controls.mean():.0f}%" if len(controls) else "n/a"
    return f"{table['family'].iloc[0]} controls significant in {rate} of cells, own concept {own or 'none'}"


if __name__ == "__main__":
    run_step("tcav", body)
