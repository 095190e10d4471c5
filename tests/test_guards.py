"""Bad input and faults: no data loss, no silent wrong science, one clear line instead of a traceback.

Each test here failed on the code before these guards: it exited 0 with a wrong result, deleted data,
ran a shell command from a config value, or ended in a traceback.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, TINY, copy_repo, snakemake
from test_steps import _step
from torch import nn

from cnnscope.data.broden import BrodenDataset
from cnnscope.errors import CnnscopeError, DatasetError
from cnnscope.features import ExtractParams, extract_layer
from cnnscope.io import MANIFEST, atomic_dir, resumable_dir, verify
from cnnscope.io import file_digest as io_digest
from cnnscope.models.builtin import ConvNet
from cnnscope.models.registry import LoadedModel, ModelSpec, load_model
from cnnscope.provenance import stage_times
from cnnscope.training import TrainSpec, train

# --- no data loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("out", [".", "..", "here", "notes.txt", "other"])
def test_a_step_never_replaces_what_is_not_its_own_artifact(tmp_path, out):
    (tmp_path / "notes.txt").write_text("a user's file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("another study's work")
    cwd = tmp_path / "here" if out == "here" else tmp_path
    cwd.mkdir(exist_ok=True)
    target = "." if out == "here" else out
    res = _step("synthworld", f"out={target}", "world.n_images=4", "world.image_size=16", cwd=cwd)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "out=" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert (tmp_path / "notes.txt").read_text() == "a user's file"
    assert (tmp_path / "other" / "keep.txt").read_text() == "another study's work"


def test_a_sealed_artifact_is_replaced_by_its_step(tmp_path):
    for n in (4, 6):
        res = _step("synthworld", "out=w", f"world.n_images={n}", "world.image_size=16", cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
    assert len(BrodenDataset(tmp_path / "w")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no lock file or debris left


def test_a_second_writer_of_one_artifact_is_refused_naming_the_first(tmp_path):
    with open(tmp_path / ".w.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("pid 4242 on node7 since now")
        f.flush()
        res = _step("synthworld", "out=w", "world.n_images=4", "world.image_size=16", cwd=tmp_path)
    assert res.returncode == 2 and "out=w is being written by pid 4242 on node7" in res.stdout
    assert not (tmp_path / "w").exists()


# --- artifacts are verified before use ----------------------------------------------------------


def _sealed(tmp_path):
    with atomic_dir(tmp_path / "art") as work:
        (work / "a.npy").write_bytes(b"0123456789")
        (work / "sub").mkdir()
        (work / "sub" / "b.txt").write_text("b")
    return tmp_path / "art"


def test_a_truncated_or_edited_artifact_is_reported_with_the_step_to_rerun(tmp_path):
    art = _sealed(tmp_path)
    identity = verify(art, "extract")
    assert len(identity) == 64 and (art / MANIFEST).is_file()
    (art / "a.npy").write_bytes(b"01234")
    with pytest.raises(CnnscopeError, match=r"a.npy has 5 bytes, not 10 \(truncated\?\); rerun the extract"):
        verify(art, "extract")
    (art / "a.npy").write_bytes(b"0123456780")
    with pytest.raises(CnnscopeError, match="a.npy was changed after it was written; rerun the extract"):
        verify(art, "extract")
    (art / "sub" / "b.txt").unlink()
    (art / "a.npy").write_bytes(b"0123456789")
    with pytest.raises(CnnscopeError, match="sub/b.txt is missing"):
        verify(art, "extract")


def test_the_routine_check_costs_a_stat_and_the_full_one_catches_an_edit_that_kept_size_and_time(
    tmp_path, monkeypatch, capsys
):
    import shutil

    from cnnscope import cli, io

    art = _sealed(tmp_path)
    hashed = []
    real = io.file_digest
    monkeypatch.setattr(io, "file_digest", lambda f, a="sha256": hashed.append(Path(f).name) or real(f, a))
    identity = verify(art, "extract")
    assert hashed == [MANIFEST]  # the files themselves were only stat'ed
    copy = shutil.copytree(art, tmp_path / "copy")  # new inodes: every file is hashed, and passes
    hashed.clear()
    assert verify(copy, "extract") == identity and sorted(hashed) == ["a.npy", "b.txt", MANIFEST]

    victim = art / "a.npy"
    st = victim.stat()
    with open(victim, "r+b") as f:  # a deliberate edit in place that keeps the size...
        f.write(b"9")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the time
    assert verify(art, "extract") == identity  # what the routine check cannot see (README says so)
    with pytest.raises(CnnscopeError, match="a.npy was changed after it was written"):
        verify(art, "extract", full=True)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", "--full", "art", "copy"]) == 2
    out = capsys.readouterr()
    assert "a.npy was changed after it was written" in out.err and "1 of 2 artifacts intact" in out.out
    assert cli.main(["verify", "art"]) == 0


def test_a_manifest_of_an_earlier_version_still_verifies(tmp_path):
    art = _sealed(tmp_path)
    (art / MANIFEST).write_text(
        json.dumps({"files": {n: {"size": (art / n).stat().st_size, "sha256": io_digest(art / n)}
                              for n in ("a.npy", "sub/b.txt")}})
    )  # fmt: skip
    verify(art, "extract")
    (art / "a.npy").write_bytes(b"0123456780")
    with pytest.raises(CnnscopeError, match="a.npy was changed"):
        verify(art, "extract")


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: "",
        lambda text: "[1, 2]",
        lambda text: '{"file": {}}',
        lambda text: '{"files": {"a.npy": 10}}',
        lambda text: None,  # not UTF-8
    ],
    ids=["truncated", "empty", "a-list", "no-files", "bad-entry", "binary"],
)
def test_a_damaged_manifest_makes_the_artifact_damaged(tmp_path, damage):
    art = _sealed(tmp_path)
    text = damage((art / MANIFEST).read_text())
    if text is None:
        (art / MANIFEST).write_bytes(b"\xff\xfe\x00")
    else:
        (art / MANIFEST).write_text(text)
    with pytest.raises(
        CnnscopeError, match=r"art is damaged: manifest.json is unreadable .*; rerun the extract step"
    ):
        verify(art, "extract")


@pytest.mark.parametrize("stamp", ["", '{"config": ', "\x00\x00"])
def test_unreadable_partial_state_starts_over_with_a_log_line(tmp_path, caplog, stamp):
    """A killed run's fingerprint or checkpoint that cannot be read never blocks every later rerun."""
    from cnnscope.checkpoint import Checkpoint

    partial = tmp_path / ".x.partial"
    partial.mkdir()
    (partial / "fingerprint.json").write_text(stamp)
    (partial / "rows.npy").write_bytes(b"stale")
    with (
        caplog.at_level(logging.INFO, "cnnscope"),
        resumable_dir(tmp_path / "x", {"packed": "A"}) as (work, resumed),
    ):
        assert not resumed and not (work / "rows.npy").exists()
        (work / "loop.ckpt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
        assert Checkpoint(work / "loop.ckpt").load() is None
    assert "earlier partial work is unreadable; starting over" in caplog.text
    assert "loop.ckpt is unreadable" in caplog.text


def test_a_step_refuses_a_damaged_input_before_any_work(tmp_path, packed):
    res = _step(
        "extract", "model=resnet18", "model.weights=null", "layer=layer1", f"packed={packed.root}", "out=a",
        "progress=false", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    with open(tmp_path / "a" / "activations.npy", "r+b") as f:
        f.truncate(1000)
    res = _step("dissect", "activations=a", f"packed={packed.root}", "out=d", cwd=tmp_path)
    assert res.returncode == 2 and "truncated?); rerun the extract step" in res.stdout
    assert not (tmp_path / "d").exists()


# --- no silent wrong science ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "step,args,message",
    [
        ("extract", ["store_dtype=int8"], "Invalid value 'int8', expected one of [float16, float32]"),
        ("extract", ["batch_size=0"], "batch_size=0 is out of range: it must lie in [1, inf)"),
        ("attribution", ["deletion_steps=0"], "deletion_steps=0 is out of range"),
        ("train", ["train.batch_size=0"], "train.batch_size=0 is out of range"),
        (
            "synthworld",
            ["world.image_size=65"],
            "world.image_size=65 is not valid: it must be a multiple of 2",
        ),
        ("dissect", ["detector_iou=-1"], "detector_iou=-1.0 is out of range: it must lie in [0, 1)"),
        ("dissect", ["quantile=nan"], "quantile=nan is not a finite number"),
        (
            "download",
            ["dataset.sha256=abc"],
            "dataset.sha256='abc' is not valid: it must match [0-9a-fA-F]{64}",
        ),
        ("stimuli", ["retries=-1"], "retries=-1 is out of range"),
    ],
)
def test_out_of_range_settings_are_refused(tmp_path, step, args, message):
    required = {
        "extract": ["layer=l", "packed=p"],
        "attribution": ["name=m", "layer=l", "packed=p"],
        "train": [],
        "synthworld": [],
        "dissect": ["activations=a", "packed=p"],
        "download": [],
        "stimuli": [],
    }[step]
    res = _step(step, *required, "out=o", *args, cwd=tmp_path)
    assert res.returncode != 0 and message in res.stdout + res.stderr, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr and list(tmp_path.iterdir()) == []


def test_a_missing_required_setting_is_one_line(tmp_path):
    res = _step("dissect", "packed=p", "out=o", cwd=tmp_path)
    assert res.returncode == 2
    assert "missing required setting(s) activations" in res.stdout and "Traceback" not in res.stderr


def test_a_checkpoint_with_a_nan_weight_is_refused(tmp_path, packed):
    state = ConvNet(num_classes=16, width=8).state_dict()
    state["conv3.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    res = _step(
        "extract", "model=convnet", "model.width=8", "model.checkpoint=nan.pt", "layer=conv5",
        f"packed={packed.root}", "out=a", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2 and "non-finite weights (NaN or Inf) in conv3.0.weight" in res.stdout
    assert not (tmp_path / "a").exists()


class _Log(nn.Module):
    def forward(self, x):
        return x.log()  # -inf where a pixel is 0


def test_non_finite_activations_stop_extraction_naming_the_image(tmp_path):
    images = np.full((6, 8, 8, 3), 200, np.uint8)
    images[4, 3, 3, 0] = 0
    loaded = LoadedModel(nn.Sequential(_Log()), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    names = [f"img{i}.jpg" for i in range(6)]
    with pytest.raises(
        CnnscopeError, match=r"model 0: non-finite activations .* on image img4.jpg \(index 4\)"
    ):
        extract_layer(
            loaded, "0", images, tmp_path, ExtractParams(batch_size=4), progress=False, image_names=names
        )


def test_diverging_training_fails_instead_of_writing_a_model():
    spec = TrainSpec(steps=30, n_train=64, n_val=16, image_size=16, batch_size=8, lr=1e8, width=4)
    with pytest.raises(CnnscopeError, match="diverged at step .*: the loss is nan; lower train.lr"):
        train(spec, progress=False)


def test_random_initialisation_is_seeded_and_the_weights_digest_tells_models_apart(tmp_path):
    a, b = (load_model(ModelSpec("torchvision", "resnet18")) for _ in range(2))
    assert a.digest() == b.digest()  # two clean runs of a weights: null model agree
    assert load_model(ModelSpec("torchvision", "resnet18", seed=1)).digest() != a.digest()
    torch.save(ConvNet(width=8).state_dict(), tmp_path / "c.pt")
    c = load_model(ModelSpec("checkpoint", "convnet", checkpoint=str(tmp_path / "c.pt"), width=8))
    c.module.conv1[0].weight.data[0, 0, 0, 0] += 1
    assert (
        c.digest()
        != load_model(ModelSpec("checkpoint", "convnet", checkpoint=str(tmp_path / "c.pt"), width=8)).digest()
    )


def test_partial_work_for_other_inputs_is_discarded_with_a_log_line(tmp_path, caplog):
    with pytest.raises(RuntimeError), resumable_dir(tmp_path / "x", {"packed": "A"}) as (work, resumed):
        (work / "rows.npy").write_bytes(b"from probe set A")
        raise RuntimeError("killed")
    with (
        caplog.at_level(logging.INFO, "cnnscope"),
        resumable_dir(tmp_path / "x", {"packed": "B"}) as (work, resumed),
    ):
        assert not resumed and not (work / "rows.npy").exists()
    assert "earlier partial work was for other inputs or settings; starting over" in caplog.text


def test_a_duplicate_label_number_is_refused(world, tmp_path):
    import shutil

    shutil.copytree(world, tmp_path / "w")
    lines = (tmp_path / "w" / "label.csv").read_text().splitlines()
    lines.append(lines[-1].replace(lines[-1].split(",")[1], "impostor", 1))
    (tmp_path / "w" / "label.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"label number \d+ is given twice"):
        BrodenDataset(tmp_path / "w")


def test_a_duplicate_label_name_is_refused(world, tmp_path):
    """Tables and figures key labels by name: two numbers with one name would mix their rows."""
    import shutil

    shutil.copytree(world, tmp_path / "w")
    path = tmp_path / "w" / "label.csv"
    header, first, second, *rest = path.read_text().splitlines()
    name = first.split(",")[1]
    cells = second.split(",")
    path.write_text("\n".join([header, first, ",".join([cells[0], name, *cells[2:]]), *rest]) + "\n")
    with pytest.raises(DatasetError, match=rf"label name '{name}' is given to numbers \d+ and {cells[0]}"):
        BrodenDataset(tmp_path / "w")


def test_provenance_counts_only_the_jobs_it_is_given(tmp_path):
    for name, s in (("mine", 2.0), ("theirs", 50.0)):
        (tmp_path / f"{name}.tsv").write_text(f"s\tmax_rss\n{s}\t10\n")
    t = stage_times([("dissect", str(tmp_path / "mine.tsv")), ("extract", str(tmp_path / "gone.tsv"))])
    assert t.to_dict("records") == [
        {"stage": "dissect", "jobs": 1, "total_s": 2.0, "longest_s": 2.0, "peak_rss_mb": 10.0}
    ]


# --- the study ------------------------------------------------------------------------------------


def test_a_study_given_with_configfile_is_the_whole_study(tmp_path):
    work = copy_repo(tmp_path / "repo")
    study = {k: v for k, v in TINY.items() if k not in ("cue_conflict", "attribution")}
    (work / "s.yaml").write_text(yaml.safe_dump(study))
    res = snakemake(work, "-n", "--configfile", "s.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rule cueconflict" not in res.stdout and "rule attribution" not in res.stdout
    assert "rule dissect" in res.stdout


def test_shell_metacharacters_in_a_config_value_stay_text(tmp_path):
    work = copy_repo(tmp_path / "repo")
    data_dir = "my data $(touch PWNED)"
    study = {
        "dataset": "broden1_224",
        "data_dir": data_dir,
        "models": [{"name": "m", "model": "resnet18", "layers": ["layer4"], "overrides": {"weights": None}}],
        "steps": {"download": {"retries": 0, "timeout_s": 1.0}},
    }
    (work / "s.yaml").write_text(yaml.safe_dump(study))
    env = {**os.environ, "PYTHONPATH": str(work / "src")}
    dataset = (work / "config/dataset/broden1_224.yaml").read_text()
    (work / "config/dataset/broden1_224.yaml").write_text(
        dataset.replace("url: http://", "url: http://127.0.0.1:9/")
    )
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "s.yaml", "--until", "download"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode != 0  # nothing listens there: the download fails, as it should
    assert not list(work.rglob("PWNED")) and not (REPO / "PWNED").exists()
    log = (work / "results/logs/download/broden1_224.log").read_text()
    assert f"{data_dir}/downloads/broden1_224.zip" in log  # the path arrived whole, space and all


def test_a_path_the_disk_refuses_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("a user's file")
    res = _step("synthworld", "out=notes.txt/world", "world.n_images=4", "world.image_size=16", cwd=tmp_path)
    assert res.returncode == 2 and "synthworld failed: cannot use" in res.stdout, res.stdout + res.stderr
    assert (
        "Traceback" not in res.stdout + res.stderr and (tmp_path / "notes.txt").read_text() == "a user's file"
    )


def test_cnnscope_run_takes_a_study_file_relative_to_where_it_is_run(tmp_path, monkeypatch, capsys):
    from cnnscope import cli

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**TINY, "cue_conflict": None, "attribution": None}))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "-n", "--configfile", "s.yaml"]) == 0
    assert cli.main(["run", "-n", "--configfile", "missing.yaml"]) == 2
    assert "--configfile missing.yaml: no such file" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_one_line(tmp_path, packed):
    res = _step(
        "extract", "model=resnet18", "model.weights=null", "layer=layer1", f"packed={packed.root}", "out=a",
        "device=cuda", cwd=tmp_path,
    )  # fmt: skip
    assert (
        res.returncode == 2
        and "device=cuda but no GPU is visible: use device=auto or device=cpu" in res.stdout
    )
    assert not (tmp_path / "a").exists()
