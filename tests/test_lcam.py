"""L-CAM on a planted task whose class is decided by one known region."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_steps import _step
from torch import nn

from cnnscope.attribution.lcam import LCAM, LCAMParams, total_variation, train_lcam
from cnnscope.checkpoint import Checkpoint
from cnnscope.data.imagefolder import image_folder, load_images
from cnnscope.errors import DatasetError
from cnnscope.models.builtin import ConvNet
from cnnscope.training import save_model

SIZE, CLASSES = 32, 4
REGION = (slice(0, 16), slice(0, 16))  # the top-left quadrant: the only place the class shows


def _batch(gen: torch.Generator, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey noise everywhere; in the middle of the top-left quadrant a square whose colour is the class."""
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    x = 0.3 * torch.randn(n, 3, SIZE, SIZE, generator=gen)
    colours = torch.tensor([[1.5, -1.5, -1.5], [-1.5, 1.5, -1.5], [-1.5, -1.5, 1.5], [1.5, 1.5, -1.5]])
    x[:, :, 4:12, 4:12] = colours[y][:, :, None, None] + 0.1 * torch.randn(n, 3, 8, 8, generator=gen)
    return x, y


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.fc(self.features(x).amax((2, 3)))


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    torch.manual_seed(0)
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y = _batch(gen)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = _batch(torch.Generator().manual_seed(2), 256)
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.95  # the task is learnt
    return net


@pytest.fixture(scope="module")
def trained(classifier):
    before = copy.deepcopy(classifier.state_dict())
    out = {
        v: train_lcam(classifier, "features", v, CLASSES, _batch, LCAMParams(), progress=False)
        for v in ("fm", "img")
    }
    return out, before


@pytest.mark.parametrize("variant", ["fm", "img"])
def test_the_map_sits_on_the_region_that_decides_the_class(classifier, trained, variant):
    attention = trained[0][variant][0]
    x, y = _batch(torch.Generator().manual_seed(3), 16)
    with LCAM(classifier, "features", attention, variant) as lcam:
        maps = lcam(x, y)
    assert maps.shape == (16, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    inside = maps[:, REGION[0], REGION[1]].sum((1, 2)) / maps.sum((1, 2))
    # at least 80% of the maps' mass in the region on average (and most of it on every image)
    assert inside.mean() >= 0.85 and inside.min() >= 0.5, inside


def test_the_classifier_is_bit_identical_after_training(classifier, trained):
    before = trained[1]
    after = classifier.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in classifier.parameters()) and not classifier._forward_hooks
    assert all(not m._forward_hooks for m in classifier.modules())


def test_losses_fall(trained):
    for variant, (_, losses) in trained[0].items():
        assert sum(losses[-20:]) < sum(losses[:20]), variant


def test_a_killed_training_resumes_to_the_same_attention(classifier, tmp_path):
    params = LCAMParams(steps=12, batch_size=8)
    whole, whole_losses = train_lcam(classifier, "features", "img", CLASSES, _batch, params, progress=False)
    calls = {"n": 0}

    def dies(gen):
        calls["n"] += 1
        if calls["n"] == 8:  # the probe batch, then 6 steps, then the kill
            raise KeyboardInterrupt
        return _batch(gen)

    ckpt = Checkpoint(tmp_path / "lcam.ckpt", every_s=0)
    with pytest.raises(KeyboardInterrupt):
        train_lcam(classifier, "features", "img", CLASSES, dies, params, progress=False, checkpoint=ckpt)
    assert ckpt.load()["step"] == 6
    resumed, losses = train_lcam(
        classifier, "features", "img", CLASSES, _batch, params, progress=False, checkpoint=ckpt
    )
    assert losses == whole_losses
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_one_forward_pass_gives_the_maps(classifier, trained):
    attention = trained[0]["fm"][0]
    calls = []
    handle = classifier.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    try:
        with LCAM(classifier, "features", attention, "fm") as lcam:
            lcam(_batch(torch.Generator().manual_seed(4), 5)[0])
    finally:
        handle.remove()
    assert calls == [5]


def test_total_variation_by_hand():
    m = torch.tensor([[[0.0, 1.0], [0.0, 3.0]]])
    # vertical differences: |0-0|, |3-1| -> mean 1; horizontal: |1-0|, |3-0| -> mean 2
    assert float(total_variation(m)) == pytest.approx(3.0)


def test_unknown_variant_is_refused(classifier):
    with pytest.raises(ValueError, match="variant"):
        LCAM(classifier, "features", None, "both")


def _folder(root, classes=("cat", "dog", "eel", "fox"), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_labels_and_crops(tmp_path):
    root = _folder(tmp_path / "train")
    paths, labels = image_folder(root, 4)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    _, named = image_folder(root, 4, ("fox", "eel", "dog", "cat"))  # the model's own class order
    assert named.tolist() == [3, 3, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0]
    assert load_images(paths[:2], 16).shape == (2, 16, 16, 3)
    with pytest.raises(DatasetError, match="4 class folders but the model has 10 outputs"):
        image_folder(root, 10)
    with pytest.raises(DatasetError, match="name no class"):
        image_folder(root, 4, ("cat", "dog", "eel", "gnu"))


def test_lcam_step_trains_both_variants_on_a_folder(tmp_path):
    _folder(tmp_path / "train")
    torch.manual_seed(0)
    save_model(ConvNet(num_classes=4, width=8), "convnet", tmp_path / "net.pt")
    args = (
        "model=convnet",
        "model.checkpoint=net.pt",
        "model.num_classes=4",
        "model.width=8",
        "name=toy",
        "layer=conv5",
        "data=train",
        "image_size=32",
        "lcam.steps=4",
        "lcam.batch_size=4",
        "progress=false",
        "out=lcam",
    )
    res = _step("lcam", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    for v in ("fm", "img"):
        state = torch.load(tmp_path / "lcam" / f"attention_{v}.pt", weights_only=True)
        assert state["state_dict"]["conv.weight"].shape == (4, 32, 1, 1) and len(state["losses"]) == 4
    bad = _step("lcam", *args[:-1], "data=missing", "out=bad", cwd=tmp_path)
    assert bad.returncode == 2 and "holds no class folders" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()
