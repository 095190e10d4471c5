"""Learned inversion and DGN-AM: an up-convolutional decoder from a layer's features back to the image.

* :class:`Decoder` and :func:`train_decoder` -- Dosovitskiy & Brox (2016), "Inverting visual
  representations with convolutional networks": a network trained to reconstruct the input image from
  a layer's features with a pixel loss ``||D(phi(x)) - x||^2``, the model frozen. A 3x3 convolution,
  then one transposed convolution (4x4, stride 2) per doubling of the resolution with leaky ReLUs
  (slope 0.2, the paper's), the width halved at each, and a 3x3 convolution to RGB; the features are
  divided by their standard deviation on the training set first, so one learning rate serves every
  layer. Unlike the optimisation-based inversion (Mahendran & Vedaldi), the decoder learns what natural
  images of its training set look like, which is why it reconstructs higher layers better.
* :func:`reconstruction_error` -- the error on held-out images, normalised by their variance about
  their mean image: ``sum ||D(phi(x)) - x||^2 / sum ||x - mean(x)||^2``; 1 is what the mean image
  scores, 0 a perfect reconstruction.
* :func:`binarise` and :func:`drop_out` -- the paper's probes of what a layer's code keeps: the sign
  pattern with the magnitudes made equal (each image's features ``c * sign(phi)``, ``c`` keeping the
  L2 norm), and 50% of the values set to zero, the rest scaled to keep the L2 norm. The decoder trained
  on intact features reconstructs from them.
* :func:`dgn_am` -- Nguyen et al. (2016), "Synthesizing the preferred inputs for neurons in neural
  networks via deep generator networks": activation maximisation of a unit through the decoder,
  optimising the code ``h`` (not pixels) so that the image is always the decoder's output ``D(h)``,
  ``h`` clamped to each channel's range on the decoder's training set.

Everything runs on the device of the model's parameters; images live in [0, 1] and the model's own
normalisation is applied inside.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.attribution.backprop import ReLURule, redirected_rule
from cnnscope.bounds import bounded, positive
from cnnscope.featurevis import Trace, channel_activation
from cnnscope.models.layers import evaluating
from cnnscope.models.normalize import normalize
from cnnscope.optim import Optimizer
from cnnscope.progress import track

LEAK = 0.2  # the leaky ReLUs' slope (Dosovitskiy & Brox)


@dataclass
class DecoderParams:
    """The decoder's size and training (the decoder step nests them)."""

    width: int = positive(32)  # channels after the first convolution, halved per upsampling (8 at least)
    steps: int = positive(300)  # training steps
    batch_size: int = positive(16)
    lr: float = bounded(2e-3, 0, open_lo=True)  # Adam's
    seed: int = bounded(0, 0)  # initial weights and batch order


class Decoder(nn.Module):
    """``(N, C, h, w)`` features -> ``(N, 3, size, size)`` images (see the module docstring)."""

    def __init__(self, channels: int, feature_size: int, size: int, width: int, scale: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("scale", torch.tensor(float(scale)))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(LEAK)]
        w = width
        for _ in range(max(0, math.ceil(math.log2(size / feature_size)))):
            layers += [nn.ConvTranspose2d(w, max(8, w // 2), 4, 2, 1), nn.LeakyReLU(LEAK)]
            w = max(8, w // 2)
        layers.append(nn.Conv2d(w, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.net(features / self.scale)
        if out.shape[-1] != self.size or out.shape[-2] != self.size:  # resolutions not a power of 2 apart
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return out


def train_decoder(
    features: torch.Tensor, images: torch.Tensor, params: DecoderParams, progress: bool = False
) -> tuple[Decoder, list[float]]:
    """A :class:`Decoder` trained to map ``features`` ``(N, C, h, w)`` to ``images`` ``(N, 3, H, W)``
    in [0, 1], and its pixel loss (mean squared error) at every step. The same bytes for the same
    inputs and seed on one thread. Features that are all equal (a dead layer) are not scaled: the
    decoder then learns the mean image, and its error says so."""
    gen = torch.Generator().manual_seed(params.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        decoder = Decoder(
            features.shape[1],
            features.shape[-1],
            images.shape[-1],
            params.width,
            float(features.std()) or 1.0,
        ).to(features.device)
    opt = Optimizer(list(decoder.parameters()), "adam", params.lr)
    losses = []
    for _ in track(range(params.steps), "decoder", enabled=progress):
        batch = torch.randint(len(features), (params.batch_size,), generator=gen).to(features.device)
        loss = F.mse_loss(decoder(features[batch]), images[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return decoder.eval(), losses


@torch.no_grad()
def reconstruct(decoder: Decoder, features: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``decoder``'s images of ``features``, in batches, clipped to [0, 1]."""
    out = [decoder(features[a : a + batch_size]) for a in range(0, len(features), batch_size)]
    return torch.cat(out).clamp(0, 1)


def reconstruction_error(reconstructed: torch.Tensor, images: torch.Tensor) -> float:
    """``sum ||x_hat - x||^2 / sum ||x - mean(x)||^2`` over the images (1: the mean image's error)."""
    spread = (images - images.mean(0, keepdim=True)).pow(2).sum()
    return float((reconstructed - images).pow(2).sum() / spread)


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))


def binarise(features: torch.Tensor) -> torch.Tensor:
    """Each image's sign pattern at one magnitude, its L2 norm kept (an all-zero image stays zero)."""
    signs = features.sign()
    return signs * _norms(features) / _norms(signs).clamp(min=1)


def drop_out(features: torch.Tensor, seed: int, rate: float = 0.5) -> torch.Tensor:
    """``rate`` of each image's values set to zero at random (from ``seed``), the rest scaled so the
    image's L2 norm is kept."""
    gen = torch.Generator().manual_seed(seed)
    kept = features * (torch.rand(features.shape, generator=gen) >= rate).to(features)
    return kept * _norms(features) / _norms(kept).clamp(min=torch.finfo(features.dtype).tiny)


def dgn_am(
    model: nn.Module,
    layer: str,
    unit: int,
    decoder: Decoder,
    lo: torch.Tensor,
    hi: torch.Tensor,
    start: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    steps: int,
    lr: float,
    redirect_steps: int = 16,
) -> Trace:
    """Raise ``unit``'s mean activation in ``layer`` through the decoder: the code, from ``start``
    ``(1, C, h, w)``, is kept within ``[lo, hi]`` (``(1, C, 1, 1)``: each channel's range where the
    decoder learned); the image is ``D(h)`` clipped to [0, 1]. For the first ``redirect_steps`` steps
    the model's ReLUs use the redirected gradient, as pixel-space maximisation does
    (:func:`cnnscope.featurevis.maximize`), so a unit silent on the starting image can still rise.
    Returns the image and the activation at every step (and on the final image)."""
    code = start.clone().requires_grad_(True)
    opt = Optimizer([code], "adam", lr)
    values: list[float] = []
    decoder.requires_grad_(False)
    with evaluating(model):
        for step in range(steps):
            with ReLURule(redirected_rule) if step < redirect_steps else contextlib.nullcontext():
                act = channel_activation(model, layer, normalize(decoder(code).clamp(0, 1), mean, std), unit)
            opt.zero_grad()
            (-act.mean()).backward()
            opt.step()
            with torch.no_grad():
                code.copy_(torch.maximum(torch.minimum(code, hi), lo))
            values.append(act.item())
        with torch.no_grad():
            image = decoder(code).clamp(0, 1)
            values.append(channel_activation(model, layer, normalize(image, mean, std), unit).item())
    return Trace(image[0], values)
