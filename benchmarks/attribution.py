"""Time per image of every attribution method, and of activation maximization and inversion steps.

    python benchmarks/attribution.py [--arch resnet18 --layer layer4 --size 224 --batch 8 --device cuda]

Random weights and inputs (timing does not depend on them), L-CAM with an untrained attention of
the right shape. Prints one table row per method: time per image and forward/backward passes.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from cnnscope.attribution.lcam import Attention
from cnnscope.attribution.suite import METHODS, TRAINED, attribute
from cnnscope.device import pick_device
from cnnscope.featurevis import invert, maximize
from cnnscope.models.registry import IMAGENET_MEAN, IMAGENET_STD


def _timed(fn, device: torch.device) -> float:
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _lcam_attention(model: torch.nn.Module, layer: str, size: int, device: torch.device) -> dict:
    """An untrained L-CAM attention of the layer's width for each L-CAM method (timing only)."""
    from cnnscope.features import LayerCapture
    from cnnscope.models.layers import resolve_layer

    x = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad():
        classes = model(x).shape[1]
        with LayerCapture(resolve_layer(model, layer)) as cap:
            feats = cap(model, x)
    attention = Attention(feats.shape[1], classes).to(device)
    return dict.fromkeys(TRAINED, attention)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=16, help="optimisation steps to time (AM, inversion)")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    device = pick_device(a.device)
    torch.manual_seed(0)
    model = torchvision.models.get_model(a.arch).eval().to(device)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    with torch.no_grad():
        targets = model(x).argmax(1)
    # The study's settings (MethodParams' defaults) and an untrained L-CAM attention.
    attention = _lcam_attention(model, a.layer, a.size, device)
    attribute(model, a.layer, x[:1], list(METHODS), targets[:1], attention=attention)  # warm-up
    _, cost = attribute(model, a.layer, x, list(METHODS), targets, attention=attention)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    am = _timed(lambda: maximize(model, a.layer, 0, mean, std, size=a.size, steps=a.steps), device)
    inv = _timed(lambda: invert(model, a.layer, x[0].sigmoid(), mean, std, steps=a.steps), device)
    print(
        f"device: {device}  model: {a.arch} {a.layer}  images: {a.batch} at {a.size}px  "
        f"threads: {torch.get_num_threads()}"
    )
    print(f"{'method':<34} {'ms / image':>12} {'forward':>8} {'backward':>8}")
    for r in cost.itertuples():
        ms = 1000 * r.seconds_per_image
        print(f"{r.method:<34} {ms:12.1f} {r.forward_passes:8.0f} {r.backward_passes:8.0f}")
    print(f"{'activation maximization (per step)':<34} {1000 * am / a.steps:12.1f}")
    print(f"{'inversion (per step)':<34} {1000 * inv / a.steps:12.1f}")


if __name__ == "__main__":
    main()
