"""SISE and Ada-SISE against a numpy re-derivation, scikit-image's Otsu threshold, and their blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage.filters import threshold_otsu
from test_attribution import X, _convnet, _InplaceNet
from torch import nn

from cnnscope.attribution.sise import SISE, AdaSISE, otsu_threshold
from cnnscope.errors import ModelError
from cnnscope.models.builtin import TinyResNet


def test_otsu_threshold_is_scikit_images():
    rng = np.random.default_rng(0)
    rows = [rng.random(500), np.r_[rng.normal(0, 1, 300), rng.normal(4, 0.5, 90)], rng.random(7) ** 3]
    for row in rows:
        got = otsu_threshold(torch.from_numpy(row)[None])[0].item()
        assert got == pytest.approx(threshold_otsu(row), abs=1e-12)
    assert otsu_threshold(torch.full((1, 4), 2.5)).item() == 2.5  # a constant row: its value
    both = otsu_threshold(torch.from_numpy(np.stack([rows[0], rows[0][::-1] * 2])))
    assert both[1].item() == pytest.approx(2 * both[0].item(), rel=1e-9)  # row by row, scale-equivariant


@pytest.mark.parametrize(
    ("net", "layer", "size", "want"),
    [
        (_convnet(), "conv5", 32, ["conv2", "conv4", "conv5"]),  # the ends before each pooling
        (_convnet(), "conv4", 32, ["conv2", "conv4"]),
        (TinyResNet(5, 8), "layer3", 32, ["layer1", "layer2", "layer3"]),
        (torchvision.models.resnet18(), "layer4", 64, ["relu", "layer1", "layer2", "layer3", "layer4"]),
        # a bottleneck's stride sits in its second convolution: its first still runs at the old size
        (torchvision.models.resnet50(), "layer4", 64, ["relu", "layer1", "layer2", "layer3", "layer4"]),
        (
            torchvision.models.vgg11(),
            "features.19",
            32,
            ["features.1", "features.4", "features.9", "features.14", "features.19"],
        ),
    ],
    ids=["convnet", "convnet-conv4", "tinyresnet", "resnet18", "resnet50", "vgg11"],
)
def test_block_ends_are_the_last_modules_before_each_downsampling(net, layer, size, want):
    names, acts, grads, _ = SISE(net.eval(), layer).blocks(torch.randn(2, 3, size, size))
    assert names == want
    sizes = [a.shape[-1] for a in acts]
    assert sizes == sorted(set(sizes), reverse=True)  # one block per resolution, coarser and coarser
    assert [g.shape for g in grads] == [a.shape for a in acts]


class _TwoBlocks(nn.Module):
    """An identity 1x1 convolution, ``block1`` at 4x4, 2x2 average pooling, ``block2`` at 2x2, a
    linear head on the means: the gradients are the head's weights over the pixels, by hand."""

    def __init__(self, head: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.block1, self.pool, self.block2 = nn.Identity(), nn.AvgPool2d(2), nn.Identity()
        self.head = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
            self.head.weight.copy_(head)

    def forward(self, x):
        return self.head(self.block2(self.pool(self.block1(self.conv(x)))).mean((2, 3)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _minmax(v: np.ndarray) -> np.ndarray:
    return (v - v.min()) / (v.max() - v.min())


def _sise_by_hand(x: np.ndarray, head: np.ndarray, t: int, channels: list[int]) -> np.ndarray:
    """SISE's four phases in numpy for :class:`_TwoBlocks`: ``channels`` are the maps kept (those of
    positive head weight for the target: d y_t / d A_k is ``head[t, k]`` over the pixels)."""
    blocks = [x, x.reshape(3, 2, 2, 2, 2).mean((2, 4))]  # the identity conv, then 2x2 average pooling
    maps = []
    for a in blocks:
        up = F.interpolate(torch.from_numpy(a)[:, None], size=(4, 4), mode="bilinear", align_corners=False)
        v = np.zeros((4, 4))
        for k in channels:
            mask = _minmax(up[k, 0].numpy())
            v += _softmax(head @ (x * mask).mean((1, 2)))[t] * mask  # the model's logits: head @ mean
        maps.append(_minmax(v))
    fused = (maps[0] + maps[1]) * (maps[1] > threshold_otsu(maps[1]))
    return _minmax(fused)


def test_sise_is_its_four_phases_on_a_hand_checkable_model():
    head = np.array([[2.0, -1.0, 1.0], [0.0, 3.0, -1.0], [1.0, 1.0, 1.0]])
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.1
    net = _TwoBlocks(torch.from_numpy(head)).double().eval()
    with SISE(net, "block2", batch_size=1) as sise:
        names, _, grads, _ = sise.blocks(x, [0])
        got = sise(x, [0])
    assert names == ["block1", "block2"]
    torch.testing.assert_close(grads[1][0, :, 0, 0], torch.from_numpy(head[0]) / 4)  # y = head @ mean
    want = _sise_by_hand(x[0].numpy(), head, 0, channels=[0, 2])
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-6)
    assert 0 < (want > 0).sum() < 16  # the fusion's threshold cut some pixels, not all
    # Ada-SISE: of the positive average gradients 2/16 and 1/16, Otsu's threshold keeps the larger
    with AdaSISE(net, "block2") as ada:
        np.testing.assert_allclose(
            ada(x, [0])[0].numpy(), _sise_by_hand(x[0].numpy(), head, 0, [0]), atol=1e-6
        )


@pytest.mark.parametrize("method", [SISE, AdaSISE])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_sise_batches_give_the_same_maps(method, batch_size):
    net = _convnet()
    with torch.no_grad():
        net.fc.weight.mul_(50)  # the masks move its predictions: the weights differ from mask to mask
    targets = torch.tensor([0, 3, 1, 4])
    with method(net, "conv5", batch_size=batch_size) as m:
        got = m(X, targets)
    with method(net, "conv5") as m:
        want = torch.cat([m(X[i : i + 1], targets[i : i + 1]) for i in range(len(X))])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (got.flatten(1).amax(1) == 1).all() and (got >= 0).all()


def test_inplace_relu_after_the_layer_gives_the_same_maps():
    torch.manual_seed(0)
    inplace, plain = _InplaceNet(True).eval(), _InplaceNet(False).eval()
    plain.load_state_dict(inplace.state_dict())
    with SISE(inplace, "conv2") as a, SISE(plain, "conv2") as b:
        torch.testing.assert_close(a(X), b(X))
        _, acts, grads, _ = a.blocks(X)
    assert (acts[-1] < 0).any() and (grads[-1] != 0).any()  # conv2's own output, before the ReLU


def test_ada_sise_samples_a_subset_of_sises_maps():
    net = _convnet()
    sise, ada = SISE(net, "conv5"), AdaSISE(net, "conv5")
    _, acts, grads, _ = sise.blocks(X)
    for a, g in zip(acts, grads, strict=True):
        every, fewer = sise.selected(g, a), ada.selected(g, a)
        assert (fewer <= every).all() and fewer.sum() < every.sum()
        assert (fewer.sum(1) > 0).all()


def test_a_layer_that_is_not_feature_maps_is_refused():
    with pytest.raises(ModelError, match="SISE needs layer 'fc' to output feature maps"):
        SISE(_convnet(), "fc")(X)
