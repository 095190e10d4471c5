"""The model registry and layer lookup: valid names listed on error, checkpoints, offline weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from cnnscope.errors import ModelError
from cnnscope.models import ModelSpec, load_model, resolve_layer
from cnnscope.models.builtin import ConvNet
from cnnscope.models.catalog import check_layers


def test_unknown_torchvision_model_names_the_closest_and_where_all_are_listed():
    with pytest.raises(ModelError, match=r"'resnet19'; did you mean resnet18.*cnnscope models"):
        load_model(ModelSpec("torchvision", "resnet19"))


def test_unknown_layer_lists_valid_layers():
    with pytest.raises(ModelError, match=r"unknown layer 'layer5' for resnet18.*layer3\.1\.conv2.*layer4"):
        check_layers(ModelSpec("torchvision", "resnet18"), ["layer4", "layer5"], "resnet18")
    check_layers(ModelSpec("torchvision", "alexnet"), ["features.10"], "alexnet")


def test_dotted_layer_names_resolve():
    model = torchvision.models.resnet18()
    assert resolve_layer(model, "layer3.1.conv2") is model.layer3[1].conv2


def test_checkpoint_with_module_prefix_loads_identically(tmp_path):
    net = ConvNet(num_classes=12, width=8)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    loaded = load_model(
        ModelSpec("checkpoint", "convnet", checkpoint=str(tmp_path / "ckpt.pt"), num_classes=12, width=8)
    )
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    assert torch.allclose(loaded.module(x), net(x))
    assert not loaded.module.training


def test_checkpoint_that_does_not_fit_says_so(tmp_path):
    torch.save(ConvNet(num_classes=3, width=8).state_dict(), tmp_path / "c.pt")
    with pytest.raises(ModelError, match="does not fit convnet"):
        load_model(
            ModelSpec("builtin", "convnet", checkpoint=str(tmp_path / "c.pt"), num_classes=12, width=8)
        )
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelSpec("builtin", "convnet", checkpoint=str(tmp_path / "missing.pt")))


def test_weights_that_cannot_be_downloaded_name_the_cache_path(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError) as err:
        load_model(ModelSpec("torchvision", "resnet18", weights="DEFAULT"))
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "IMAGENET1K_V1" in msg and "no network" in msg


def test_unknown_weights_name_lists_valid_ones():
    with pytest.raises(ModelError, match="valid: DEFAULT, IMAGENET1K_V1"):
        load_model(ModelSpec("torchvision", "alexnet", weights="IMAGENET22K"))


def test_torchvision_preprocessing_comes_from_the_weights(monkeypatch):
    monkeypatch.setattr(
        torchvision.models.WeightsEnum,
        "get_state_dict",
        lambda self, *a, **k: torchvision.models.resnet18().state_dict(),
    )
    loaded = load_model(ModelSpec("torchvision", "resnet18", weights="DEFAULT"))
    assert loaded.mean == pytest.approx((0.485, 0.456, 0.406))
    assert loaded.std == pytest.approx((0.229, 0.224, 0.225))


def test_normalisation_comes_from_the_checkpoint_unless_the_spec_sets_it(tmp_path):
    from cnnscope.training import WORLD_MEAN, WORLD_STD, save_model

    save_model(ConvNet(num_classes=16, width=8), "convnet", tmp_path / "model.pt")
    spec = ModelSpec("builtin", "convnet", checkpoint=str(tmp_path / "model.pt"), num_classes=16, width=8)
    loaded = load_model(spec)
    assert loaded.mean == WORLD_MEAN and loaded.std == WORLD_STD
    images = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    assert torch.allclose(loaded.normalize(images), torch.full((1, 3, 2, 2), (1 - 0.5) / 0.25))
    spec.mean, spec.std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    assert load_model(spec).normalize(images).eq(1).all()
    torch.save(ConvNet(num_classes=16, width=8).state_dict(), tmp_path / "bare.pt")  # no metadata
    bare = load_model(ModelSpec("builtin", "convnet", checkpoint=str(tmp_path / "bare.pt"), width=8))
    assert bare.mean == pytest.approx((0.485, 0.456, 0.406))
