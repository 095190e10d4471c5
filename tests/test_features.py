"""Feature extraction: stored activations match a plain forward pass; hooks never leak."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnscope.features import ExtractParams, LayerCapture, extract_layer
from cnnscope.models.builtin import ConvNet
from cnnscope.models.registry import LoadedModel


def _loaded(model):
    return LoadedModel(model.eval(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_stored_activations_match_forward(packed, tmp_path):
    torch.manual_seed(0)
    loaded = _loaded(ConvNet(width=8))
    info = extract_layer(
        loaded, "conv3", packed.images, tmp_path, ExtractParams(batch_size=7), progress=False
    )
    acts = np.load(tmp_path / "activations.npy")
    x = loaded.normalize(torch.from_numpy(np.array(packed.images)))
    with torch.no_grad():
        m = loaded.module
        want = m.conv3(m.pool2(m.conv2(m.conv1(x)))).numpy()
    assert info["shape"] == list(want.shape) and acts.dtype == np.float16
    np.testing.assert_allclose(acts.astype(np.float32), want, rtol=2e-3, atol=2e-3)
    maxima = np.load(tmp_path / "maxima.npy")
    np.testing.assert_allclose(maxima, want.reshape(*want.shape[:2], -1).max(2), rtol=1e-5)
    rng = np.load(tmp_path / "unit_range.npy")
    np.testing.assert_allclose(rng[1], want.max(axis=(0, 2, 3)), rtol=1e-5)
    assert all(not mod._forward_hooks for mod in m.modules())


class _InplaceNet(nn.Module):
    """A conv whose output the next in-place ReLU overwrites (a trap for naive hooks)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


def test_capture_survives_inplace_relu_and_removes_its_hook():
    torch.manual_seed(0)
    net = _InplaceNet().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = net.conv(x)
        with LayerCapture(net.conv, stop=False) as cap:
            got = cap(net, x)
    assert (got < 0).any(), "the pre-ReLU output was overwritten by the in-place ReLU"
    assert torch.equal(got, want)
    assert not net.conv._forward_hooks


def test_hook_is_removed_even_when_the_forward_fails():
    net = _InplaceNet()
    try:
        with LayerCapture(net.conv) as cap:
            cap(net, torch.randn(1, 5, 8, 8))  # wrong channel count
    except RuntimeError:
        pass
    assert not net.conv._forward_hooks
