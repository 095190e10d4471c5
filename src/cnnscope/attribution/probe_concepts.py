"""TCAV of the probe set's Broden concepts, and how its CAVs agree with Net2Vec's embeddings.

A Broden concept is a set of images too: the probe images that carry its label (labelled pixels or an
image-level label, as Net2Vec's classification concepts, :func:`cnnscope.net2vec.concepts.label_presence`).
Each concept with at least ``min_images`` such images is tested with up to ``concept_images`` of them,
drawn at random, against random probe images (Kim et al. 2018 draw their random sets from the same
broad distribution as the concepts'), resized to the model's input size. Concepts are named
``<category>:<label>``; the synthetic probe world's objects are the shape/texture world's 16 shapes, so
its ``object:<class>`` concepts are each class's shape in random colours and materials, a second ground
truth beside the world's silhouettes.

Net2Vec's classification embedding of a concept (Fong & Vedaldi 2018, section 3.2) is a concept vector
too: logistic regression on the layer's spatially averaged activations, standardised, so the direction
in the averaged activations is ``d = w / scale`` (:func:`cnnscope.net2vec.classification.unit_scales`).
A CAV ``v`` lives in the flattened ``(K, H, W)`` activations; a change along ``v`` changes the averaged
activations along its channel sums ``pool(v)_k = sum_{h,w} v_{k,h,w}``, and ``d`` broadcast over the
positions, ``d_k / (H W)`` at every ``(k, h, w)``, is the direction of the flattened activations that
changes the averaged ones along ``d``. :func:`net2vec_agreement` reports, per concept, the cosine of
``pool(v)`` and ``d`` (mean over the concept's ``R`` CAVs) beside the same for the random CAVs (the level
of chance), and the TCAV score of each class along the broadcast ``d`` beside the CAVs' score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cnnscope.attribution.world_concepts import Family, WorldTcavParams
from cnnscope.data.packed import PackedDataset
from cnnscope.errors import CnnscopeError, DatasetError
from cnnscope.net2vec.concepts import label_presence

PROBE_FAMILY = "probe"
PROBE_OWN_CUES = ("object",)  # the probe world's objects are the world's classes' shapes

AGREEMENT_COLUMNS = [
    "concept",
    "category",
    "cosine",
    "cosine_std",
    "random_abs_cosine",
    "tcav",
    "net2vec_tcav",
    "same_side",
]


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (n, H, W, 3)`` at ``size`` x ``size`` pixels (bilinear, antialiased); as it is at that
    size."""
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def concept_name(data: PackedDataset, label: int) -> str:
    """A probe label's concept name, ``<primary category>:<label name>``."""
    return f"{data.categories[data.label_category()[label]]}:{data.label_names()[label]}"


def probe_family(data: PackedDataset, size: int, params: WorldTcavParams, min_images: int) -> Family:
    """The probe set's concepts with at least ``min_images`` images, and random probe images."""
    n = len(data)
    if n < params.concept_images:
        raise DatasetError(
            f"{data.root}: TCAV's random sets need concept_images={params.concept_images} probe images, "
            f"the probe set has {n}; lower concept_images"
        )
    present = label_presence(data)
    has_category = data.label_category() >= 0
    concepts = {}
    for label in np.flatnonzero((present.sum(0) >= min_images) & has_category):
        rng = np.random.default_rng([params.seed, 5, int(label)])
        chosen = rng.permutation(np.flatnonzero(present[:, label]))[: params.concept_images]
        concepts[concept_name(data, int(label))] = resize(data.images[np.sort(chosen)], size)
    if not concepts:
        raise DatasetError(f"{data.root}: no concept has {min_images} probe images; lower min_images")

    def draw(count: int, k: int, stream: int) -> list[np.ndarray]:
        """``count`` sets of ``k`` random probe images, each from a stream of its own."""
        picks = [
            np.random.default_rng([params.seed, stream, r]).choice(n, k, replace=False) for r in range(count)
        ]
        return [resize(data.images[np.sort(p)], size) for p in picks]

    return Family(
        PROBE_FAMILY,
        concepts,
        draw(1 + params.controls, params.concept_images, 6),
        draw(params.tcav.randoms, params.random_images, 7),
    )


def net2vec_directions(embeddings: dict[str, np.ndarray], data: PackedDataset) -> dict[str, np.ndarray]:
    """Each classification concept's Net2Vec direction in the averaged activations, ``w / scale``
    ``(K,)``, by concept name, from a net2vec artifact's ``embeddings.npz``."""
    weight = embeddings["cls_weight"] / embeddings["cls_scale"]
    labels = embeddings["cls_labels"]
    return {concept_name(data, int(label)): w for label, w in zip(labels, weight, strict=True)}


def _cosines(pooled: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pooled @ d / (pooled.norm(dim=1) * d.norm()).clamp(min=1e-30)


def net2vec_agreement(
    table: pd.DataFrame,
    cavs: dict[str, torch.Tensor],
    gradients: dict[str, torch.Tensor],
    directions: dict[str, np.ndarray],
) -> tuple[pd.DataFrame, pd.Series]:
    """Per probe concept of ``table`` (the probe family's TCAV table) that Net2Vec embedded, how its
    CAVs agree with the embedding (:data:`AGREEMENT_COLUMNS`: ``tcav`` and ``net2vec_tcav`` are the mean
    over the classes; ``same_side`` the share of classes whose two scores are both above 0.5 or both not);
    and the TCAV score of each row's class along the Net2Vec direction (NaN where there is none), aligned
    with ``table``'s rows."""
    random_cavs = cavs["random"].double()  # the CAVs are float64 (fit_cav), gradients float32
    per_row = pd.Series(np.nan, index=table.index, name="net2vec_tcav")
    rows = []
    for concept, d_np in directions.items():
        if concept not in cavs:
            continue
        d = torch.from_numpy(np.asarray(d_np, np.float64))
        k, dim = len(d), random_cavs.shape[1]
        if dim % k:
            raise CnnscopeError(
                f"Net2Vec's embedding has {k} units but the layer's activations {dim} numbers"
            )
        pooled = cavs[concept].double().view(len(cavs[concept]), k, -1).sum(-1)
        cos = _cosines(pooled, d)
        chance = _cosines(random_cavs.view(len(random_cavs), k, -1).sum(-1), d).abs()
        broadcast = d.repeat_interleave(dim // k)
        mine = table["concept"] == concept
        for cls, grads in gradients.items():
            per_row[mine & (table["class"] == cls)] = float((grads.double() @ broadcast > 0).double().mean())
        cav_scores = table.loc[mine, "tcav"].to_numpy()
        n2v_scores = per_row[mine].to_numpy()
        rows.append(
            {
                "concept": concept,
                "category": concept.split(":", 1)[0],
                "cosine": float(cos.mean()),
                "cosine_std": float(cos.std()) if len(cos) > 1 else 0.0,
                "random_abs_cosine": float(chance.mean()),
                "tcav": float(cav_scores.mean()),
                "net2vec_tcav": float(n2v_scores.mean()),
                "same_side": float(((cav_scores > 0.5) == (n2v_scores > 0.5)).mean()),
            }
        )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS), per_row
