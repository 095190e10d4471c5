"""Step ``mistakes``: a model's misclassified images through its explanations (the L-CAM seed's
analysis; :mod:`cnnscope.attribution.mistakes`): each method's map of the predicted class against the
true class's, and, as the baseline, the top-1 against the top-2 class's on the images it gets right.

The images are the model's labelled data, as its L-CAM was trained on: for a model of the world, a
sample of the world in its regime drawn for this step alone; for a real model, the study's labelled
image folder (``lcam_data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING

from cnnscope.artifacts import MistakesArtifact
from cnnscope.attribution.mistakes import compare_classes, summarise
from cnnscope.attribution.suite import MethodName, trained_attention
from cnnscope.bounds import bounded, positive
from cnnscope.data import shapetexture
from cnnscope.data.imagefolder import image_folder, load_images
from cnnscope.data.sample import evenly_spread
from cnnscope.device import pick_device
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import LoadedModel, ModelSpec, load_model
from cnnscope.progress import track
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register
from cnnscope.training import Regime

WORLD_SEED = 50_000  # the world's sample for this step, apart from training's, validation's and L-CAM's


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING
    layer: str = MISSING  # the class-activation layer (the attribution stage's)
    lcam: str | None = None  # the model's lcam step output (needed by the L-CAM methods)
    methods: list[MethodName] = field(default_factory=lambda: ["gradcam", "lcam_fm", "lcam_img"])
    data: str = shapetexture.WORLD  # world | an ImageNet-layout folder of labelled images
    regime: Regime = Regime.standard  # the world's texture regime (data: world)
    images: int = positive(256)  # world images drawn, or folder images taken (evenly spread)
    image_size: int = bounded(64, 8)  # world image size, or the folder images' crop size
    batch_size: int = positive(32)
    show: int = bounded(6, 0)  # misclassified images kept with their maps for the report


register("mistakes", Config, model="convnet")


def _images(cfg: Config, loaded: LoadedModel, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 (N, H, W, 3)`` images and their labels (see the module docstring)."""
    if cfg.data == shapetexture.WORLD:
        agreement = shapetexture.REGIMES[cfg.regime]
        images, labels, _ = shapetexture.training_set(cfg.images, cfg.image_size, agreement, WORLD_SEED)
        return images, labels
    paths, labels = image_folder(cfg.data, classes, loaded.class_names)
    take = evenly_spread(len(paths), cfg.images)
    return load_images([paths[i] for i in take], loaded.input_size or cfg.image_size), labels[take]


def _class_names(cfg: Config, loaded: LoadedModel, classes: int) -> list[str]:
    if loaded.class_names is not None:
        return list(loaded.class_names)
    if cfg.data == shapetexture.WORLD:
        return list(shapetexture.CLASSES)
    return [str(k) for k in range(classes)]


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(lcam="lcam")
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    resolve_layer(loaded.module, cfg.layer, cfg.name)  # fail before any work
    attention = trained_attention(cfg.lcam, cfg.methods, cfg.layer, device)
    classes = loaded.outputs(cfg.image_size)
    images, labels = _images(cfg, loaded, classes)
    pairs, shown, shown_maps = [], [], {m: [] for m in cfg.methods}
    starts = range(0, len(images), cfg.batch_size)
    for start in track(list(starts), "mistakes", enabled=cfg.progress):
        batch = images[start : start + cfg.batch_size]
        x = loaded.normalize(torch.from_numpy(batch).to(device))
        y = torch.from_numpy(labels[start : start + cfg.batch_size]).to(device)
        found = compare_classes(loaded.module, cfg.layer, x, y, cfg.methods, attention)
        rows = found.pairs.assign(image=found.pairs["image"] + start)
        pairs.append(rows)
        wrong = np.flatnonzero(~rows.drop_duplicates("image")["correct"].to_numpy())
        for i in wrong[: max(0, cfg.show - len(shown))]:
            shown.append(start + i)
            for m in cfg.methods:
                shown_maps[m].append(found.maps[m][i].numpy().astype(np.float16))
    table = pd.concat(pairs, ignore_index=True)
    names = _class_names(cfg, loaded, classes)
    for col in ("label", "predicted", "compared"):
        table[f"{col}_name"] = [names[k] for k in table[col]]
    summary = summarise(table)
    summary.insert(0, "model", cfg.name)
    table.insert(0, "model", cfg.name)
    with out.write() as tmp:
        made = MistakesArtifact(tmp)
        table.to_csv(made.pairs, index=False)
        summary.to_csv(made.summary, index=False)
        np.savez_compressed(
            made.gallery,
            images=images[shown],
            index=np.asarray(shown, np.int64),
            **{
                m: np.stack(v) if v else np.zeros((0, 2, *images.shape[1:3]), np.float16)
                for m, v in shown_maps.items()
            },
        )
    first = summary.iloc[0]
    out.done(
        "%s: %d of %d images misclassified; %s maps of predicted vs true class %.3f, top-1 vs top-2 %.3f",
        cfg.name,
        first["mistakes"],
        first["images"],
        first["method"],
        first["predicted_vs_true"],
        first["top1_vs_top2"],
    )


if __name__ == "__main__":
    run_step("mistakes", body)
