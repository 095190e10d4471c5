"""TCAV (:mod:`cnnscope.attribution.tcav`) in a model trained on the shape/texture world
(:mod:`cnnscope.data.shapetexture`), where the answer is known.

A model trained in the standard regime (texture agrees with shape 90% of the time) may decide by its
class's texture, one trained in the shape regime (texture random) only by its shape. Each class is
tested on world originals of that class through its logit's gradient (:func:`class_gradients`), and
concepts come in families, each tested against random images of its own distribution
(:func:`family_tcav`):

* the world's (:func:`world_family`): every class's texture over the whole image (``texture:<class>``)
  and its shape as a filled silhouette (``shape:<class>``), against objects of random shape in random
  texture;
* the probe set's (:mod:`cnnscope.attribution.probe_concepts`): its Broden concepts, against random
  probe images.

The concept sets, and the random set that stands in for a concept in the null distribution, hold
``concept_images`` images; each random counterpart holds ``random_images``. The R scores of a concept
share its images, so with sets of one size the t-test is anti-conservative (see
:mod:`cnnscope.attribution.tcav`); ``controls`` more random sets are tested as if they were concepts
(``random:<i>``), and the share of their cells found significant measures the test's false-positive
rate in the family.
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

CONTROL = "random"  # the cue of a control concept: random images tested as a concept


@dataclass
class WorldTcavParams:
    """The image sets for TCAV, and the test's own settings (``tcav``)."""

    concept_images: int = bounded(50, 2)  # per concept, and in the null's stand-in and the controls
    random_images: int = bounded(10, 2)  # per random counterpart
    controls: int = bounded(2, 0)  # random sets tested as concepts: the false-positive check
    class_images: int = positive(20)  # world originals per class whose logit's gradient is tested
    seed: int = bounded(0, 0)
    tcav: TcavParams = field(default_factory=TcavParams)


@dataclass
class Family:
    """One family of concepts as image sets (``uint8 (n, H, W, 3)`` each, at the model's input size):
    ``concepts`` by name (``<cue>:<what>``), and its random sets: ``stand_ins`` (the null's stand-in,
    then the controls) and the ``counterparts`` every CAV is fitted against."""

    name: str
    concepts: dict[str, np.ndarray]
    stand_ins: list[np.ndarray]
    counterparts: list[np.ndarray]


@dataclass
class Tested:
    """A family's TCAV table (:data:`cnnscope.attribution.tcav.COLUMNS` with ``family``, ``cue``,
    ``concept_class`` and ``own``) and its CAVs (concept name, and ``"random"`` -> ``(R, D)``)."""

    table: pd.DataFrame
    cavs: dict[str, torch.Tensor]


def class_gradients(
    loaded: LoadedModel, layer: str, size: int, params: WorldTcavParams
) -> dict[str, torch.Tensor]:
    """Each class's ``(class_images, D)`` gradients of its logit at ``layer`` on world originals of the
    class, at ``size`` pixels."""
    device = next(loaded.module.parameters()).device
    images, labels, _ = localisation_set(params.class_images * len(CLASSES), size, params.seed)
    x = loaded.normalize(torch.from_numpy(images).to(device))
    grads = layer_gradients(loaded.module, layer, x, torch.from_numpy(labels).to(device)).cpu()
    return {c: grads[labels == k] for k, c in enumerate(CLASSES)}


def world_family(size: int, params: WorldTcavParams) -> Family:
    """The world's concepts (each class's texture and silhouette) and random world images."""
    return Family(
        "world",
        concept_sets(params.concept_images, size, params.seed),
        random_sets(1 + params.controls, params.concept_images, size, params.seed),
        random_sets(params.tcav.randoms, params.random_images, size, params.seed, stream=1),
    )


def family_tcav(
    loaded: LoadedModel,
    layer: str,
    family: Family,
    gradients: dict[str, torch.Tensor],
    params: WorldTcavParams,
    own_cues: tuple[str, ...],
) -> Tested:
    """TCAV of every class (``gradients``) and concept of ``family`` at ``layer``, with the family's
    controls as concepts ``random:<i>`` (Bonferroni over the family's table). ``own`` marks the cells
    whose concept is the tested class's own, for concepts of ``own_cues`` (the ground truth)."""
    device = next(loaded.module.parameters()).device

    def activations(images: np.ndarray) -> torch.Tensor:
        normalized = loaded.normalize(torch.from_numpy(np.ascontiguousarray(images)).to(device))
        return layer_activations(loaded.module, layer, normalized).cpu()

    concepts = {k: activations(v) for k, v in family.concepts.items()}
    concepts.update({f"{CONTROL}:{i}": activations(v) for i, v in enumerate(family.stand_ins[1:], start=1)})
    randoms = [activations(v) for v in [family.stand_ins[0], *family.counterparts]]
    table, cavs = tcav(concepts, randoms, gradients, params.tcav)
    parts = table["concept"].str.split(":", n=1)
    table = table.assign(family=family.name, cue=parts.str[0], concept_class=parts.str[1])
    table["own"] = table["cue"].isin(own_cues) & (table["concept_class"] == table["class"])
    return Tested(table[["family", *table.columns.drop("family")]], cavs)
