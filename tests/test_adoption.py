"""A researcher's own model and own folder: a plain (non-editable) install runs the README's own-model
example in a study folder, the command line finds models and layers, and the dependency lists agree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from conftest import REPO, TINY
from PIL import Image
from setuptools import find_packages

from cnnscope import cli
from cnnscope.errors import CnnscopeError, ModelError
from cnnscope.models.registry import ModelSpec, load_model, output_count, read_checkpoint

README = (REPO / "README.md").read_text()


def readme_block(marker: str) -> str:
    """The fenced code block after ``<!-- marker -->`` in the README."""
    match = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```", README, re.S)
    assert match, f"README has no block after <!-- {marker} -->"
    return match.group(1)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory) -> Path:
    """A fresh venv holding a wheel of this checkout, installed with pip (not editable); the
    dependencies come from the test environment through a .pth file, so nothing is downloaded."""
    root = tmp_path_factory.mktemp("install")
    tree = root / "tree"
    tree.mkdir()
    for item in ("Snakefile", "workflow", "config", "src", "pyproject.toml", "README.md"):
        src = REPO / item
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(src, tree / item, ignore=ignore) if src.is_dir() else shutil.copy2(src, tree / item)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"), str(tree)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    env = root / "venv"
    venv.create(env, with_pip=True)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((root / "wheel").glob("cnnscope-*.whl"))
    done = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return env


def _in_venv(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean["PATH"] = f"{env / 'bin'}{os.pathsep}{clean['PATH']}"
    return subprocess.run(
        [str(env / "bin" / "cnnscope"), *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_plain_install_imports_its_own_copy(plain_install, tmp_path):
    res = subprocess.run(
        [str(plain_install / "bin" / "python"), "-c", "import cnnscope.resources as r; print(r.ROOT)"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).is_relative_to(plain_install), res.stdout
    assert (Path(res.stdout.strip()) / "workflow" / "rules" / "common.smk").is_file()


@pytest.mark.slow
def test_own_model_study_runs_in_its_folder_from_a_plain_install(plain_install, study, tmp_path):
    """The README's own-model example (``model: import``) through the whole study DAG, in a folder made
    by ``cnnscope init``; its tables equal those of the same weights loaded as a built-in checkpoint
    (the tiny study's trained model), and nothing is written into the install."""
    folder = tmp_path / "my study"
    res = _in_venv(plain_install, "init", str(folder), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["models"] and (folder / "config.yaml").read_text().startswith("# A cnnscope study.")
    cfg["models"] = yaml.safe_load(readme_block("own-model-study"))["models"]
    cfg["steps"] = TINY["steps"]
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "mynet.py").write_text(readme_block("own-model-code"))
    shutil.copy2(study / "results" / "train" / "tiny" / "model.pt", folder / "mynet.pt")
    before = _files(plain_install)

    res = _in_venv(plain_install, "run", "--cores", "2", cwd=folder)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"report at {folder / 'results' / 'report' / 'index.html'}" in res.stdout
    assert _files(plain_install) == before  # nothing new in the install
    assert {p.name for p in folder.iterdir()} >= {"results", ".snakemake", "config.yaml", "mynet.py"}

    ours, ref = folder / "results", study / "results"
    for layer in ("conv2", "conv5"):
        for table in ("units.csv", "detectors.csv"):
            mine = pd.read_csv(ours / "dissect" / "synthworld" / "mynet" / layer / table)
            theirs = pd.read_csv(ref / "dissect" / "synthworld" / "tiny" / layer / table)
            pd.testing.assert_frame_equal(mine, theirs)
    mine = json.loads((ours / "cueconflict" / "world" / "mynet" / "summary.json").read_text())
    theirs = json.loads((ref / "cueconflict" / "world" / "tiny" / "summary.json").read_text())
    assert mine.pop("name") == "mynet" and theirs.pop("name") == "tiny"
    assert mine == theirs
    for name in ("cue-conflict", "edges", "silhouettes"):
        a = pd.read_csv(ours / "cueconflict" / "world" / "mynet" / f"{name}.csv")
        b = pd.read_csv(ref / "cueconflict" / "world" / "tiny" / f"{name}.csv")
        assert a["object_response"].tolist() == b["object_response"].tolist()
    a = pd.read_csv(ours / "attribution" / "synthworld" / "mynet" / "metrics.csv")
    b = pd.read_csv(ref / "attribution" / "synthworld" / "tiny" / "metrics.csv")
    # L-CAM needs the model's training images: trained for the world model, not for an imported one
    assert set(b["method"]) - set(a["method"]) == {"lcam_fm", "lcam_img"}
    b = b[b["method"].isin(a["method"])].reset_index(drop=True)
    cols = [c for c in a.columns if c not in ("model", "seconds_per_image")]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert (ours / "featurevis" / "synthworld" / "mynet" / "conv5" / "manifest.json").is_file()


def test_init_never_overwrites_a_study(tmp_path, capsys):
    assert cli.main(["init", str(tmp_path / "s")]) == 0
    (tmp_path / "s" / "config.yaml").write_text("mine: true\n")
    assert cli.main(["init", str(tmp_path / "s")]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "s" / "config.yaml").read_text() == "mine: true\n"


def test_run_dry_runs_a_study_folder_from_elsewhere(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    assert cli.main(["init", str(folder)]) == 0
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--directory", "s", "-n", "--quiet", "rules"]) == 0
    assert not (folder / "results").exists() and (folder / ".snakemake").is_dir()
    assert cli.main(["run", "--directory", "nowhere", "-n"]) == 2


def test_layers_lists_the_modules_under_layer4_with_their_shapes(capsys):
    assert cli.main(["layers", "resnet50", "--filter", "layer4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[2] for line in lines[1:]}
    expected = [n for n, _ in torchvision.models.resnet50().named_modules() if n.split(".")[0] == "layer4"]
    assert list(rows) == expected  # every module under layer4 has a 4-D output
    assert rows["layer4"] == "2048x7x7" and rows["layer4.0.conv1"] == "512x14x14"
    assert cli.main(["layers", "resnet50", "--filter", "layer4", "--input-size", "448"]) == 0
    assert "2048x14x14" in capsys.readouterr().out


def test_models_lists_builtin_torchvision_configured_and_the_studys(tmp_path, monkeypatch, capsys):
    (tmp_path / "config.yaml").write_text(readme_block("own-model-study"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for text in ("built-in (2):", "convnet", "torchvision (", "resnet50", "config (", "import", "mynet"):
        assert text in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and re.fullmatch(r"cnnscope \d+\.\d+\.\d+\n", capsys.readouterr().out)


def _own_model_file(folder: Path, **extra) -> Path:
    (folder / "mynet.py").write_text(readme_block("own-model-code"))
    spec = {"source": "import", "factory": "mynet:build", "kwargs": {"width": 4, "num_classes": 16}, **extra}
    path = folder / "mynet.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_explain_writes_overlays_and_a_page_for_own_images(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = _own_model_file(tmp_path)
    for i, size in enumerate([(80, 60), (50, 90)]):
        Image.new("RGB", size, (40 * i, 120, 200)).save(tmp_path / f"img{i}.png")
    args = [
        "explain",
        "img0.png",
        "img1.png",
        "--model",
        str(model),
        "--methods",
        "gradcam",
        "guided_backprop",
    ]
    assert cli.main([*args, "--size", "48", "--out", "shown"]) == 0
    assert "layer conv5" in capsys.readouterr().out  # the last layer with a 4-D output
    page = (tmp_path / "shown" / "index.html").read_text()
    assert "Grad-CAM" in page and "Guided Backprop" in page
    assert len(list((tmp_path / "shown" / "overlays").glob("*.png"))) == 4
    assert cli.main([*args, "--size", "48", "--out", "shown2", "--layer", "nope"]) == 2
    assert not (tmp_path / "shown2").exists()
    # A dissection of the layer names the response profiles' units; a folder that is none is refused.
    units = pd.read_csv(tmp_path / "shown" / "responses.csv")["unit"].unique()
    dissected = tmp_path / "dissect"
    dissected.mkdir()
    pd.DataFrame({"unit": units[::-1], "label": [f"c{u}" for u in units[::-1]], "iou": 0.1}).to_csv(
        dissected / "units.csv", index=False
    )
    assert cli.main([*args, "--size", "48", "--out", "named", "--dissection", "dissect"]) == 0
    named = pd.read_csv(tmp_path / "named" / "responses.csv")
    assert (named["label"] == [f"c{u} (0.10)" for u in named["unit"]]).all()
    assert cli.main([*args, "--size", "48", "--out", "named2", "--dissection", "in"]) == 2
    assert "is not a dissect step's output" in capsys.readouterr().err
    assert not (tmp_path / "named2").exists()


def test_import_source_loads_a_factory_with_a_checkpoint_and_class_names(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _own_model_file(tmp_path)
    spec = ModelSpec(source="import", factory="mynet:build", kwargs={"width": 4, "num_classes": 16}, seed=5)
    first = load_model(spec)
    state = {f"module.{k}": v for k, v in first.module.state_dict().items()}  # DataParallel-style
    torch.save({"state_dict": state, "mean": [0.1, 0.2, 0.3]}, tmp_path / "w.pt")
    (tmp_path / "names.txt").write_text("# classes\n" + "\n".join(f"c{i}" for i in range(16)) + "\n")
    spec = ModelSpec(
        source="import",
        factory="mynet:build",
        kwargs={"width": 4, "num_classes": 16},
        checkpoint=str(tmp_path / "w.pt"),
        classes=str(tmp_path / "names.txt"),
        input_size=40,
    )
    loaded = load_model(spec)
    assert loaded.digest() == first.digest() and loaded.mean == (0.1, 0.2, 0.3)
    assert loaded.class_names == tuple(f"c{i}" for i in range(16)) and output_count(spec) == 16
    assert loaded.normalize(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)).shape == (2, 3, 40, 40)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        ("nomodule_here:build", {}, "cannot import nomodule_here"),
        ("mynet:absent", {}, "has no absent"),
        ("mynet:build", {"depth": 3}, "refused kwargs"),
        ("json:dumps", {"obj": 1}, "not a torch nn.Module"),
    ],
)
def test_import_source_errors_name_the_factory(tmp_path, monkeypatch, factory, kwargs, message):
    monkeypatch.syspath_prepend(str(tmp_path))
    _own_model_file(tmp_path)
    with pytest.raises(ModelError, match=message):
        load_model(ModelSpec(source="import", factory=factory, kwargs=kwargs))


def test_timm_models_load_from_a_local_file_and_fail_clearly_offline(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")  # a test dependency: installed with .[test]
    net = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    torch.save(net.state_dict(), tmp_path / "r.pt")
    loaded = load_model(
        ModelSpec(source="timm", arch="resnet10t", num_classes=5, checkpoint=str(tmp_path / "r.pt"))
    )
    state, _ = read_checkpoint(tmp_path / "r.pt")
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in state.items())
    assert (
        loaded.input_size == net.pretrained_cfg["input_size"][-1]
        and loaded.mean == net.pretrained_cfg["mean"]
    )
    # The hub reads HF_HUB_OFFLINE and its cache folder once, when it is imported (a user sets them
    # before starting), so the test sets what it read: setting the variables now would leave the hub
    # online, retrying for 45 s, and reading the machine's cache.
    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match="pretrained weights for resnet10t.*HF_HUB_OFFLINE"):
        load_model(ModelSpec(source="timm", arch="resnet10t", weights="DEFAULT"))
    with pytest.raises(ModelError, match="unknown timm model 'resnet10q'; did you mean"):
        load_model(ModelSpec(source="timm", arch="resnet10q"))


def test_the_dependency_lists_agree():
    """environment.yml installs the project itself (pyproject.toml's dependencies), with the Python
    pyproject requires; the rule environment names those dependencies but Snakemake; the wheel ships
    every package under src/."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"] and project["requires-python"] == ">=3.11"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-e .[test]"] and set(project["optional-dependencies"]["timm"]) <= set(
        project["optional-dependencies"]["test"]
    )
    rule_env = yaml.safe_load((REPO / "workflow" / "envs" / "cnnscope.yaml").read_text())
    assert "python=3.11" in rule_env["dependencies"]
    rule_pip = next(d["pip"] for d in rule_env["dependencies"] if isinstance(d, dict))
    assert rule_pip == [d for d in project["dependencies"] if not d.startswith("snakemake")]
    for pin in ("torch", "torchvision"):
        spec = next(d for d in project["dependencies"] if re.match(rf"{pin}[<>=]", d))
        assert ">=" in spec and "<" in spec  # a range that admits a site's own build
    packaged = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert packaged == {*find_packages(str(REPO / "src")), "cnnscope.study"}
    # every rule is the one generated per stage declaration, and it runs in the rule environment
    rules = {p.name: p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")}
    assert [n for n, text in rules.items() if re.search(r"^\s*rule\b", text, re.M)] == ["stages.smk"]
    rule = r"^    rule:\n(        .*\n|\n)*?        conda:\n            ENV\n"
    assert re.search(rule, rules["stages.smk"], re.M)


def test_the_rule_environment_post_deploy_makes_the_workflows_cnnscope_importable(plain_install, tmp_path):
    """What Snakemake runs in a new rule environment, here in a bare venv standing in for it: afterwards
    that environment imports the cnnscope the workflow runs (the plain install's, here)."""
    bare = tmp_path / "env"
    venv.create(bare, with_pip=False)
    packages = subprocess.run(
        [str(plain_install / "bin" / "python"), "-c", "import cnnscope.resources as r; print(r.PACKAGES)"],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PATH": f"{bare / 'bin'}{os.pathsep}{env['PATH']}", "CNNSCOPE_PACKAGES": packages}
    script = REPO / "workflow" / "envs" / "cnnscope.post-deploy.sh"
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    where = subprocess.run(
        [str(bare / "bin" / "python"), "-c", "import cnnscope; print(cnnscope.__file__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(packages), where


def test_a_head_that_cannot_decide_the_cue_conflict_fails_the_dry_run(tmp_path):
    from conftest import copy_repo, snakemake

    work = copy_repo(tmp_path)
    (work / "mynet.py").write_text(readme_block("own-model-code"))
    cfg = {**TINY, "models": yaml.safe_load(readme_block("own-model-study"))["models"]}
    cfg["models"][0]["overrides"] = {
        **cfg["models"][0]["overrides"],
        "kwargs": {"width": 4, "num_classes": 10},
    }
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "mynet.pt").write_bytes(b"")
    res = snakemake(work, "-n")
    assert res.returncode != 0
    why = "model 'mynet' cannot decide among cue_conflict classes 'world': it has 10 outputs"
    assert why in res.stdout + res.stderr


def test_run_lets_one_gpu_job_per_gpu_run_at_once(monkeypatch):
    monkeypatch.setattr("cnnscope.device.gpu_count", lambda: 3)
    assert cli._gpu_resources([]) == ["--resources", "gpu=3"]
    assert cli._gpu_resources(["--resources", "gpu=1"]) == []  # the user's own setting stands
    monkeypatch.setattr("cnnscope.device.gpu_count", lambda: 1)
    assert cli._gpu_resources([]) == []  # the profile's gpu=1


TUPLE_NET = """
from torch import nn


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        f = self.conv(x).mean((2, 3))
        return self.fc(f), f


def pair():
    return Pair()


def broken(depth=1):
    raise ValueError(f"depth {depth} is not supported")
"""


def test_a_model_that_fails_in_a_job_fails_the_check_in_one_line(tmp_path, monkeypatch):
    """A forward returning a tuple and a factory that raises were found only by a job, with a
    traceback; ``cnnscope layers`` could not import a module from the folder it was run in."""
    from cnnscope.errors import ModelError
    from cnnscope.models.catalog import check_layers

    (tmp_path / "pairnet.py").write_text(TUPLE_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ModelError, match=r"model 'p': pairnet:pair returns tuple, not a \(batch, classes\) tensor"
    ):
        check_layers(ModelSpec(source="import", factory="pairnet:pair"), ["conv"], "p")
    with pytest.raises(
        ModelError, match=r"factory pairnet:broken\(\{'depth': 3\}\) raised ValueError: depth 3"
    ):
        check_layers(ModelSpec(source="import", factory="pairnet:broken", kwargs={"depth": 3}), ["conv"], "b")


def test_cnnscope_layers_imports_a_module_of_the_folder_it_runs_in(tmp_path, monkeypatch, capsys):
    from cnnscope import cli

    (tmp_path / "pairnet2.py").write_text(TUPLE_NET)
    (tmp_path / "m.yaml").write_text("source: import\nfactory: 'pairnet2:pair'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert cli.main(["layers", "m.yaml"]) == 0
    assert "conv" in capsys.readouterr().out
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "x.png")
    assert cli.main(["explain", "x.png", "--model", "m.yaml", "--size", "32", "--out", "e"]) == 2
    err = capsys.readouterr().err
    assert "pairnet2:pair returns tuple, not a (batch, classes) tensor" in err and err.count("\n") == 1
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        ("convnett", {}, r"unknown model 'convnett'; did you mean convnet\?; the models are the files of"),
        (
            "convnet",
            {"widht": 8},
            r"unknown overrides key 'widht'; did you mean width.*the keys are source",
        ),
        ("convnet", {"width": "abc"}, r"overrides width: 'abc' is refused \(Value 'abc' .* Integer\)"),
    ],
)
def test_a_typo_in_a_model_entry_is_said_in_the_studys_words(model, overrides, message):
    """Hydra's own messages (and its advice to write ``+model.widht=8``) never reach the user."""
    from cnnscope.stepkit.compose import check_model_entry

    with pytest.raises(CnnscopeError, match=message) as e:
        check_model_entry("m", model, overrides)
    assert str(e.value).startswith("model 'm': ") and "+model" not in str(e.value)


def test_a_model_setting_that_fails_only_in_a_job_fails_the_check(tmp_path):
    from cnnscope.models.catalog import check_layers

    spec = ModelSpec(source="builtin", arch="convnet", width=8, mean=[0.5, 0.5])
    with pytest.raises(ModelError, match=r"model 'm': mean has 2 values \[0.5, 0.5\]; give one per RGB"):
        check_layers(spec, ["conv5"], "m")
    with pytest.raises(ModelError, match=r"model 'm': layer 'fc' gives no 4-D \(batch, units, h, w\)"):
        check_layers(ModelSpec(source="builtin", arch="convnet", width=8), ["conv5", "fc"], "m")
