"""Step ``decoder``: learned inversion of a dissected layer (Dosovitskiy & Brox 2016) and activation
maximisation through the decoder (DGN-AM, Nguyen et al. 2016); :mod:`cnnscope.decoder`.

The decoder learns to reconstruct images from the layer's features: a world model's on a sample of
the world in its training regime, any other model's on the probe set. Its error is measured on
held-out images, from the intact features and from the two perturbations of Dosovitskiy & Brox
(binarised, 50% dropout). It reconstructs the probe images the featurevis step inverted by
optimisation, and raises the units featurevis visualised through the decoder, each compared with the
pixel-space image featurevis made and the unit's best probe image, on the same objective (the unit's
mean activation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING
from PIL import Image

from cnnscope.artifacts import DecoderArtifact, ExtractArtifact, FeaturevisArtifact
from cnnscope.bounds import bounded, choice, positive
from cnnscope.data import shapetexture
from cnnscope.data.packed import PackedDataset
from cnnscope.data.sample import evenly_spread
from cnnscope.decoder import (
    Decoder,
    DecoderParams,
    binarise,
    dgn_am,
    drop_out,
    reconstruct,
    reconstruction_error,
    train_decoder,
)
from cnnscope.device import pick_device
from cnnscope.errors import CnnscopeError
from cnnscope.features import LayerCapture
from cnnscope.featurevis import channel_activation
from cnnscope.io import write_json
from cnnscope.models.layers import resolve_layer
from cnnscope.models.normalize import normalize, to_pixels, to_unit
from cnnscope.models.registry import LoadedModel, ModelSpec, load_model
from cnnscope.progress import track
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register
from cnnscope.training import Regime

WORLD_SEED = 60_000  # the world's sample for this step, apart from every other step's
PROBE = "probe"
Data = choice("Data", (PROBE, shapetexture.WORLD))


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    featurevis: str = MISSING  # the layer's featurevis output: its units and inverted probe images
    activations: str = MISSING  # the layer's extract step output: each unit's best probe image
    packed: str = MISSING  # the probe set
    layer: str = MISSING
    data: Data = Data.probe  # what the decoder learns from: the probe set, or the world (world models)
    regime: Regime = Regime.standard  # the world's texture regime (data: world)
    images: int = positive(512)  # training images
    held_out: int = positive(64)  # images the errors are measured on
    decoder: DecoderParams = field(default_factory=DecoderParams)
    dgn_steps: int = positive(100)
    dgn_lr: float = bounded(0.05, 0, open_lo=True)


register("decoder", Config, model="convnet")


def _images(cfg: Config, data: PackedDataset) -> np.ndarray:
    """``uint8 (images + held_out, H, W, 3)`` at the probe set's size; the held-out ones last."""
    n, size = cfg.images + cfg.held_out, data.images.shape[1]
    if cfg.data == shapetexture.WORLD:
        return shapetexture.training_set(n, size, shapetexture.REGIMES[cfg.regime], WORLD_SEED)[0]
    if len(data) < n:
        raise CnnscopeError(
            f"decoder: the probe set has {len(data)} images, fewer than images + held_out = {n}; "
            "lower steps.decoder.images or steps.decoder.held_out"
        )
    order = np.random.default_rng(cfg.decoder.seed).permutation(evenly_spread(len(data), n))
    return np.stack([np.asarray(data.images[i]) for i in order])


