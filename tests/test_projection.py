"""A unit's maximum projected to pixels (DeconvNet) and the receptive field it is cropped to: fields
computed by hand and ResNet-18's published sizes, the projection re-derived as Zeiler & Fergus
describe it (unpooling by switches, rectification, transposed filters), the strip's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnscope.features import LayerCapture
from cnnscope.projection import Box, Projections, project, receptive_field, strip


def _net() -> nn.Sequential:
    """conv 3x3 (pad 1), ReLU, max pool 2, conv 3x3 (pad 1), ReLU: layer ``4``'s position (r, c)
    sees pooled rows r-1..r+1, so pre-pool rows 2r-2..2r+3, so image rows 2r-3..2r+4."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()
    )


def _by_hand(r: int, c: int, size: int = 16) -> Box:
    return Box(max(0, 2 * r - 3), max(0, 2 * c - 3), min(size, 2 * r + 5), min(size, 2 * c + 5))


@pytest.mark.parametrize("where", [(0, 0), (2, 3), (4, 4), (7, 7), (7, 0)])
def test_receptive_field_of_a_small_net_matches_the_hand_count(where):
    assert receptive_field(_net(), "4", (16, 16), where) == _by_hand(*where)


@pytest.mark.parametrize(("layer", "size"), [("layer1", 43), ("layer2", 99)])
def test_receptive_field_of_resnet18_has_its_published_size(layer, size):
    """Through residual branches and the strided 1x1 shortcut, ResNet-18's fields are 43 and 99 pixels
    (conv1 7/2, max pool 3/2, then 3x3 convolutions), each padded by half its kernel, so the field of
    position (r, c) is centred on pixel (stride·r, stride·c)."""
    model = torchvision.models.resnet18(weights=None)
    stride = {"layer1": 4, "layer2": 8}[layer]
    box = receptive_field(model, layer, (224, 224), (10, 12))
    centre = (10 * stride, 12 * stride)
    assert (box.bottom - box.top, box.right - box.left) == (size, size)
    assert ((box.top + box.bottom - 1) / 2, (box.left + box.right - 1) / 2) == centre


def _zeiler_fergus(net: nn.Sequential, x: torch.Tensor, unit: int) -> torch.Tensor:
    """The DeconvNet of the paper, written out: keep the unit's maximum, rectify, filter with the
    transposed filters, unpool with the switches, rectify, filter with the transposed filters."""
    conv1, _, _, conv2, _ = net
    with torch.no_grad():
        a1 = F.relu(conv1(x))
        pooled, switches = F.max_pool2d(a1, 2, return_indices=True)
        out = F.relu(conv2(pooled))
        maps = []
        for n in range(len(x)):
            signal = torch.zeros_like(out[n : n + 1])
            flat = out[n, unit].flatten().argmax()
            r, c = divmod(int(flat), out.shape[3])
            signal[0, unit, r, c] = out[n, unit, r, c]
            down = F.conv_transpose2d(F.relu(signal), conv2.weight, padding=1)
            up = F.max_unpool2d(down, switches[n : n + 1], 2, output_size=a1.shape[2:])
            maps.append(F.conv_transpose2d(F.relu(up), conv1.weight, padding=1))
    return torch.cat(maps)


def test_projection_is_zeiler_and_fergus_deconvnet_and_zero_outside_the_field():
    net, unit = _net(), 2
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    proj = project(net, "4", x, unit)
    assert torch.allclose(proj.maps, _zeiler_fergus(net, x, unit), atol=1e-6)
    with LayerCapture(net[4]) as cap:
        acts = cap(net, x)[:, unit]
    assert torch.allclose(proj.values, acts.flatten(1).max(1).values)
    for n, ((r, c), box) in enumerate(zip(proj.where, proj.fields, strict=True)):
        assert acts[n, r, c] == acts[n].max() and box == _by_hand(r, c)
        outside = proj.maps[n].abs().sum(0)
        outside[box.top : box.bottom, box.left : box.right] = 0
        assert outside.max() == 0
        assert proj.maps[n].abs().sum() > 0  # the unit fires somewhere in every random image


def test_strip_puts_each_projection_above_its_patch_and_pads_the_border_fields():
    images = np.arange(2 * 6 * 6 * 3, dtype=np.uint8).reshape(2, 6, 6, 3)
    maps = torch.zeros(2, 3, 6, 6)
    maps[0, :, 1, 1], maps[0, :, 2, 2] = 2.0, -1.0
    fields = [Box(1, 1, 4, 4), Box(0, 0, 2, 3)]  # 3x3 and, at the border, 2x3
    out = strip(images, Projections(maps, torch.ones(2), [(0, 0), (0, 0)], fields)).astype(int)
    assert out.shape == (2 * 3 + 4, 2 * (3 + 4), 3)
    first = out[2:8, 2:5]
    assert first[0, 0].tolist() == [255] * 3 and first[1, 1].tolist() == [64] * 3  # 0.5 ± m / 2·max|m|
    assert first[0, 1].tolist() == [128] * 3  # zero is grey
    assert (first[3:] == images[0, 1:4, 1:4]).all()
    second = out[2:, 9:12]
    assert (second[:2] == 128).all() and (second[2:4] == images[1, 0:2, 0:3]).all()
    assert (second[4:] == 255).all()  # padded to the tallest tile
