"""Layer and model listings: shapes match a real forward pass, hooks never leak, names are complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cnnscope.errors import ModelError
from cnnscope.models.builtin import ConvNet
from cnnscope.models.catalog import available_models, format_layers, format_models, layer_table

CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture(scope="module")
def meta_resnet50() -> nn.Module:
    with torch.device("meta"):
        return torchvision.models.resnet50()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_meta_resnet50_layer4_matches_a_real_forward(meta_resnet50):
    rows = layer_table(meta_resnet50, contains="layer4")
    assert all(p.is_meta for p in meta_resnet50.parameters())  # shapes without weights or compute

    # independent check: a real CPU forward at 64 px with our own hooks (names and channels do not
    # depend on the input size)
    real = torchvision.models.resnet50().eval()
    last: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _a, out, name=name: last.__setitem__(name, out))
        for name, m in real.named_modules()
        if name == "layer4" or name.startswith("layer4.")
    ]
    with torch.no_grad():
        real(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    expected = [(n, t.shape[1]) for n, t in last.items() if isinstance(t, torch.Tensor) and t.dim() == 4]
    order = [n for n, _ in real.named_modules()]
    expected.sort(key=lambda e: order.index(e[0]))

    assert [(r.name, r.units) for r in rows] == expected
    by_name = {r.name: r for r in rows}
    assert by_name["layer4"].shape == (2048, 7, 7)
    assert by_name["layer4"].kind == "Sequential"
    assert by_name["layer4.0.relu"].calls == 3
    assert by_name["layer4.0.relu"].shape == (2048, 7, 7)  # the last of its three calls
    assert by_name["layer4.0.conv1"].shape == (512, 14, 14)
    assert by_name["layer4.0.conv1"].calls == 1
    assert _no_hooks(meta_resnet50)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pair = Pair()
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.pair(self.conv(x))
        return self.fc(torch.flatten(self.pool(self.bn(x)), 1))


def test_tuple_and_2d_outputs_are_excluded_and_the_model_is_unchanged():
    net = TupleNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rows = layer_table(net, input_size=8)
    assert [(r.name, r.kind, r.shape) for r in rows] == [
        ("conv", "Conv2d", (4, 8, 8)),
        ("bn", "BatchNorm2d", (4, 8, 8)),
        ("pool", "AdaptiveAvgPool2d", (4, 1, 1)),
    ]
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats untouched
    assert _no_hooks(net)


def test_too_small_input_raises_and_removes_hooks():
    with torch.device("meta"):
        alexnet = torchvision.models.alexnet()
    with pytest.raises(ModelError, match=r"AlexNet on a 16x16 input failed.*try a larger input size") as info:
        layer_table(alexnet, input_size=16)
    assert "\n" not in str(info.value)
    assert _no_hooks(alexnet)

    real = ConvNet(width=4)  # on the CPU: its max-pools leave nothing of a 2x2 input
    with pytest.raises(ModelError, match=r"2x2 input"):
        layer_table(real, input_size=2)
    assert _no_hooks(real)
    assert len(layer_table(real, input_size=16)) > 0  # the same model works at a sensible size


def test_format_layers_shows_calls_only_for_reused_modules(meta_resnet50):
    text = format_layers(layer_table(meta_resnet50, contains="layer4.0."))
    lines = text.splitlines()
    assert lines[0].split() == ["name", "kind", "output", "(CxHxW)", "units", "calls"]
    relu = next(line for line in lines if line.startswith("layer4.0.relu "))
    assert relu.split() == ["layer4.0.relu", "ReLU", "2048x7x7", "2048", "3"]
    conv = next(line for line in lines if line.startswith("layer4.0.conv1 "))
    assert conv.split() == ["layer4.0.conv1", "Conv2d", "512x14x14", "512"]
    assert lines[0].index("kind") == relu.index("ReLU") == conv.index("Conv2d")  # aligned columns

    single = format_layers(layer_table(TupleNet(), input_size=8))
    assert "calls" not in single.splitlines()[0]


def test_available_models_lists_every_kind():
    entries = available_models(CONFIG)
    names = {kind: {e["name"] for e in entries if e["kind"] == kind} for kind in ("built-in", "torchvision")}
    assert names["built-in"] == {"convnet", "tinyresnet"}
    assert {"resnet50", "alexnet", "vgg16"} <= names["torchvision"]
    configs = {e["name"]: e["detail"] for e in entries if e["kind"] == "config"}
    assert set(configs) == {p.stem for p in (CONFIG / "model").glob("*.yaml")} - {"model_schema"}
    assert configs["resnet50"] == "source=torchvision arch=resnet50 weights=DEFAULT"
    assert configs["convnet"].startswith("source=builtin arch=convnet")
    assert all("defaults" not in d for d in configs.values())

    text = format_models(entries)
    for heading in ("built-in (2):", "torchvision (", "config ("):
        assert any(line.startswith(heading) for line in text.splitlines())
    tv = text.split("torchvision (")[1].split("\n\n")[0].splitlines()[1:]
    assert 1 < len(tv) < len(names["torchvision"])  # wrapped, not one per line
    assert all(len(line) <= 100 for line in tv)
