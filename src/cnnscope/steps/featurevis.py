"""Step ``featurevis``: activation-maximization images of a dissected layer's top units, each unit's
largest activation in its top probe images projected back to pixels (DeconvNet, Zeiler & Fergus
2014), and reconstructions of a few probe images from the layer's features (network inversion,
Mahendran & Vedaldi 2015), which show what the layer keeps of an image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING
from PIL import Image

from cnnscope.artifacts import DissectArtifact, ExtractArtifact, FeaturevisArtifact
from cnnscope.bounds import bounded, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.data.sample import evenly_spread
from cnnscope.device import pick_device
from cnnscope.features import top_images
from cnnscope.featurevis import MaximizeParams, invert, maximize
from cnnscope.io import write_json
from cnnscope.models.normalize import to_pixels, unnormalize
from cnnscope.models.registry import LoadedModel, ModelSpec, load_model
from cnnscope.progress import track
from cnnscope.projection import project, strip
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register


@dataclass
class Config(OnDevice, MaximizeParams):
    model: ModelSpec = MISSING
    dissection: str = MISSING  # a dissect step's output: its top units are visualised
    activations: str = MISSING  # the layer's extract step output: each unit's top images
    packed: str = MISSING  # probe images to reconstruct come from the packed dataset
    layer: str = MISSING
    units: int = positive(4)
    projections: int = bounded(5, 0)  # top images whose unit maximum is projected to pixels (DeconvNet)
    inversions: int = bounded(2, 0)  # probe images reconstructed from the layer (evenly spaced)
    inversion_steps: int = positive(150)


register("featurevis", Config, model="convnet")


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(dissection="dissect", activations="extract", packed="prepare")
    top = (
        pd.read_csv(DissectArtifact(cfg.dissection).units).sort_values("iou", ascending=False).head(cfg.units)
    )
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    traces = {}
    data = PackedDataset.open(cfg.packed)
    maxima = np.load(ExtractArtifact(cfg.activations).maxima, mmap_mode="r")
    with out.write() as tmp:
        for _, row in track(list(top.iterrows()), "featurevis", enabled=cfg.progress):
            unit = int(row["unit"])
            trace = maximize(loaded.module, cfg.layer, unit, loaded.mean, loaded.std, cfg)
            Image.fromarray(to_pixels(trace.image)).save(FeaturevisArtifact(tmp).unit_image(unit))
            traces[unit] = {
                "label": row["label"],
                "iou": float(row["iou"]),
                "activation": trace.values,
                "projected": _projections(cfg, loaded, data, maxima, unit, tmp),
            }
        write_json(FeaturevisArtifact(tmp).traces, traces)
        write_json(FeaturevisArtifact(tmp).inversions, _inversions(cfg, loaded, data, tmp))
    out.done("%d units of %s", len(traces), cfg.layer)


def _projections(
    cfg: Config, loaded: LoadedModel, data: PackedDataset, maxima: np.ndarray, unit: int, tmp: Path
) -> list[dict]:
    """Project the unit's maximum in each of its ``projections`` top images to pixels; one strip,
    ``projection_<unit>.png``, and per image where the maximum was and the receptive field there."""
    top = top_images(maxima, unit, cfg.projections)
    if not len(top):
        return []
    device = next(loaded.module.parameters()).device
    x = loaded.normalize(torch.from_numpy(np.stack([np.asarray(data.images[i]) for i in top])).to(device))
    proj = project(loaded.module, cfg.layer, x, unit)
    seen = unnormalize(x, loaded.mean, loaded.std).permute(0, 2, 3, 1).cpu().numpy()
    pixels = (seen * 255).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(strip(pixels, proj)).save(FeaturevisArtifact(tmp).projection_image(unit))
    return [
        {
            "image": int(i),
            "activation": float(v),
            "row": w[0],
            "column": w[1],
            "field": list(vars(f).values()),
        }
        for i, v, w, f in zip(top, proj.values.tolist(), proj.where, proj.fields, strict=True)
    ]


def _inversions(cfg: Config, loaded: LoadedModel, data: PackedDataset, tmp: Path) -> list[dict]:
    """Reconstruct ``inversions`` probe images from the layer; ``inversion_<image>.png`` each."""
    out = []
    for i in evenly_spread(len(data), cfg.inversions):
        target = torch.from_numpy(np.array(data.images[i])).permute(2, 0, 1).float() / 255
        image, losses = invert(
            loaded.module,
            cfg.layer,
            target,
            loaded.mean,
            loaded.std,
            steps=cfg.inversion_steps,
            seed=cfg.seed,
        )
        Image.fromarray(to_pixels(image)).save(FeaturevisArtifact(tmp).inversion_image(i))
        out.append({"image": int(i), "name": data.meta["images"][i], "feature_loss": losses[-1]})
    return out


if __name__ == "__main__":
    run_step("featurevis", body)
