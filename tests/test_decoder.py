"""The learned inversion (Dosovitskiy & Brox) and DGN-AM: shapes, the perturbations by hand, the error's
anchors, low layers reconstructed better than high ones on the world, and DGN-AM within its code range."""

from __future__ import annotations

import math

import pytest
import torch

from cnnscope.data import shapetexture
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
from cnnscope.features import LayerCapture
from cnnscope.featurevis import channel_activation
from cnnscope.models.builtin import ConvNet
from cnnscope.models.layers import resolve_layer
from cnnscope.models.normalize import normalize, to_unit

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    ("feature_size", "size", "stages"), [(8, 64, 3), (7, 224, 5), (13, 227, 5), (32, 32, 0)]
)
def test_the_decoder_upsamples_to_the_image_size(feature_size, size, stages):
    d = Decoder(16, feature_size, size, width=32)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in d.modules()) == stages
    assert d(torch.randn(2, 16, feature_size, feature_size)).shape == (2, 3, size, size)


def test_binarise_keeps_the_sign_pattern_and_the_norm():
    f = torch.tensor([[[[3.0, 0.0, -4.0]]], [[[0.0, 0.0, 0.0]]]])
    got = binarise(f)
    c = 5 / math.sqrt(2)  # ||(3, 0, -4)|| = 5 over two non-zero values
    torch.testing.assert_close(got[0, 0, 0], torch.tensor([c, 0.0, -c]))
    assert (got[1] == 0).all()  # an all-zero image stays zero


def test_dropout_zeroes_half_and_keeps_the_norm():
    f = torch.rand(3, 8, 6, 6) + 0.1
    got = drop_out(f, seed=4)
    zeroed = (got == 0).float().mean().item()
    assert 0.4 < zeroed < 0.6
    torch.testing.assert_close(got.flatten(1).norm(dim=1), f.flatten(1).norm(dim=1))
    for image, original in zip(got, f, strict=True):  # the kept values, scaled by one factor per image
        ratio = image[image != 0] / original[image != 0]
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    torch.testing.assert_close(drop_out(f, seed=4), got)  # the same for the same seed
    assert not torch.equal(drop_out(f, seed=5), got)


def test_a_dead_layer_gives_the_mean_image_not_a_division_by_zero():
    x = torch.rand(16, 3, 8, 8)
    decoder, losses = train_decoder(torch.zeros(16, 4, 4, 4), x, DecoderParams(steps=60, batch_size=8))
    assert math.isfinite(losses[-1])
    out = reconstruct(decoder, torch.zeros(16, 4, 4, 4))
    assert (out == out[:1]).all()  # one image whatever the input: the mean image, as well as it learned it


def test_the_error_is_one_for_the_mean_image_and_zero_for_the_images():
    x = torch.rand(5, 3, 4, 4)
    assert reconstruction_error(x.clone(), x) == 0
    assert reconstruction_error(x.mean(0, keepdim=True).expand_as(x), x) == pytest.approx(1.0)


def _world(n: int, size: int = 32) -> torch.Tensor:
    images, _, _ = shapetexture.training_set(n, size, shapetexture.REGIMES["standard"], 7)
    return to_unit(torch.from_numpy(images))


def _features(net: torch.nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), LayerCapture(resolve_layer(net, layer)) as cap:
        return cap(net, normalize(x, MEAN, STD))


@pytest.fixture(scope="module")
def world_decoders():
    """Decoders of conv2 and conv5 of an untrained ConvNet on 256 world images, and 64 held out."""
    torch.manual_seed(0)
    net = ConvNet(16, 8).eval()
    x = _world(320)
    params = DecoderParams(steps=150, batch_size=16)
    made = {}
    for layer in ("conv2", "conv5"):
        f = _features(net, layer, x)
        decoder, losses = train_decoder(f[:256], x[:256], params)
        made[layer] = (decoder, losses, f)
    return net, x, made, params


def test_a_low_layer_is_reconstructed_better_than_a_high_one(world_decoders):
    _, x, made, _ = world_decoders
    errors = {}
    for layer, (decoder, losses, f) in made.items():
        assert losses[-1] < losses[0] / 2  # it learned
        intact = reconstruction_error(reconstruct(decoder, f[256:]), x[256:])
        perturbed = [
            reconstruction_error(reconstruct(decoder, g), x[256:])
            for g in (binarise(f[256:]), drop_out(f[256:], 0))
        ]
        assert all(intact < p for p in perturbed), layer  # trained on intact features: perturbing them costs
        errors[layer] = intact
    assert errors["conv2"] < 0.6 and errors["conv2"] < errors["conv5"]


def test_training_is_the_same_bytes_for_the_same_seed(world_decoders):
    _, x, made, params = world_decoders
    f = made["conv5"][2]
    short = DecoderParams(steps=5, batch_size=8, seed=params.seed)
    a, _ = train_decoder(f[:64], x[:64], short)
    b, _ = train_decoder(f[:64], x[:64], short)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_dgn_am_raises_the_unit_within_the_code_range(world_decoders, monkeypatch):
    net, _, made, _ = world_decoders
    decoder, _, f = made["conv5"]
    lo, hi = f.amin((0, 2, 3))[None, :, None, None], f.amax((0, 2, 3))[None, :, None, None]
    seen = []
    original = decoder.forward

    def watched(code: torch.Tensor) -> torch.Tensor:  # every code the optimisation decodes
        seen.append(code.detach().clone())
        return original(code)

    monkeypatch.setattr(decoder, "forward", watched)
    trace = dgn_am(net, "conv5", 3, decoder, lo, hi, f.mean(0, keepdim=True), MEAN, STD, steps=30, lr=0.05)
    assert trace.values[-1] > trace.values[0]
    assert all(((c >= lo - 1e-6) & (c <= hi + 1e-6)).all() for c in seen[1:])  # clamped after each step
    with torch.no_grad():
        again = channel_activation(net, "conv5", normalize(trace.image[None], MEAN, STD), 3)
    assert again.item() == pytest.approx(trace.values[-1], rel=1e-5)  # the image is the decoder's output
    assert trace.image.min() >= 0 and trace.image.max() <= 1


def test_dgn_am_drives_low_layer_units_above_every_world_image(world_decoders):
    """The issue's check, where the decoder reconstructs well (conv2, error below 0.6): DGN-AM's image
    raises most units above their best of the 320 world images (the default study measures every
    featurevis layer: README)."""
    net, _, made, _ = world_decoders
    decoder, _, f = made["conv2"]
    lo, hi = f.amin((0, 2, 3))[None, :, None, None], f.amax((0, 2, 3))[None, :, None, None]
    best = f.mean((2, 3)).amax(0)  # each unit's best image, on DGN-AM's objective (its mean activation)
    raised = [
        dgn_am(net, "conv2", u, decoder, lo, hi, f[:256].mean(0, keepdim=True), MEAN, STD, steps=40, lr=0.05)
        for u in range(4)
    ]
    assert sum(t.values[-1] > best[u] for u, t in enumerate(raised)) >= 3
