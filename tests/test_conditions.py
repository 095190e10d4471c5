"""Training conditions (Bau et al. 2017, §4.2, Fig. 9): the built-in convnet with dropout, without
batch normalisation, and repeated from other initialisation seeds, grouped as conditions."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from cnnscope.errors import CnnscopeError, ModelError
from cnnscope.models.builtin import BuiltinNet, ConvNet
from cnnscope.report import tables
from cnnscope.report.inputs import LayerResult
from cnnscope.stages import Study
from cnnscope.stepkit.compose import check_study, compose_step, study_model_spec
from cnnscope.training import TrainSpec, train

SPEC = dict(steps=6, image_size=16, n_train=64, n_val=16, batch_size=8, width=4)


def test_the_default_convnet_is_the_one_before_conditions_existed():
    torch.manual_seed(3)
    net = BuiltinNet().build(num_classes=16)
    torch.manual_seed(3)
    plain = ConvNet(16, 24)
    assert list(net.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(net.state_dict()[k], plain.state_dict()[k]) for k in plain.state_dict())
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())


def test_conditions_change_the_network_as_named():
    net = BuiltinNet(width=4, dropout=0.5, batch_norm=False).build(num_classes=16)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]
    net.eval()  # dropout is off at evaluation: two passes agree
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(net(x), net(x))
    with pytest.raises(ModelError, match="settings of the built-in convnet, not of tinyresnet"):
        BuiltinNet("tinyresnet", dropout=0.2).build()


def _init(**spec) -> dict[str, torch.Tensor]:
    kept = {}
    train(
        TrainSpec(**SPEC, snapshots=[0], **spec),
        progress=False,
        snapshot=lambda step, net: kept.update({k: v.clone() for k, v in net.state_dict().items()}),
    )
    return kept


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_initialisation_follows_the_models_seed_and_not_the_worlds():
    torch.set_num_threads(1)
    assert _same(_init(seed=0, init_seed=1), _init(seed=5, init_seed=1))
    assert not _same(_init(init_seed=0), _init(init_seed=1))


def test_training_with_dropout_or_without_batch_norm_is_byte_reproducible():
    torch.set_num_threads(1)
    for condition in ({"dropout": 0.5}, {"batch_norm": False}):
        a, metrics = train(TrainSpec(**SPEC, **condition), progress=False)
        b, _ = train(TrainSpec(**SPEC, **condition), progress=False)
        assert _same(a.state_dict(), b.state_dict()), condition
        assert np.isfinite(metrics["final_loss"])
    dropped, _ = train(TrainSpec(**SPEC, dropout=0.5), progress=False)
    plain, _ = train(TrainSpec(**SPEC), progress=False)
    assert not torch.equal(dropped.fc.weight, plain.fc.weight)  # the masks changed the updates


def _study(**model) -> dict:
    t = copy.deepcopy(TINY)
    t["models"][0].update(model)
    return t


def test_seeds_make_repeats_of_one_condition():
    study = Study(_study(seeds=[1, 2], overrides={"width": 8, "dropout": 0.5}, snapshots=[0]))
    assert [j["model"] for j in study.jobs("train")] == ["tiny-seed1", "tiny-seed2"]
    assert study.model_overrides("tiny-seed2")[:3] == ["model=convnet", "model.width=8", "model.dropout=0.5"]
    assert "model.seed=2" in study.model_overrides("tiny-seed2")
    assert "model.seed=1" in study.model_overrides("tiny-seed1@0")
    shown = {m["name"]: m.get("condition") for m in study.report_inputs()["models"]}
    assert shown == {n: "tiny" for n in ("tiny-seed1", "tiny-seed2", "tiny-seed1@0", "tiny-seed2@0")}
    assert "condition" not in Study(TINY).report_inputs()["models"][0]  # a model on its own


def _check(config: dict) -> None:
    study = Study(config)
    check_study(
        study, lambda step, items: compose_step(step, list(items)), lambda n: study_model_spec(study, n)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds": [1], "overrides": {"seed": 1}}, "gives seeds and overrides.seed; keep one of them"),
        ({"overrides": {"dropout": 1.0}}, r"dropout=1.0 is out of range"),
        ({"overrides": {"batch_norm": "maybe"}}, r"overrides batch_norm: 'maybe' is refused"),
        ({"tcav_layers": ["conv3"]}, r"tcav_layers \['conv3'\] are not among its layers"),
    ],
)
def test_bad_conditions_fail_the_study_check(change, message):
    with pytest.raises(CnnscopeError, match=message):
        _check(_study(**change))


def test_a_repeat_may_not_take_another_models_name():
    config = _study(seeds=[1])
    config["models"].append({**config["models"][0], "name": "tiny-seed1", "seeds": []})
    with pytest.raises(CnnscopeError, match=r"tiny-seed1 given twice \(a model's seeds name its repeats"):
        _check(config)


def _layer(model: str, unique: dict[str, int]) -> LayerResult:
    detectors = pd.DataFrame(
        [{"rule": "top_label", "category": c, "unique": n} for c, n in unique.items()]
        + [{"rule": "all_labels", "category": c, "unique": 99} for c in unique]
    )
    return LayerResult(
        model=model,
        layer="conv5",
        units=pd.DataFrame(),
        detectors=detectors,
        summary={},
        detector_iou=0.04,
        thresholds=np.zeros(1),
        extract_dir=Path("."),
        featurevis_dir=None,
    )


def test_the_conditions_table_averages_the_repeats_by_hand():
    layers = [
        _layer("a-seed0", {"object": 2, "color": 5}),
        _layer("a-seed1", {"object": 4, "color": 5}),
        _layer("b", {"object": 1, "color": 0}),
    ]
    table = tables.conditions(layers, {"a-seed0": "a", "a-seed1": "a"})
    rows = {(r.condition, r.category): r for r in table.itertuples()}
    assert rows["a", "object"].unique_mean == 3 and rows["a", "object"].unique_sd == pytest.approx(2**0.5)
    assert rows["a", "color"].unique_sd == 0 and rows["a", "color"].repeats == 2
    assert rows["b", "object"].unique_mean == 1 and np.isnan(rows["b", "object"].unique_sd)
    assert rows["b", "object"].repeats == 1
