"""The Snakemake DAG end to end on a tiny study: runs to the report, reruns nothing when nothing
changed, reruns exactly dissect and report when the quantile changes, and rejects bad studies
before any job runs. Also dry-runs the real-Broden study config."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import browser
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CORE, TINY, copy_repo, downstream, planned_jobs, snakemake, study_plan
from PIL import Image

from cnnscope.dissection import dead_units
from cnnscope.features import top_images
from cnnscope.shapebias.distortions import DISTORTIONS


def test_study_runs_to_the_report(study):
    html = (study / "results" / "report" / "index.html").read_text()
    assert "tiny / conv5" in html and "tiny / conv2" in html and "Texture vs shape" in html
    report = study / "results" / "report"
    for fig in (
        "detectors_per_layer",
        "detectors_by_depth",
        "iou_distribution",
        "shape_bias",
        "shape_bias_box",
        "cross_analysis",
        "tiny_attribution",
        "tcav_heatmap",
        "tcav_net2vec",
        "formulas_iou",
        "mistakes",
        "mistakes_tiny",
        "decoder_errors",
    ):
        assert (report / "figures" / f"{fig}.png").stat().st_size > 5_000, fig
        assert (report / "figures" / f"{fig}.svg").is_file(), fig
    for table in (
        "at_a_glance",
        "detectors",
        "units",
        "shape_bias",
        "stimulus_types",
        "robustness",
        "robustness_curves",
        "shape_bias_robustness",
        "cross_analysis",
        "attribution_metrics",
        "localisation",
        "sanity_randomisation",
        "tcav_summary",
        "tcav",
        "tcav_net2vec_summary",
        "tcav_net2vec",
        "formulas_summary",
        "formulas_top_units",
        "mistakes",
        "decoder_errors",
        "decoder_dgn",
        "stage_times",
        "versions",
    ):
        assert len(pd.read_csv(report / "tables" / f"{table}.csv")) > 0, table
    stages = set(pd.read_csv(report / "tables" / "stage_times.csv")["stage"])
    assert {"train", "extract", "dissect", "cueconflict", "attribution"} <= stages
    assert "Study config" in html and "At a glance" in html and "; as a formula: " in html
    assert "<h2 id='attribution'>Attribution</h2>" in html and "maximized" in html
    assert "Network inversion" in html and "L-CAM-Img" in html and "Score-CAM" in html
    inversions = sorted((study / "results/featurevis/synthworld/tiny/conv5").glob("inversion_*.png"))
    assert len(inversions) == 2
    maxima = np.load(study / "results/extract/synthworld/tiny/conv5/maxima.npy")
    vis = study / "results/featurevis/synthworld/tiny/conv5"
    for unit, trace in json.loads((vis / "traces.json").read_text()).items():
        shown = trace["projected"]  # the unit's top images, its maximum in each as extraction found it
        assert [p["image"] for p in shown] == top_images(maxima, int(unit), 5).tolist()
        assert np.allclose([p["activation"] for p in shown], maxima[[p["image"] for p in shown], int(unit)])
        assert (vis / f"projection_{unit}.png").is_file()
    for layer in TINY["models"][0]["layers"]:  # the learned inversion of every featurevis layer
        made = study / "results/decoder/synthworld/tiny" / layer
        errors = pd.read_csv(made / "errors.csv").set_index("features")
        assert errors.index.tolist() == ["intact", "binarised", "dropout"] and (errors["error"] > 0).all()
        assert (errors["images"] == TINY["steps"]["decoder"]["held_out"]).all()
        assert (errors["data"] == "world").all()
        shown = json.loads((study / "results/featurevis/synthworld/tiny" / layer / "traces.json").read_text())
        raised = json.loads((made / "dgn.json").read_text())
        assert raised.keys() == shown.keys()  # DGN-AM for the units pixel AM drew
        for unit, row in raised.items():
            assert Image.open(made / f"dgn_{unit}.png").size == (32, 32)
            assert row["best_probe"] > 0 and np.isfinite([row["through_decoder"], row["in_pixels"]]).all()
        for image in (study / "results/featurevis/synthworld/tiny" / layer).glob("inversion_*.png"):
            learned = Image.open(made / image.name.replace("inversion_", "reconstruction_"))
            assert learned.size == (3 * 32, 32)  # from intact, binarised and dropped-out features
    assert "Learned inversion and DGN-AM" in html and "DGN-AM" in html
    assert "projected to pixels" in html
    depth = pd.read_csv(report / "tables" / "detectors_by_depth.csv").set_index("layer")
    for layer in ("conv2", "conv5"):  # each layer's dead units, from its extraction's unit range
        unit_range = np.load(study / f"results/extract/synthworld/tiny/{layer}/unit_range.npy")
        assert depth.loc[layer, "dead_units"] == dead_units(unit_range).sum() <= depth.loc[layer, "units"]
    assert "dead units" in html
    assert "the filters of its first convolution" in html
    filters = Image.open(report / "figures" / "tiny_first_filters.png")  # 8 RGB 3x3 filters, 8 times larger
    assert filters.size == (8 * (24 + 1), 24 + 1) and filters.mode == "RGB"
    metrics = (study / "results/attribution/synthworld/tiny/metrics.csv").read_text()
    methods = (
        "gradcam++",
        "guided_backprop",
        "deconvnet",
        "guided_gradcam",
        "scorecam",
        "rise",
        "sidu",
        "lcam_fm",
        "lcam_img",
    )
    assert all(m in metrics for m in methods)
    located = pd.read_csv(study / "results/attribution/synthworld/tiny/localisation.csv")
    scored = pd.read_csv(study / "results/attribution/synthworld/tiny/metrics.csv")["method"].tolist()
    for placement, rows in located.groupby("placement"):
        assert rows["method"].tolist() == [*scored, "centre point / uniform map"], placement
    assert set(located["placement"]) == {"trained", "anywhere", "probe set"}
    assert located["pointing"].between(0, 1).all()
    summary = json.loads((study / "results/cueconflict/world/tiny/summary.json").read_text())
    assert summary["conflict_trials"] == 16 * 15 and summary["name"] == "tiny"
    types = pd.read_csv(report / "tables" / "stimulus_types.csv")
    assert types["type"].tolist() == ["original", "greyscale", "silhouettes", "edges", "texture"]
    assert types["trials"].tolist() == [16] * 5
    curves = pd.read_csv(report / "tables" / "robustness_curves.csv")
    assert set(curves["curve"]) == set(DISTORTIONS)
    assert (curves["trials"] == 16).all() and len(curves) == sum(len(d.levels) for d in DISTORTIONS.values())
    for step in (
        "synthworld/synthworld",
        "prepare/synthworld",
        "train/tiny",
        "extract/synthworld/tiny/conv5",
        "dissect/synthworld/tiny/conv5",
        "net2vec/synthworld/tiny/conv5",
        "stimuli/world",
        "cueconflict/world/tiny",
        "robustness/world/tiny",
        "attribution/synthworld/tiny",
        "lcam/tiny",
        "mistakes/tiny",
        "featurevis/synthworld/tiny/conv5",
        "decoder/synthworld/tiny/conv5",
        "sanity/synthworld/tiny",
        "tcav/synthworld/tiny/conv5",
        "formulas/synthworld/tiny/conv5",
        "report",
    ):
        assert (study / "results" / step / "config.yaml").is_file(), step
    assert (study / "results" / "benchmarks" / "dissect" / "synthworld" / "tiny" / "conv5.tsv").is_file()
    formulas = pd.read_csv(study / "results/formulas/synthworld/tiny/conv5/formulas.csv")
    assert sorted(formulas["length"].unique()) == [1, 2, 3] and formulas["iou"].between(0, 1).all()
    joins = formulas["formula"].str.count(" AND NOT | AND | OR ")
    assert (joins == formulas["length"] - 1).all()
    units = pd.read_csv(study / "results/dissect/synthworld/tiny/conv5/units.csv")
    single = formulas[formulas["length"] == 1].set_index("unit")
    assert np.allclose(single["iou"], units.set_index("unit")["iou"].loc[single.index], rtol=0, atol=1e-6)
    located = pd.read_csv(report / "tables" / "localisation.csv")
    probe = located[
        (located["placement"] == "probe set") & (located["method"] != "centre point / uniform map")
    ]
    assert probe["pointing"].between(0, 1).all() and (probe["images"] > 0).all()
    for layer in TINY["models"][0]["layers"]:  # tcav_layers: by default every dissected layer
        made = study / "results/tcav/synthworld/tiny" / layer
        tcav = pd.read_csv(made / "tcav.csv")
        assert set(tcav["layer"]) == {layer} and tcav["tcav"].between(0, 1).all()
        world, probe = (tcav[tcav["family"] == f] for f in ("world", "probe"))
        assert len(world) == 16 * (32 + 2) and world["own"].sum() == 2 * 16  # two random controls
        assert (probe["cue"] == "random").sum() == 2 * 16 and len(probe) > 3 * 16
        agreement = pd.read_csv(made / "net2vec.csv")
        assert len(agreement) > 0 and set(agreement["concept"]) <= set(probe["concept"])
        compared = probe[probe["concept"].isin(agreement["concept"])]
        assert compared["net2vec_tcav"].between(0, 1).all() and agreement["cosine"].abs().le(1).all()
    logs = list((study / "results" / "logs").rglob("*.log"))
    assert len(logs) > 10 and all("\r" not in f.read_text() for f in logs)  # progress lines, no bars
    assert all(f.stat().st_size < 10_000 for f in logs), {f.name: f.stat().st_size for f in logs}


def test_nothing_to_do_after_a_finished_run(study):
    assert planned_jobs(snakemake(study, "-n")) == {}


def test_cnnscope_run_rebuilds_a_damaged_artifact_snakemake_thinks_up_to_date(study, capsys, monkeypatch):
    """A damaged input made every later run stop at the step that reads it (Snakemake judges outputs
    by timestamps): ``cnnscope run`` now finds it and forces it, and what reads it, to rerun. A damaged
    artifact of another study (here a model the study does not have) is named and left alone."""
    from cnnscope.cli import _rebuild_damaged

    monkeypatch.setenv("PYTHONPATH", str(study / "src"))  # the study copy's code, as snakemake() runs it
    plan = [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/default", "--cores", "2"]
    art = "results/extract/synthworld/tiny/conv5"
    victim = study / art / "activations.npy"
    ghost = study / "results" / "extract" / "synthworld" / "ghost"
    data, stat = victim.read_bytes(), victim.stat()
    try:
        with open(victim, "r+b") as f:  # in place: the folder's own timestamps stay
            f.truncate(len(data) // 2)
        (ghost / "conv5").mkdir(parents=True)
        (ghost / "conv5" / "manifest.json").write_text("{")
        assert _rebuild_damaged(study, plan, ["-n"]) == ["-n", "--forcerun", art]
        err = capsys.readouterr().err
        assert f"{art} is damaged (activations.npy is truncated or grown); rebuilding it" in err
        assert "ghost/conv5 is damaged (manifest.json is unreadable); not an output of this study" in err
        assert _rebuild_damaged(study, plan, ["-R", "report", "-n"]) == ["-R", art, "report", "-n"]
        jobs = planned_jobs(snakemake(study, *_rebuild_damaged(study, plan, ["-n"])))
        assert jobs["extract"] == 1 and jobs["dissect"] == 1 and "train" not in jobs, jobs
    finally:
        victim.write_bytes(data)
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        shutil.rmtree(ghost, ignore_errors=True)
    assert _rebuild_damaged(study, plan, ["-n"]) == ["-n"]


def test_changing_the_quantile_reruns_only_dissect_and_what_reads_it(study, tmp_path):
    cfg = yaml.safe_load((study / "config" / "config.yaml").read_text())
    cfg["steps"]["dissect"]["quantile"] = 0.01
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(snakemake(study, "-n", "--configfile", str(changed)))
    assert jobs == downstream(TINY, "dissect")


def test_editing_a_step_config_default_reruns_that_step(study):
    """A default lives in the step's Config dataclass: changing it changes every job's composed config."""
    path = study / "src" / "cnnscope" / "steps" / "dissect.py"
    original = path.read_text()
    assert "detector_iou: float = bounded(0.04," in original
    try:
        path.write_text(
            original.replace("detector_iou: float = bounded(0.04,", "detector_iou: float = bounded(0.05,")
        )
        jobs = planned_jobs(snakemake(study, "-n"))
        assert jobs == downstream(TINY, "dissect")
    finally:
        path.write_text(original)


def test_editing_library_code_reruns_its_step(study):
    """A real edit (Snakemake compares checksums, so a bare touch does not count)."""
    code = study / "src" / "cnnscope" / "dissection.py"
    original = code.read_text()
    try:
        code.write_text(original + "\n# an edit\n")
        jobs = planned_jobs(snakemake(study, "-n"))
        assert jobs == downstream(TINY, "dissect")
    finally:
        code.write_text(original)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"models": [{"name": "m", "model": "convnet", "train": True, "layers": ["conv9"]}]},
            r"unknown layer 'conv9' for m.*conv5",
        ),
        ({"modles": []}, r"modles"),
        ({"dataset": "broden2"}, r"broden2"),
        (
            {"models": [{"name": "m", "model": "resnet18", "train": True, "layers": ["layer4"]}]},
            r"train: true but is not built-in",
        ),
        (
            {"models": [{"name": "m", "model": "resnet18", "layers": ["layer4"]}]},
            r"cannot decide among cue_conflict classes 'world'",
        ),
        (
            {"models": [{"name": "m", "model": "convnet", "layers": ["conv5"]}]},
            r"model 'm' is built-in with neither train: true nor a checkpoint",
        ),
        (
            {"models": [{**TINY["models"][0], "overrides": {"widht": 8}}]},
            r"model 'tiny': unknown overrides key 'widht'; did you mean width",
        ),
        (
            {"models": [{"name": "..", "model": "convnet", "train": True, "layers": ["conv5"]}]},
            r"'\.\.' does not match",
        ),
        (
            {"models": [{"name": "m", "model": "convnet", "train": True, "layers": ["../../x"]}]},
            r"'\.\./\.\./x' does not match",
        ),
        (
            {"models": [{**TINY["models"][0]}, {**TINY["models"][0]}]},
            r"model name\(s\) tiny given twice",
        ),
        (
            {"steps": {**TINY["steps"], "dissect": {"batch_size": -5}}},
            r"steps.dissect: batch_size=-5 is out of range: it must lie in \[0, inf\)",
        ),
        (
            {"steps": {**TINY["steps"], "dissect": {"iou_mode": "strict"}}},
            r"steps.dissect: .*Invalid value 'strict', expected one of \[paper, lite\]",
        ),
    ],
)
def test_bad_study_fails_before_any_job(study, tmp_path, change, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, **change}))
    work = copy_repo(tmp_path / "repo")
    (work / "config" / "config.yaml").write_text(bad.read_text())
    res = snakemake(work)
    assert res.returncode != 0
    assert re.search(message, res.stdout + res.stderr, re.S), res.stdout + res.stderr
    assert not (work / "results").exists()


def test_real_broden_study_dry_runs(tmp_path):
    work = copy_repo(tmp_path)
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", "config/studies/broden_imagenet.yaml"))
    assert jobs == study_plan(work / "config/studies/broden_imagenet.yaml")
    assert jobs["weights"] == 2 and jobs["download"] == 1 and "cueconflict" not in jobs


def test_real_lcam_comparison_study_dry_runs(tmp_path):
    """VGG-16 and ResNet-50 with L-CAM trained on an ImageNet-layout folder (not read by a dry run)."""
    work = copy_repo(tmp_path)
    res = snakemake(work, "-n", "-p", "--configfile", "config/studies/lcam_imagenet.yaml")
    assert planned_jobs(res) == study_plan(work / "config/studies/lcam_imagenet.yaml")
    assert planned_jobs(res)["lcam"] == 2
    lcam = [line for line in (res.stdout + res.stderr).splitlines() if "cnnscope.steps.lcam" in line]
    assert len(lcam) == 2 and all("data/imagenet/train" in line for line in lcam)
    assert any("features.29" in line for line in lcam)


def test_real_imagenet_shape_bias_study_dry_runs(tmp_path):
    work = copy_repo(tmp_path)
    checkpoint = work / "data" / "checkpoints" / "resnet50_train_60_epochs-c8e5653e.pth.tar"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")  # the user's file: an input of the jobs that load it (not read by a dry run)
    res = snakemake(work, "-n", "-p", "--configfile", "config/studies/imagenet_shapebias.yaml")
    jobs = planned_jobs(res)
    assert jobs == study_plan(work / "config/studies/imagenet_shapebias.yaml")
    assert jobs["weights"] == 1 and jobs["cueconflict"] == 2  # the user's checkpoint is not fetched
    assert "results/stimuli/texture-vs-shape/raw-data/style-transfer-512-nomask-experiment" in (
        res.stdout + res.stderr
    )
    assert "robustness" not in jobs  # the real checkout ships no originals to distort
    config = yaml.safe_load((work / "config/studies/imagenet_shapebias.yaml").read_text())
    config["cue_conflict"]["robustness_images"] = "data/imagenet16"
    (work / "with_images.yaml").write_text(yaml.safe_dump(config))
    res = snakemake(work, "-n", "-p", "--configfile", "with_images.yaml")
    assert planned_jobs(res)["robustness"] == 2 and "data/imagenet16" in res.stdout


def test_report_renders_in_a_real_browser(study):
    """Every image loads and the console stays clean in headless Chromium (installed by .ci/run)."""
    if not browser.available():
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: .ci/run should have installed them")
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    shot = study / "results" / "report" / "screenshot.png"
    seen = browser.check_page(study / "results" / "report" / "index.html", shot)
    assert seen["images"] >= 10 and seen["broken"] == [], seen
    assert seen["errors"] == [], seen
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    assert seen["height"] > 2000  # the whole study is on the page, not an error message
    assert seen["sections"] >= 8 and seen["folded_height"] < seen["body_height"] / 4  # each section folds


def test_snakemakes_own_report_collects_the_figures(study, tmp_path):
    import zipfile

    res = snakemake(study, "--report", str(tmp_path / "report.zip"))
    assert res.returncode == 0, res.stdout + res.stderr
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    for fig in ("detectors_per_layer.png", "shape_bias.png", "cross_analysis.png", "tiny_attribution.png"):
        assert any(n.endswith(fig) for n in names), fig


def test_a_second_run_is_locked_out_and_a_killed_run_finishes_identically(study, tmp_path):
    import signal
    import time

    work = copy_repo(tmp_path / "repo")
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(CORE, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(work / "src")}
    first = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/default", "--cores", "2"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def wait_for(cond, what):
        end = time.monotonic() + 300
        while not cond():
            assert first.poll() is None, f"the first run ended before {what}"
            assert time.monotonic() < end, f"timed out waiting for {what}"
            time.sleep(0.05)

    try:
        wait_for(lambda: any((work / ".snakemake" / "locks").glob("*")), "its lock")
        second = snakemake(work)
        assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
        extract = work / "results" / "extract" / "synthworld" / "tiny"
        wait_for(lambda: extract.is_dir() and any(extract.iterdir()), "extraction")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (work / "results" / "report").exists()
    assert snakemake(work, "--unlock").returncode == 0
    rerun = snakemake(work)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for table in (
        "dissect/synthworld/tiny/conv5/units.csv",
        "dissect/synthworld/tiny/conv2/units.csv",
        "cueconflict/world/tiny/cue-conflict.csv",
    ):
        assert (work / "results" / table).read_bytes() == (study / "results" / table).read_bytes(), table
    assert (work / "results" / "report" / "index.html").is_file()
