"""Step ``tcav``: TCAV (Kim et al. 2018) of the shape/texture world's concepts for a model trained on it.

The world knows which cue each model was trained to use, so the test has an answer: a model trained in
the standard regime (texture agrees with shape 90% of the time) may decide by its class's texture, one
trained in the shape regime (texture random) only by its shape. The concepts are every class's texture
(the whole image) and its shape (a filled silhouette); the random images are objects of random shape
in random texture; each class is tested on world originals of that class, through its logit's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING, OmegaConf

from cnnscope.artifacts import TcavArtifact, TrainArtifact
from cnnscope.attribution.tcav import TcavParams, layer_activations, layer_gradients, tcav
from cnnscope.bounds import bounded, positive
from cnnscope.data.shapetexture import CLASSES, concept_sets, localisation_set, random_sets
from cnnscope.device import pick_device
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.progress import track
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    layers: list[str] = MISSING  # where the concepts are sought (the study gives the dissected layers)
    world: str = MISSING  # the model's train artifact: the world it learned (its image size)
    # Images per concept (and in the random set that stands in for one in the null), and in each random
    # counterpart: the concept's R scores share its images, so with sets of one size the t-test is
    # anti-conservative (cnnscope.attribution.tcav); the controls measure how much in this world.
    concept_images: int = bounded(50, 2)
    random_images: int = bounded(10, 2)
    # Random sets tested as if they were concepts (random:<i>): the share of their cells found
    # significant is the test's false-positive rate here
    controls: int = bounded(2, 0)
    class_images: int = positive(20)  # world originals per class whose logit's gradient is tested
    seed: int = bounded(0, 0)
    tcav: TcavParams = field(default_factory=TcavParams)


register("tcav", Config, model="convnet")
CONTROL = "random"  # the cue of a control concept: random images tested as a concept


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(world="train")
    size = int(OmegaConf.load(TrainArtifact(cfg.world).config).train.image_size)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    for layer in cfg.layers:
        resolve_layer(loaded.module, layer, cfg.name)  # fail before any work
    concept_images = concept_sets(cfg.concept_images, size, cfg.seed)
    stand_ins = random_sets(1 + cfg.controls, cfg.concept_images, size, cfg.seed)
    concept_images.update({f"{CONTROL}:{i}": v for i, v in enumerate(stand_ins[1:], start=1)})
    counterparts = random_sets(cfg.tcav.randoms, cfg.random_images, size, cfg.seed, stream=1)
    random_images = [stand_ins[0], *counterparts]
    images, labels, _ = localisation_set(cfg.class_images * len(CLASSES), size, cfg.seed)
    x = loaded.normalize(torch.from_numpy(images).to(device))
    y = torch.from_numpy(labels).to(device)
    tables = []
    for layer in track(cfg.layers, f"tcav {cfg.name}", enabled=cfg.progress):

        def activations(images: np.ndarray, layer: str = layer) -> torch.Tensor:
            normalized = loaded.normalize(torch.from_numpy(images).to(device))
            return layer_activations(loaded.module, layer, normalized).cpu()

        concepts = {k: activations(v) for k, v in concept_images.items()}
        randoms = [activations(v) for v in random_images]
        grads = layer_gradients(loaded.module, layer, x, y).cpu()
        gradients = {c: grads[labels == k] for k, c in enumerate(CLASSES)}
        table, _ = tcav(concepts, randoms, gradients, cfg.tcav)
        tables.append(_annotated(table, cfg.name, layer))
    table = pd.concat(tables, ignore_index=True)
    with out.write() as tmp:
        table.to_csv(TcavArtifact(tmp).scores, index=False)
    last = table[table["layer"] == cfg.layers[-1]]
    own = last[last["own"]].groupby("cue")
    controls = last[last["cue"] == CONTROL]["significant"]
    out.done(
        "%s at %s: controls significant in %.0f%% of cells; the class's own concept significant for %s",
        cfg.name,
        cfg.layers[-1],
        100 * controls.mean() if len(controls) else float("nan"),
        ", ".join(
            f"{cue} {int(g['significant'].sum())}/{len(g)} (mean TCAV {g['tcav'].mean():.2f})"
            for cue, g in own
        ),
    )


def _annotated(table: pd.DataFrame, name: str, layer: str) -> pd.DataFrame:
    """The table with the model's name and the layer, each concept's cue (texture or shape) and the class
    it belongs to, and whether that is the tested class (``own``: the ground truth's cell)."""
    parts = table["concept"].str.split(":", n=1)
    out = table.assign(cue=parts.str[0], concept_class=parts.str[1])
    out["own"] = out["concept_class"] == out["class"]
    out.insert(0, "layer", layer)
    out.insert(0, "model", name)
    return out


if __name__ == "__main__":
    run_step("tcav", body)
