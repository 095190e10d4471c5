"""Interpretability over training (Bau et al. 2017, Fig. 10): snapshots of the world models' weights
during training, which the study dissects and evaluates like models of their own."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY, downstream, planned_jobs, snakemake

from cnnscope.artifacts import DissectArtifact, TrainArtifact
from cnnscope.checkpoint import Checkpoint
from cnnscope.errors import CnnscopeError
from cnnscope.overrides import hydra_value
from cnnscope.report import tables
from cnnscope.stages import STAGES, Study
from cnnscope.stepkit.compose import check_study, compose_step, study_model_spec
from cnnscope.training import TrainSpec, train

SPEC = dict(steps=12, image_size=16, n_train=96, n_val=16, batch_size=8, width=4)


class _Stop(Exception):
    pass


def _kept(spec: TrainSpec, **kwargs) -> tuple[dict[int, dict], torch.nn.Module]:
    kept: dict[int, dict] = {}

    def keep(step: int, net: torch.nn.Module) -> None:
        kept[step] = {k: v.clone() for k, v in net.state_dict().items()}

    net, metrics = train(spec, progress=False, snapshot=keep, **kwargs)
    assert sorted(metrics["snapshots"], key=int) == [str(k) for k in sorted(spec.snapshots)]
    assert all(0 <= v <= 1 for scores in metrics["snapshots"].values() for v in scores.values())
    return kept, net


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_snapshot_is_the_run_stopped_there_and_keeping_them_changes_no_bit():
    torch.set_num_threads(1)
    kept, net = _kept(TrainSpec(**SPEC, snapshots=[0, 5, 12]))
    assert sorted(kept) == [0, 5, 12]
    plain, _ = train(TrainSpec(**SPEC), progress=False)
    assert _equal(net.state_dict(), plain.state_dict())  # the final model's bytes
    assert _equal(kept[12], plain.state_dict())

    def stop_at_5(step: int, model: torch.nn.Module) -> None:
        stopped.update({k: v.clone() for k, v in model.state_dict().items()})
        raise _Stop

    stopped: dict = {}
    with pytest.raises(_Stop):
        train(TrainSpec(**SPEC, snapshots=[5]), progress=False, snapshot=stop_at_5)
    assert _equal(kept[5], stopped)
    assert not _equal(kept[0], kept[5])


def test_skipping_the_filling_of_new_memory_changes_no_bit(monkeypatch):
    """Training switches off deterministic mode's filling of new tensors (5% of a step): forced on,
    the run gives the same bytes; the caller's settings are back after either run."""
    torch.set_num_threads(1)
    plain, _ = train(TrainSpec(**SPEC), progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory
    real = torch._C._set_deterministic_fill_uninitialized_memory
    forced: list[bool] = []

    def always_fill(mode: bool) -> None:
        forced.append(mode)
        real(True)

    monkeypatch.setattr(torch._C, "_set_deterministic_fill_uninitialized_memory", always_fill)
    filled, _ = train(TrainSpec(**SPEC), progress=False)
    assert False in forced  # the run asked for no filling, and was refused it
    assert _equal(plain.state_dict(), filled.state_dict())


def test_a_resumed_run_keeps_the_same_snapshots(tmp_path):
    torch.set_num_threads(1)
    spec = TrainSpec(**SPEC, snapshots=[0, 3, 9])
    whole, _ = _kept(spec)
    ckpt = Checkpoint(tmp_path / "train.ckpt", 0)  # saves at every step

    def die_at_9(step: int, model: torch.nn.Module) -> None:
        if step == 9:
            raise _Stop

    with pytest.raises(_Stop):
        train(spec, progress=False, checkpoint=ckpt, snapshot=die_at_9)
    resumed, _ = _kept(spec, checkpoint=ckpt)
    assert sorted(resumed) == [9]  # 0 and 3 were kept before the kill
    assert _equal(resumed[9], whole[9])


def test_a_snapshot_beyond_the_last_step_is_refused():
    with pytest.raises(CnnscopeError, match=r"train.snapshots \[13\] lie beyond train.steps=12"):
        train(TrainSpec(**SPEC, snapshots=[13]), progress=False, snapshot=lambda step, net: None)


def _tiny(**model) -> dict:
    t = copy.deepcopy(TINY)
    t["models"][0].update(model)
    return t


def test_snapshot_models_are_dissected_and_evaluated_and_nothing_else():
    study = Study(_tiny(snapshots=[0, 10]))
    layers = TINY["models"][0]["layers"]
    models = ["tiny", "tiny@0", "tiny@10"]
    for stage in ("extract", "dissect"):
        assert [(j["model"], j["layer"]) for j in study.jobs(stage)] == [
            (m, ly) for m in models for ly in layers
        ]
    assert [j["model"] for j in study.jobs("cueconflict")] == models
    for stage in ("train", "net2vec", "featurevis", "lcam", "attribution"):
        assert {j["model"] for j in study.jobs(stage)} == {"tiny"}, stage
    kept = TrainArtifact(study.artifact("train", model="tiny")).snapshot(10)
    assert study.model_overrides("tiny@10")[-1] == f"model.checkpoint={hydra_value(str(kept))}"
    assert study.train_artifact_of("tiny@10") == study.artifact("train", model="tiny")
    assert "train.snapshots=[0,10]" in study.job_items("train", {"model": "tiny"})
    inputs = study.report_inputs()
    assert [(e["name"], e.get("snapshot_of"), e.get("step")) for e in inputs["models"]] == [
        ("tiny", None, None),
        ("tiny@0", "tiny", 0),
        ("tiny@10", "tiny", 10),
    ]


def test_snapshot_featurevis_draws_the_final_models_units_at_every_snapshot():
    config = _tiny(snapshots=[0, 10])
    assert Study(config).jobs("featurevis") == Study(TINY).jobs("featurevis")  # off by default
    config["attribution"]["snapshot_featurevis"] = True
    study = Study(config)
    layers = TINY["models"][0]["layers"]
    assert [(j["model"], j["layer"]) for j in study.jobs("featurevis")] == [
        (m, ly) for m in ("tiny", "tiny@0", "tiny@10") for ly in layers
    ]
    (dissection,) = [i for i in STAGES["featurevis"].inputs if i.setting == "dissection"]
    for m in ("tiny", "tiny@10"):
        wc = {"dataset": "synthworld", "model": m, "layer": layers[0]}
        assert study.source(dissection, wc) == study.artifact("dissect", **{**wc, "model": "tiny"})
    packed = [i for i in STAGES["featurevis"].inputs if i.setting == "packed"][0]
    assert packed.other is None  # only the units come from the final model


def test_units_over_training_keep_the_layers_drawn_at_several_steps():
    one = {3: {"label": "red", "iou": 0.2, "activation": 1.5, "image": "a.png"}}
    table = tables.featurevis_over_training(
        [
            ("m", 100, "conv5", one),
            ("m", 0, "conv5", {3: {**one[3], "activation": 0.1, "image": "b.png"}}),
            ("m", 100, "conv2", one),  # drawn at the final model only: no strip
            ("m", 0, "conv2", {}),
        ]
    )
    assert table[["layer", "unit", "step", "activation", "image"]].values.tolist() == [
        ["conv5", 3, 0, 0.1, "b.png"],
        ["conv5", 3, 100, 1.5, "a.png"],
    ]
    assert (table["label"] == "red").all()


def test_snapshots_of_a_run_trained_elsewhere_load_their_own_checkpoints():
    entry = {"train": False, "checkpoint": "final.pt", "snapshots": [{"step": 5, "checkpoint": "run/5.pt"}]}
    study = Study(_tiny(**entry))
    assert study.model_overrides("tiny@5")[-1] == "model.checkpoint='run/5.pt'"
    assert study.train_artifact_of("tiny@5") is None and not study.jobs("train")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"snapshots": [{"step": 5, "checkpoint": "x.pt"}]}, "its snapshots must be training steps"),
        ({"train": False, "checkpoint": "f.pt", "snapshots": [5]}, r"must be \{step, checkpoint\} entries"),
        ({"snapshots": [10, 10]}, r"lists a snapshot step twice: \[10, 10\]"),
        ({"snapshots": [0, 30]}, r"models\.tiny: snapshots \[30\] lie beyond its training's 20 steps"),
    ],
)
def test_bad_snapshots_fail_the_study_check(model, message):
    study = Study(_tiny(**model))
    with pytest.raises(CnnscopeError, match=message):
        check_study(
            study, lambda step, items: compose_step(step, list(items)), lambda n: study_model_spec(study, n)
        )