def _features(loaded: LoadedModel, layer: str, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The layer's features of ``x`` (``(N, 3, H, W)`` in [0, 1]), in batches."""
    with torch.no_grad(), LayerCapture(resolve_layer(loaded.module, layer)) as cap:
        return torch.cat(
            [
                cap(loaded.module, normalize(x[a : a + batch], loaded.mean, loaded.std))
                for a in range(0, len(x), batch)
            ]
        )


def _unit(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """One ``uint8 (H, W, 3)`` image as ``(1, 3, H, W)`` in [0, 1] on ``device``."""
    return to_unit(torch.from_numpy(image)[None].to(device))


def _save(image: torch.Tensor, path: Path) -> None:
    """``(3, H, W)`` in [0, 1] as a PNG."""
    Image.fromarray(to_pixels(image)).save(path)


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(featurevis="featurevis", activations="extract", packed="prepare")
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    resolve_layer(loaded.module, cfg.layer, cfg.layer)  # fail before any work
    vis = FeaturevisArtifact(cfg.featurevis)
    inverted = [int(e["image"]) for e in json.loads(vis.inversions.read_text())]
    units = [int(u) for u in json.loads(vis.traces.read_text())]
    data = PackedDataset.open(cfg.packed)
    x = to_unit(torch.from_numpy(_images(cfg, data)).to(device))
    f = _features(loaded, cfg.layer, x)
    train, test = slice(0, cfg.images), slice(cfg.images, None)
    decoder, losses = train_decoder(f[train], x[train], cfg.decoder, cfg.progress)
    errors = pd.DataFrame(
        [
            {
                "layer": cfg.layer,
                "features": k,
                "error": reconstruction_error(reconstruct(decoder, g), x[test]),
            }
            for k, g in _conditions(f[test], cfg.decoder.seed).items()
        ]
    ).assign(images=cfg.held_out, data=str(cfg.data))
    if not np.isfinite([losses[-1], *errors["error"]]).all():
        raise CnnscopeError(
            f"decoder: training on {cfg.layer} diverged (a non-finite loss or error); lower steps.decoder.lr"
        )
    raised = _dgn(cfg, loaded, decoder, f[train], units, vis)
    with out.write() as tmp:
        made = DecoderArtifact(tmp)
        torch.save(decoder.state_dict(), made.weights)
        errors.to_csv(made.errors, index=False)
        for i in inverted:
            g = _features(loaded, cfg.layer, _unit(np.asarray(data.images[i]), device))
            row = torch.cat([reconstruct(decoder, v) for v in _conditions(g, cfg.decoder.seed).values()], 3)
            _save(row[0], made.reconstruction_image(i))
        for unit, (image, _) in raised.items():
            _save(image, made.dgn_image(unit))
        write_json(made.dgn, {u: row for u, (_, row) in raised.items()})
        write_json(made.losses, losses)
    out.done(
        "%s decoder from %d images: held-out error %s; %d units raised through it",
        cfg.layer,
        cfg.images,
        ", ".join(f"{k} {e:.3f}" for k, e in zip(errors["features"], errors["error"], strict=True)),
        len(raised),
    )


def _conditions(features: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The features each error is measured from: intact, binarised, dropped out (in that order)."""
    return {"intact": features, "binarised": binarise(features), "dropout": drop_out(features, seed)}


def _dgn(
    cfg: Config,
    loaded: LoadedModel,
    decoder: Decoder,
    features: torch.Tensor,
    units: list[int],
    vis: FeaturevisArtifact,
) -> dict[int, tuple[torch.Tensor, dict]]:
    """Each unit's DGN-AM image, and its mean activation beside the pixel-space image's and the best
    probe image's (the same objective)."""
    lo = features.amin((0, 2, 3))[None, :, None, None]
    hi = features.amax((0, 2, 3))[None, :, None, None]
    start = features.mean(0, keepdim=True)
    acts = np.load(ExtractArtifact(cfg.activations).activations, mmap_mode="r")
    device = features.device
    raised = {}
    for unit in track(units, "DGN-AM", enabled=cfg.progress):
        trace = dgn_am(
            loaded.module,
            cfg.layer,
            unit,
            decoder,
            lo,
            hi,
            start,
            loaded.mean,
            loaded.std,
            cfg.dgn_steps,
            cfg.dgn_lr,
        )
        pixel = _unit(np.asarray(Image.open(vis.unit_image(unit)).convert("RGB")), device)
        with torch.no_grad():
            pixel_am = channel_activation(
                loaded.module, cfg.layer, normalize(pixel, loaded.mean, loaded.std), unit
            )
        means = np.asarray(acts[:, unit], np.float32).mean((1, 2))
        raised[unit] = (
            trace.image,
            {
                "through_decoder": trace.values[-1],
                "in_pixels": float(pixel_am),
                "best_probe": float(means.max()),
                "best_probe_image": int(means.argmax()),
                "start": trace.values[0],
            },
        )
    return raised


if __name__ == "__main__":
    run_step("decoder", body)
