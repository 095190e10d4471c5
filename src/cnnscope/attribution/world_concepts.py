"""TCAV on the shape/texture world (:mod:`cnnscope.data.shapetexture`), where the answer is known.

A model trained in the standard regime (texture agrees with shape 90% of the time) may decide by its
class's texture, one trained in the shape regime (texture random) only by its shape. The concepts are
every class's texture over the whole image (``texture:<class>``) and its shape as a filled silhouette
(``shape:<class>``); the random images are objects of random shape in random texture; each class is
tested on world originals of that class through its logit's gradient (:func:`cnnscope.attribution.tcav.tcav`).

The concept sets, and the random set that stands in for a concept in the null distribution, hold
``concept_images`` images; each random counterpart holds ``random_images``. The R scores of a concept
share its images, so with sets of one size the t-test is anti-conservative (see
:mod:`cnnscope.attribution.tcav`); ``controls`` more random sets are tested as if they were concepts
(``random:<i>``), and the share of their cells found significant measures the test's false-positive
rate in this world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cnnscope.attribution.tcav import TcavParams, layer_activations, layer_gradients, tcav
from cnnscope.bounds import bounded, positive
from cnnscope.data.shapetexture import CLASSES, concept_sets, localisation_set, random_sets
from cnnscope.models.registry import LoadedModel
from cnnscope.progress import track

CONTROL = "random"  # the cue of a control concept: random images tested as a concept


@dataclass
class WorldTcavParams:
    """The world's image sets for TCAV, and the test's own settings (``tcav``)."""

    concept_images: int = bounded(50, 2)  # per concept, and in the null's stand-in and the controls
    random_images: int = bounded(10, 2)  # per random counterpart
    controls: int = bounded(2, 0)  # random sets tested as concepts: the false-positive check
    class_images: int = positive(20)  # world originals per class whose logit's gradient is tested
    seed: int = bounded(0, 0)
    tcav: TcavParams = field(default_factory=TcavParams)


def world_tcav(
    loaded: LoadedModel, layers: list[str], size: int, params: WorldTcavParams, progress: bool = False
) -> pd.DataFrame:
    """The TCAV table (:data:`cnnscope.attribution.tcav.COLUMNS`) of every class and world concept at
    each of ``layers``, for a model trained on the world at ``size`` pixels, with each row's ``layer``,
    its concept's ``cue`` (texture, shape or random) and ``concept_class``, and ``own``: whether the
    concept is the tested class's (the ground truth's cell)."""
    device = next(loaded.module.parameters()).device
    concept_images = concept_sets(params.concept_images, size, params.seed)
    stand_ins = random_sets(1 + params.controls, params.concept_images, size, params.seed)
    concept_images.update({f"{CONTROL}:{i}": v for i, v in enumerate(stand_ins[1:], start=1)})
    counterparts = random_sets(params.tcav.randoms, params.random_images, size, params.seed, stream=1)
    images, labels, _ = localisation_set(params.class_images * len(CLASSES), size, params.seed)
    x = loaded.normalize(torch.from_numpy(images).to(device))
    y = torch.from_numpy(labels).to(device)
    tables = []
    for layer in track(layers, "tcav", enabled=progress):

        def activations(images: np.ndarray, layer: str = layer) -> torch.Tensor:
            normalized = loaded.normalize(torch.from_numpy(images).to(device))
            return layer_activations(loaded.module, layer, normalized).cpu()

        concepts = {k: activations(v) for k, v in concept_images.items()}
        randoms = [activations(v) for v in [stand_ins[0], *counterparts]]
        grads = layer_gradients(loaded.module, layer, x, y).cpu()
        gradients = {c: grads[labels == k] for k, c in enumerate(CLASSES)}
        table, _ = tcav(concepts, randoms, gradients, params.tcav)
        tables.append(table.assign(layer=layer))
    table = pd.concat(tables, ignore_index=True)
    parts = table["concept"].str.split(":", n=1)
    table = table.assign(cue=parts.str[0], concept_class=parts.str[1])
    table["own"] = table["concept_class"] == table["class"]
    return table[["layer", *table.columns.drop("layer")]]