def _write(work, config: dict) -> None:
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_the_study_dissects_and_evaluates_each_snapshot_and_the_report_plots_them(study, tmp_path):
    """Snapshots, the rotated basis and a repeated training condition end to end, in a copy of the
    finished tiny study."""
    work = tmp_path / "study"
    shutil.copytree(study, work, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    config = _tiny(snapshots=[0, 10])
    config["steps"]["dissect"]["rotation_seed"] = 0  # and each layer in a random basis (test_rotation.py)
    config["attribution"]["snapshot_featurevis"] = True  # the final model's units at every snapshot
    # what this test does not read, off: the L-CAM family, the decoder, TCAV at a second layer
    config["attribution"] |= {"lcam": False, "decoder": False}
    config["models"][0]["tcav_layers"] = TINY["models"][0]["layers"][-1:]
    # a second condition (test_conditions.py): dropout, repeated from two seeds, one layer, no attribution
    rep = {**TINY["models"][0], "name": "drop", "layers": ["conv5"], "attribution": False, "seeds": [1, 2]}
    config["models"].append({**rep, "overrides": {"width": 8, "dropout": 0.5}})
    _write(work, config)
    planned = planned_jobs(snakemake(work, "-n"))
    layers = TINY["models"][0]["layers"]
    assert planned == downstream(config, "train")
    assert (planned["train"], planned["extract"], planned["dissect"], planned["cueconflict"]) == (
        3,
        3 * len(layers) + 2,
        3 * len(layers) + 2,
        3 + 2,
    )
    res = snakemake(work)
    assert res.returncode == 0, res.stdout + res.stderr
    trained = TrainArtifact(work / "results" / "train" / "tiny")
    assert trained.snapshot(0).is_file() and trained.snapshot(10).is_file()
    assert set(json.loads(trained.metrics.read_text())["snapshots"]) == {"0", "10"}
    report = work / "results" / "report"
    assert "<h2 id='training'>Training</h2>" in (report / "index.html").read_text()
    detectors = pd.read_csv(report / "tables" / "training_detectors.csv")
    assert sorted(set(detectors["step"])) == [0, 10, 20] and set(detectors["layer"]) == set(layers)
    scores = pd.read_csv(report / "tables" / "training_scores.csv")
    assert scores["step"].tolist() == [0, 10, 20] and scores["shape_bias"].notna().all()
    assert scores["clean_accuracy"].between(0, 1).all()
    units = pd.read_csv(report / "tables" / "training_units.csv")
    final = json.loads((work / "results/featurevis/synthworld/tiny" / layers[-1] / "traces.json").read_text())
    for layer in layers:
        shown = units[units["layer"] == layer]
        assert shown.groupby("unit")["step"].apply(list).tolist() == [[0, 10, 20]] * len(
            shown["unit"].unique()
        )
    last = units[(units["layer"] == layers[-1]) & (units["step"] == 20)]
    assert sorted(last["unit"]) == sorted(map(int, final))  # the final model's units, at every step
    assert (report / "figures" / f"training_units_tiny_{layers[0]}.png").is_file()
    basis = pd.read_csv(report / "tables" / "basis.csv")
    assert list(zip(basis["model"], basis["layer"], strict=True)) == [
        *(("tiny", ly) for ly in layers),
        ("drop-seed1", "conv5"),
        ("drop-seed2", "conv5"),
    ]
    assert (basis["rotated_unique_detectors"] >= 0).all()
    rotated = DissectArtifact(work / "results" / "dissect" / "synthworld" / "tiny@10" / layers[0]).rotated
    assert np.load(rotated.rotation).shape == (len(pd.read_csv(rotated.units)),) * 2
    conditions = pd.read_csv(report / "tables" / "training_conditions.csv")
    assert set(zip(conditions["condition"], conditions["layer"], strict=True)) == {
        ("tiny", layers[0]),
        ("tiny", layers[1]),
        ("drop", "conv5"),
    }
    assert (conditions.loc[conditions["condition"] == "drop", "repeats"] == 2).all()
    assert conditions.loc[conditions["condition"] == "drop", "unique_sd"].notna().all()
    assert (conditions.loc[conditions["condition"] == "tiny", "repeats"] == 1).all()
    assert planned_jobs(snakemake(work, "-n")) == {}
    config["models"][1]["overrides"]["dropout"] = 0.3  # one condition edited: its jobs rerun, no other
    _write(work, config)
    again = planned_jobs(snakemake(work, "-n"))
    assert again == {
        "train": 2,
        "extract": 2,
        "dissect": 2,
        "cueconflict": 2,
        "robustness": 2,  # the repeats' final models (no snapshot is distorted)
        "net2vec": 2,
        "formulas": 2,  # no featurevis: the condition is not attributed
        "report": 1,
        "all": 1,
    }
