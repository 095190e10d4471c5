"""Step ``lcam``: train a model's L-CAM attention modules (Fm and Img) on its training data.

The trained attention is this step's artifact, so scoring, galleries and reports never retrain it.
``data: world`` trains on the shape/texture world the built-in models learn (in the model's
``regime``); any other value is an ImageNet-layout folder of training images for a real model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import MISSING

from cnnscope.artifacts import LcamArtifact
from cnnscope.attribution.lcam import VARIANTS, LCAMParams, train_lcam
from cnnscope.bounds import bounded, positive
from cnnscope.checkpoint import Checkpoint
from cnnscope.data import shapetexture
from cnnscope.data.imagefolder import image_folder, load_images
from cnnscope.data.shapetexture import WORLD
from cnnscope.device import pick_device
from cnnscope.io import atomic_file, save_torch, write_json
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import LoadedModel, ModelSpec, load_model
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, Resumable, register
from cnnscope.training import Regime


@dataclass
class Config(OnDevice, Resumable):
    model: ModelSpec = MISSING
    name: str = MISSING
    layer: str = MISSING  # the class-activation layer (the attribution stage's)
    data: str = WORLD  # world | an ImageNet-layout folder of training images
    regime: Regime = Regime.standard  # the world's texture regime (data: world)
    world_images: int = positive(2000)  # world training images drawn (data: world)
    image_size: int = bounded(64, 8)  # world image size, or the folder images' crop size
    lcam: LCAMParams = field(default_factory=LCAMParams)


register("lcam", Config, model="convnet")


def _sampler(cfg: Config, loaded: LoadedModel, classes: int, device: torch.device):
    """``sample(generator) -> (images, labels)``: a training batch, normalised, on the device."""
    bs = cfg.lcam.batch_size
    if cfg.data == WORLD:
        agreement = shapetexture.REGIMES[cfg.regime]
        # A sample of the world in the model's regime, seeded apart from the train step's (10,000+).
        images, labels, _ = shapetexture.training_set(
            cfg.world_images, cfg.image_size, agreement, seed=40_000
        )
        pixels, targets = torch.from_numpy(images), torch.from_numpy(labels)

        def sample(gen: torch.Generator):
            idx = torch.randint(len(pixels), (bs,), generator=gen)
            return loaded.normalize(pixels[idx].to(device)), targets[idx].to(device)

        return sample
    paths, labels = image_folder(cfg.data, classes, loaded.class_names)

    def sample_folder(gen: torch.Generator):
        idx = torch.randint(len(paths), (bs,), generator=gen).numpy()
        pixels = torch.from_numpy(load_images([paths[i] for i in idx], cfg.image_size))
        return loaded.normalize(pixels.to(device)), torch.from_numpy(labels[idx]).to(device)

    return sample_folder


def body(cfg: Config) -> None:
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    resolve_layer(loaded.module, cfg.layer, cfg.name)  # fail before any work
    classes = loaded.outputs(cfg.image_size)
    sample = _sampler(cfg, loaded, classes, device)
    out = Output(cfg)
    out.identify(weights=loaded.digest(), device=str(device), threads=cfg.threads)
    metrics = {}
    with out.write(resumable=True) as tmp:
        for variant in VARIANTS:
            done = LcamArtifact(tmp).attention(variant)
            if done.is_file():  # a killed run finished this variant
                metrics[variant] = torch.load(done, weights_only=True)["losses"]
                continue
            ckpt = Checkpoint(tmp / f"{variant}.ckpt", cfg.checkpoint_s)
            attention, losses = train_lcam(
                loaded.module, cfg.layer, variant, classes, sample, cfg.lcam, cfg.progress, ckpt
            )
            state = {
                "state_dict": attention.state_dict(),
                "variant": variant,
                "layer": cfg.layer,
                "losses": losses,
            }
            with atomic_file(done) as t:  # a kill mid-save must not leave a 'finished' variant
                save_torch(state, t)
            ckpt.path.unlink(missing_ok=True)
            metrics[variant] = losses
        write_json(
            LcamArtifact(tmp).metrics,
            {
                v: {"first_loss": float(np.mean(ls[:10])), "last_loss": float(np.mean(ls[-10:]))}
                for v, ls in metrics.items()
            },
        )
    out.done("%s attention at %s trained (%s)", cfg.name, cfg.layer, ", ".join(VARIANTS))


if __name__ == "__main__":
    run_step("lcam", body)
