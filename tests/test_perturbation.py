"""Score-CAM, RISE and SIDU against their definitions, pytorch-grad-cam, and the pass counts they report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import ScoreCAM as LibraryScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_attribution import X, _convnet, _features
from torch import nn

from cnnscope.attribution.base import normalize_maps
from cnnscope.attribution.perturbation import RISE, SIDU, RISEParams, ScoreCAM, ScoreCAMParams, SIDUParams
from cnnscope.attribution.sise import SISE, AdaSISE
from cnnscope.attribution.suite import MethodParams, PassCounter, attribute
from cnnscope.errors import CnnscopeError


class _Tiny(nn.Module):
    """Two feature maps that are the input's first two channels (``layer``), a linear head on their
    means: every score is a number one can follow by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.layer(x[:, :2]).mean((2, 3)))


def test_scorecam_is_its_definition_on_a_hand_checkable_model():
    net = _Tiny().eval()
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])  # channel 0: one bright corner
    x[0, 1] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # channel 1: a ramp
    target = torch.tensor([1])
    # Masks (upsampling 2x2 -> 2x2 is the identity): channel 0 -> [[1,0],[0,0]]; channel 1 -> (ramp-1)/3.
    m0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    m1 = (x[0, 1] - 1) / 3
    p = [F.softmax(net(x * m[None, None]), 1)[0, 1] for m in (m0, m1)]
    want = F.relu(p[0] * x[0, 0] + p[1] * x[0, 1])
    with ScoreCAM(net, "layer", batch_size=1) as cam:
        torch.testing.assert_close(cam.layer_maps(x, target)[0], want)
        torch.testing.assert_close(cam(x, target)[0], normalize_maps(want[None])[0])
    # channel_softmax: the target's logits on the masked inputs, softmax over the channels
    logits = torch.stack([net(x * m[None, None])[0, 1] for m in (m0, m1)])
    w = F.softmax(logits, 0)
    with ScoreCAM(net, "layer", weighting="channel_softmax") as cam:
        torch.testing.assert_close(cam.layer_maps(x, target)[0], w[0] * x[0, 0] + w[1] * x[0, 1])


def test_sidu_is_the_authors_weighting_on_a_hand_checkable_model():
    """Three feature maps that are the input's channels, a linear head on their means: the masks, the
    softmax vectors and the weights re-derived in numpy from the formulas, not from the class."""
    net = nn.Sequential()
    net.add_module("layer", nn.Identity())
    net.add_module("pool", nn.Flatten(2))
    head = nn.Linear(3, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0], [1.0, 1.0, 1.0]]))
        head.bias.zero_()
    net.eval()
    x = torch.tensor([[[4.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 0.4]], [[0.2, 0.0], [0.9, 0.7]]])[None]

    def logits(image: np.ndarray) -> np.ndarray:
        return head.weight.detach().numpy() @ image.reshape(3, -1).mean(1)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max())
        return e / e.sum()

    model = _Headed(net, head).eval()
    image = x[0].numpy()
    masks = (image > 0.5).astype(np.float64)  # 2x2 -> 2x2 upsampling is the identity
    probs = np.stack([softmax(logits(image * m)) for m in masks])
    p = softmax(logits(image))
    t = 1
    sd = np.exp(-((p[t] - probs[:, t]) ** 2) / (2 * 0.25**2))
    spread = np.array([sum(np.linalg.norm(a - b) for b in probs) for a in probs])
    u = (spread - spread.min()) / (spread.max() - spread.min())
    want = (sd * u) @ masks.reshape(3, -1) / 3
    with SIDU(model, "net.layer", batch_size=2) as sidu:
        got = sidu.saliency(x, torch.tensor([t]))
    np.testing.assert_allclose(got[0].numpy().ravel(), want, rtol=1e-5, atol=1e-7)
    assert len(np.unique(want.round(6))) > 2  # the case is not degenerate: the weights differ
    with SIDU(model, "net.layer", threshold=3.5) as sidu:  # only channel 0's corner stays on
        assert sidu.masks(x, torch.arange(3), (2, 2)).sum().item() == 1


class _Headed(nn.Module):
    """``net`` (feature maps, flattened) then a linear ``head`` on their means."""

    def __init__(self, net: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x):
        return self.head(self.net(x).mean(2))


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_sidu_batches_give_the_same_maps(batch_size):
    # Untrained, its conv5 activations stay below 0.36 (masks start at 0.1) and its predictions hardly
    # move under masking, which SIDU's min-max scaled uniqueness would amplify from rounding: a sharper
    # head makes the masks matter.
    net = _convnet()
    with torch.no_grad():
        net.fc.weight.mul_(200)
    with SIDU(net, "conv5", batch_size=batch_size, threshold=0.1) as sidu:
        got = sidu(X)
    with SIDU(net, "conv5", threshold=0.1) as sidu:
        want = torch.cat([sidu(X[i : i + 1]) for i in range(len(X))])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (got.flatten(1).amax(1) == 1).all()  # every image has a map, scaled to [0, 1]


