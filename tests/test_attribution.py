"""Attribution methods against their definitions, on hand-checkable networks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnscope.attribution import (
    CAM,
    METHODS,
    CounterfactualGradCAM,
    DeconvNet,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    guided_cam,
)
from cnnscope.attribution.lcam import Attention
from cnnscope.errors import ModelError
from cnnscope.models.builtin import ConvNet


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    net = ConvNet(num_classes=5, width=8)
    for m in net.modules():  # non-trivial BN statistics, so eval mode is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _features(net: ConvNet, x: torch.Tensor) -> torch.Tensor:
    x = net.pool2(net.conv2(net.conv1(x)))
    return net.conv5(net.pool4(net.conv4(net.conv3(x))))


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_cam_is_the_class_weighted_sum_and_gradcam_is_proportional():
    net = _convnet()
    targets = torch.tensor([0, 3, 1, 4])
    with torch.no_grad():
        a = _features(net, X)
    want = (net.fc.weight[targets][:, :, None, None] * a).sum(1)
    with CAM(net, "conv5") as cam:
        got = cam.layer_maps(X, targets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with GradCAM(net, "conv5") as gc:
        grad = gc.layer_maps(X, targets)
    hw = a.shape[2] * a.shape[3]
    torch.testing.assert_close(grad * hw, want, rtol=1e-4, atol=1e-5)  # d(mean)/dA = w / (h w)
    with CounterfactualGradCAM(net, "conv5") as cf:
        torch.testing.assert_close(cf.layer_maps(X, targets), -grad)


def test_cam_refuses_a_head_that_is_not_gap_plus_linear():
    net = _convnet()
    with CAM(net, "conv3") as cam, pytest.raises(ModelError, match="use Grad-CAM instead"):
        cam(X)


def test_gradcam_plus_plus_follows_its_closed_form():
    net = _convnet()
    x = X.clone()
    a = _features(net, x).detach().requires_grad_(True)
    logits = net.fc(net.avgpool(a).flatten(1))
    t = logits.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
    alpha = g**2 / (2 * g**2 + a.detach().sum((2, 3), keepdim=True) * g**3)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * g.clamp(min=0)).sum((2, 3))
    want = (w[:, :, None, None] * a.detach()).sum(1)
    with GradCAMPlusPlus(net, "conv5") as gpp:
        torch.testing.assert_close(gpp.layer_maps(x), want, rtol=1e-4, atol=1e-6)


class _Tiny(nn.Module):
    """y = W2 relu(W1 x), written with a functional or an in-place module ReLU."""

    def __init__(self, functional: bool):
        super().__init__()
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.functional = functional
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -1, 0, 2], [0, 1, 1, -1], [-1, 0, 2, 1]]))
            self.fc2.weight.copy_(torch.tensor([[2.0, -3, 1], [1, 1, 1]]))

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(F.relu(h) if self.functional else self.relu(h))


@pytest.mark.parametrize("functional", [True, False])
def test_backprop_rules_by_hand(functional):
    net = _Tiny(functional)
    x = torch.tensor([[1.0, 0.5, 1.0, 0.0], [0.0, 1.0, -1.0, 1.0]])
    w1, w2 = net.fc1.weight, net.fc2.weight[0]
    h = x @ w1.T
    mask = (h > 0).float()
    plain = (mask * w2) @ w1  # the ordinary gradient of y_0
    guided_by_hand = (mask * w2.clamp(min=0)) @ w1
    deconv_by_hand = w2.clamp(min=0).expand_as(h) @ w1
    targets = [0, 0]
    xr = x.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(net(xr)[:, 0].sum(), xr)
    torch.testing.assert_close(autograd, plain)
    with GuidedBackprop(net) as gb, DeconvNet(net) as dn:
        torch.testing.assert_close(gb(x, targets), guided_by_hand.detach())
        torch.testing.assert_close(dn(x, targets), deconv_by_hand.detach())
    assert not torch.allclose(plain, guided_by_hand) and not torch.allclose(guided_by_hand, deconv_by_hand)


def test_a_model_without_relu_is_refused_for_backprop_rules():
    net = nn.Sequential(nn.Linear(4, 2))
    with GuidedBackprop(net) as gb, pytest.raises(ModelError, match="called no ReLU"):
        gb(torch.randn(2, 4))


# Fewer masked forward passes than the defaults, for the perturbation methods' speed in the suite;
# L-CAM with an attention module of the right shape (tests/test_lcam.py trains real ones).
QUICK = {
    "rise": {"n_masks": 32},
    "scorecam": {"batch_size": 256},
    "sidu": {"batch_size": 256, "threshold": 0.1},  # the untrained net's activations stay below 0.5
    **{m: {"attention": Attention(32, 5)} for m in ("lcam_fm", "lcam_img")},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batched_equals_per_image(name):
    net = _convnet()
    opts = QUICK.get(name, {})
    batched = METHODS[name](net, "conv5", X, None, **opts)
    single = torch.cat([METHODS[name](net, "conv5", X[i : i + 1], None, **opts) for i in range(len(X))])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


class _InplaceNet(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))  # conv2's output is overwritten in place
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "counterfactual_gradcam"])
def test_inplace_relu_after_the_layer_gives_the_same_maps(name):
    torch.manual_seed(0)
    inplace = _InplaceNet(True).eval()
    plain = _InplaceNet(False).eval()
    plain.load_state_dict(inplace.state_dict())
    cls = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "counterfactual_gradcam": CounterfactualGradCAM}[
        name
    ]
    with cls(inplace, "conv2") as a, cls(plain, "conv2") as b:
        got, want = a.layer_maps(X), b.layer_maps(X)
    assert (want < 0).any() or name != "counterfactual_gradcam"
    torch.testing.assert_close(got, want)


def test_every_method_runs_on_resnet18_and_leaves_it_unchanged():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for name, method in METHODS.items():
        layer = "layer4" if name == "cam" else "layer4.1.bn2"  # bn2's output is then += in place
        opts = QUICK.get(name, {})
        if name in ("scorecam", "sidu", "sise", "ada_sise"):
            layer = "layer2.1.bn2"  # 128 channels, not 512: 4x fewer masked forward passes
        if name in ("lcam_fm", "lcam_img"):
            opts = {"attention": torch.nn.Conv2d(512, 10, 1)}
        out = method(net, layer, x, None, **opts)
        assert out.shape[0] == 2 and out.shape[-2:] == (64, 64) and torch.isfinite(out).all(), name
    with GradCAM(net, "layer4") as gc:
        gg = guided_cam(gc, x)
    assert gg.shape == (2, 3, 64, 64)
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    assert not net.training


def test_normalised_maps_lie_in_unit_range_and_need_the_context():
    net = _convnet()
    with GradCAM(net, "conv5") as gc:
        maps = gc(X)
    assert maps.shape == (4, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(RuntimeError, match="context manager"):
        GradCAM(net, "conv5")(X)
