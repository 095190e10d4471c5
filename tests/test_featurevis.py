"""Activation maximization, inversion, feature grids, and the attribution metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnscope.attribution.metrics import deletion_insertion, drop_and_increase
from cnnscope.featurevis import (
    FourierImage,
    PixelImage,
    channel_activation,
    feature_grid,
    filter_grid,
    first_conv,
    invert,
    maximize,
)
from cnnscope.models.builtin import ConvNet
from cnnscope.training import TrainSpec, train

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet(num_classes=4, width=8).eval()


@pytest.mark.parametrize("param,octaves", [("fourier", ()), ("pixel", ()), ("pixel", (48,))])
def test_maximization_raises_the_unit_well_above_its_start(param, octaves):
    net = _net()
    gen = torch.Generator().manual_seed(0)
    start = (
        FourierImage(32, gen, torch.device("cpu"))
        if param == "fourier"
        else PixelImage(32, gen, torch.device("cpu"))
    )()
    norm = lambda x: (x - 0.5) / 0.25  # noqa: E731
    with torch.no_grad():
        before = float(channel_activation(net, "conv3", norm(start), unit=2))
    trace = maximize(net, "conv3", 2, MEAN, STD, size=32, steps=48, lr=0.08, param=param, octaves=octaves)
    with torch.no_grad():
        after = float(channel_activation(net, "conv3", norm(trace.image[None]), unit=2))
    assert trace.image.shape == (3, 48, 48) if octaves else (3, 32, 32)
    assert trace.image.min() >= 0 and trace.image.max() <= 1
    assert after > 10 * max(before, 1e-3), (before, after)  # at least tenfold
    assert len(trace.values) == 48 * (1 + len(octaves))
    assert all(not m._forward_hooks for m in net.modules())


def test_units_silent_on_the_start_image_still_rise():
    """Plain gradients cannot leave a dead ReLU; the redirected gradient of the first steps can."""
    net, _ = train(TrainSpec(steps=150, image_size=32, n_train=800, n_val=100, width=8), progress=False)
    start = PixelImage(32, torch.Generator().manual_seed(0), torch.device("cpu"))()
    with torch.no_grad():
        dead = [u for u in range(32) if float(channel_activation(net, "conv5", (start - 0.5) / 0.25, u)) == 0]
    assert len(dead) >= 4, "the test needs units that are silent at the start"
    risen = 0
    for u in dead[:4]:
        plain = maximize(net, "conv5", u, MEAN, STD, size=32, steps=32, param="pixel", redirect_steps=0)
        redirected = maximize(net, "conv5", u, MEAN, STD, size=32, steps=32, param="pixel")
        assert max(plain.values) == 0
        risen += redirected.values[-1] > 0.5
    assert risen >= 3


def test_inversion_lowers_the_feature_loss_tenfold():
    net = _net()
    target = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    recon, losses = invert(net, "conv2", target, MEAN, STD, steps=150, lr=0.05)
    assert recon.shape == target.shape and recon.min() >= 0 and recon.max() <= 1
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_feature_grid_tiles_every_map():
    maps = torch.arange(5 * 4 * 4, dtype=torch.float32).view(5, 4, 4)
    grid = feature_grid(maps, columns=3, pad=1)
    assert grid.shape == (2 * 5, 3 * 5)
    assert grid[0, 0] == 0 and grid[3, 3] == 1  # each map scaled to [0, 1] on its own
    assert grid[5:, 10:].eq(1).all()  # the sixth cell is empty


class _LeftRight(nn.Module):
    """Logits are 10x the mean of the left and of the right half of the image."""

    def forward(self, x):
        w = x.shape[-1] // 2
        return 10 * torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1)


def test_drop_and_increase_by_hand():
    model = _LeftRight()
    x = torch.ones(2, 3, 4, 4)
    x[1, :, :, 2:] = 0  # image 1: right half dark
    left = torch.zeros(2, 4, 4)
    left[:, :, :2] = 1
    t = torch.tensor([0, 0])
    drop, inc = drop_and_increase(model, x, left, t)
    y = torch.softmax(model(x), 1)[:, 0]
    o = torch.softmax(model(x * left[:, None]), 1)[:, 0]
    assert drop == pytest.approx(float(100 * ((y - o).clamp(min=0) / y).mean()))
    assert inc == pytest.approx(float(100 * (o > y).float().mean()))
    assert inc == 50.0  # image 0 gains (its right half no longer competes); image 1 is unchanged


def test_a_faithful_map_deletes_fast_and_inserts_fast():
    model = _LeftRight()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    good = torch.zeros(3, 8, 8)
    good[:, :, :4] = 1 + torch.rand(3, 8, 4)  # the left half drives class 0
    bad = 2 - good
    t = torch.zeros(3, dtype=torch.long)
    del_good, ins_good = deletion_insertion(model, x, good, t, steps=8)
    del_bad, ins_bad = deletion_insertion(model, x, bad, t, steps=8)
    assert (del_good < del_bad).all() and (ins_good > ins_bad).all()
    assert del_good.shape == (3,)


def test_filter_grid_shows_each_filter_in_its_colours():
    weight = torch.zeros(3, 3, 2, 2)
    weight[0, 0] = 1.0  # pure red
    weight[1, 2, 0, 0] = 2.0  # one blue pixel on black
    weight[2] = torch.arange(12.0).view(3, 2, 2)  # a ramp over colours and pixels
    grid = filter_grid(weight, columns=2, pad=1, zoom=3)
    assert grid.shape == (2 * (6 + 1), 2 * (6 + 1), 3)
    assert torch.equal(grid[:6, :6], torch.tensor([1.0, 0.0, 0.0]).expand(6, 6, 3))
    assert torch.equal(grid[0, 7], torch.tensor([0.0, 0.0, 1.0])) and torch.equal(grid[5, 12], torch.zeros(3))
    torch.testing.assert_close(grid[7, 0], torch.tensor([0.0, 4.0, 8.0]) / 11)  # its own range, all colours
    assert torch.equal(grid[6], torch.ones(14, 3)) and torch.equal(grid[7:, 7:], torch.ones(7, 7, 3))  # white
    with pytest.raises(ValueError, match="4 input channels"):
        filter_grid(torch.zeros(2, 4, 3, 3))


class _LateStem(nn.Module):
    """Registers its head convolution before its stem: the first to run is the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(4, 2, 1)
        self.stem = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.head(self.stem(x)).mean((2, 3))


def test_first_conv_is_the_first_that_runs():
    net = _LateStem()
    assert first_conv(net, torch.zeros(1, 3, 8, 8)) is net.stem
    assert not any(m._forward_hooks for m in net.modules())
    assert first_conv(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), torch.zeros(1, 3)) is None