def test_sidu_refuses_a_threshold_no_activation_reaches():
    with SIDU(_convnet(), "conv5") as sidu, pytest.raises(CnnscopeError, match="sidu threshold below"):
        sidu(X)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_scorecam_batches_give_the_same_maps(batch_size):
    net = _convnet()
    with ScoreCAM(net, "conv5", batch_size=batch_size) as cam:
        got = cam(X)
    with ScoreCAM(net, "conv5", batch_size=64) as cam:
        want = torch.cat([cam(X[i : i + 1]) for i in range(len(X))])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_scorecam_agrees_with_pytorch_grad_cam():
    """The library's weighting (softmax over channels of the target's logit); it upsamples masks with
    aligned corners, cnnscope with aligned centres, so the maps agree closely, not exactly."""
    net = _convnet()
    targets = [0, 3, 1, 4]
    with ScoreCAM(net, "conv5", weighting="channel_softmax") as cam:
        ours = cam(X, torch.tensor(targets)).numpy()
    with LibraryScoreCAM(net, [net.conv5]) as lib:
        lib.batch_size = 64
        theirs = lib(X, [ClassifierOutputTarget(t) for t in targets])
    for a, b in zip(ours, theirs, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.99


def test_rise_is_deterministic_for_a_seed_and_its_masks_follow_p():
    net = _convnet()
    with (
        RISE(net, n_masks=64, seed=3) as a,
        RISE(net, n_masks=64, seed=3) as b,
        RISE(net, n_masks=64, seed=4) as c,
    ):
        assert torch.equal(a(X), b(X))
        assert not torch.equal(a(X), c(X))
        masks = a.masks((32, 32))
    assert masks.shape == (64, 32, 32) and masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.5) < 0.05


def test_rise_variance_shrinks_as_the_number_of_masks_grows():
    """Across seeds, the estimate's spread falls like 1/sqrt(n_masks): 32x the masks, under half."""
    net = _convnet()

    def spread(n: int) -> float:
        maps = []
        for seed in range(5):
            with RISE(net, n_masks=n, seed=seed, batch_size=256) as rise:
                maps.append(rise.saliency(X[:2], torch.tensor([0, 1])))
        return float(torch.stack(maps).std(0).mean())

    few, many = spread(16), spread(512)
    assert many < 0.5 * few


def test_rise_is_the_probability_weighted_mean_of_its_masks():
    net = _convnet()
    t = torch.tensor([2])
    with RISE(net, n_masks=10, seed=0, batch_size=3) as rise:
        got = rise(X[:1], t)
        masks = rise.masks((32, 32))
    with torch.no_grad():
        p = F.softmax(net(X[:1] * masks[:, None]), 1)[:, 2]
    torch.testing.assert_close(
        got, normalize_maps((p[:, None, None] * masks).sum(0)[None] / 5), rtol=1e-4, atol=1e-5
    )


def test_pass_counts_are_what_the_hooks_saw():
    net = _convnet()
    targets = torch.tensor([0, 3, 1, 4])
    k = _features(net, X[:1]).shape[1]
    params = MethodParams(
        scorecam=ScoreCAMParams(batch_size=5),
        rise=RISEParams(n_masks=20),
        sidu=SIDUParams(batch_size=6, threshold=0.1),
    )
    _, cost = attribute(
        net,
        "conv5",
        X,
        ["gradcam", "guided_backprop", "scorecam", "rise", "sidu", "sise", "ada_sise"],
        targets,
        params=params,
    )
    cost = cost.set_index("method")
    assert cost.loc["gradcam", ["forward_passes", "backward_passes"]].tolist() == [1, 1]
    assert cost.loc["guided_backprop", ["forward_passes", "backward_passes"]].tolist() == [1, 1]
    assert cost.loc["scorecam", ["forward_passes", "backward_passes"]].tolist() == [1 + k, 0]
    assert cost.loc["rise", ["forward_passes", "backward_passes"]].tolist() == [20, 0]
    assert cost.loc["sidu", ["forward_passes", "backward_passes"]].tolist() == [1 + k, 0]
    for method in (SISE, AdaSISE):  # one pass each way, then a forward pass per map it keeps
        sise = method(net, "conv5")
        _, acts, grads, _ = sise.blocks(X, targets)
        kept = sum(int(sise.selected(g, a).sum()) for a, g in zip(acts, grads, strict=True)) / len(X)
        row = "sise" if method is SISE else "ada_sise"
        assert cost.loc[row, ["forward_passes", "backward_passes"]].tolist() == [1 + kept, 1]
    with PassCounter(net) as count:
        net(X)
    assert (count.forward, count.backward) == (4, 0) and not net._forward_hooks


def test_bad_settings_are_refused():
    net = _convnet()
    with pytest.raises(CnnscopeError, match="weighting='logit' is not valid: it must be one of probability"):
        ScoreCAM(net, "conv5", weighting="logit")
    with pytest.raises(CnnscopeError, match=r"p=0.0 is out of range: it must lie in \(0, 1\]"):
        RISE(net, p=0.0)
    with pytest.raises(CnnscopeError, match="n_masks=0 is out of range"):
        RISE(net, RISEParams(n_masks=0))
