"""A model's input normalisation, written once: the registry, training and feature visualisation all
feed networks through :func:`normalize`, so a model sees the same input statistics everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> ``float (B, 3, H, W)`` in [0, 1], on the tensor's device."""
    return images_uint8.permute(0, 3, 1, 2).float().div_(255)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """The inverse of :func:`to_unit` for one image: ``float (3, H, W)`` in [0, 1] -> ``uint8 (H, W, 3)``."""
    return (image.permute(1, 2, 0).cpu().numpy().clip(0, 1) * 255).round().astype(np.uint8)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per colour channel of ``float (B, 3, H, W)`` images in [0, 1]."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def unnormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The inverse of :func:`normalize`: the images in [0, 1] that a model saw."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return x * s + m
