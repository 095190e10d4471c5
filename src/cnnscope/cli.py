"""The ``cnnscope`` command: set up a study folder anywhere, run it, and find models and layers.

* ``cnnscope init DIR``: write a commented study config, ``DIR/config.yaml``;
* ``cnnscope run [--directory DIR] [SNAKEMAKE ARGS...]``: run the study of DIR (default: here) with
  the packaged workflow; results, logs and Snakemake's state go to DIR, never into the install;
* ``cnnscope layers MODEL``: the dissectable layers of a model, with output shapes and unit counts;
* ``cnnscope models``: the built-in, torchvision and configured models;
* ``cnnscope explain IMAGES... --model MODEL``: attribution maps of your own images, and a page;
* ``cnnscope verify [--full] [PATHS...]``: check artifacts against their manifests.

A bad argument is one line and exit status 2, like every cnnscope step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from cnnscope.artifacts import PAGE
from cnnscope.errors import CnnscopeError, disk_fault
from cnnscope.resources import CONFIG_DIR, DEFAULT_STUDY, PROFILES, ROOT, SNAKEFILE

STUDY_FILE = "config.yaml"  # what `init` writes and `run` reads in a study folder
EXPLAIN_SIZE = 224


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "run" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("layers", "explain") and "" not in sys.path:
        sys.path.insert(0, "")  # a module in the folder imports, as in a study's steps (run there)
    try:
        return COMMANDS[args.command](args, extra)
    except CnnscopeError as e:
        print(f"cnnscope {args.command}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        line = disk_fault(e)
        if line is None:
            raise
        print(f"cnnscope {args.command}: {line}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnscope", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cnnscope {version('cnnscope')}")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a commented study config into a folder")
    init.add_argument("directory", type=Path)
    run = sub.add_parser("run", help="run a study (other arguments go to Snakemake, e.g. -n)")
    run.add_argument(
        "--directory", "-d", type=Path, default=Path.cwd(), help="the study folder (default: here)"
    )
    run.add_argument("--profile", default="default", help="a packaged profile (default, slurm) or a folder")
    run.add_argument(
        "--configfile",
        nargs="+",
        default=[],
        help=f"study config files (default: the folder's {STUDY_FILE}, else the packaged default study)",
    )
    layers = sub.add_parser("layers", help="list a model's dissectable layers (4-D outputs)")
    layers.add_argument("model", help="an architecture, a config/model name, or a model YAML file")
    layers.add_argument("--filter", help="only layers whose name contains this text")
    layers.add_argument(
        "--input-size", type=int, help="input size in pixels (default: the model's, else 224)"
    )
    layers.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model settings")
    models = sub.add_parser("models", help="list the models a study can name")
    models.add_argument(
        "--configfile", type=Path, help=f"also list a study's models (default: ./{STUDY_FILE})"
    )
    explain = sub.add_parser("explain", help="attribution maps and a page for your own images")
    explain.add_argument("images", nargs="+", type=Path)
    explain.add_argument(
        "--model", required=True, help="an architecture, a config/model name, or a YAML file"
    )
    explain.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model settings")
    explain.add_argument("--layer", help="class-activation layer (default: the last feature maps)")
    explain.add_argument("--methods", nargs="+", help="attribution methods (default: all)")
    explain.add_argument("--target", type=int, help="explain this class index (default: the prediction)")
    explain.add_argument("--size", type=int, help="image size (default: the model's, else 224)")
    explain.add_argument("--out", type=Path, default=Path("explain"), help="output folder (default: explain)")
    explain.add_argument("--device", default="auto")
    explain.add_argument(
        "--dissection",
        type=Path,
        help="a dissect step's output of this model's layer: names the profiles' units",
    )
    stages = sub.add_parser("stages", help="list the study's stages (--settings: each one's settings)")
    stages.add_argument("--settings", action="store_true", help="each stage's settings, types and defaults")
    check = sub.add_parser("verify", help="check artifacts against their manifests (--full: every digest)")
    check.add_argument("paths", nargs="*", type=Path, help="artifacts (default: every one under ./results)")
    check.add_argument("--full", action="store_true", help="hash every file, not only changed ones")
    return parser


def _init(args: argparse.Namespace, extra: list[str]) -> int:
    study = args.directory / STUDY_FILE
    if study.exists():
        raise CnnscopeError(f"{study} exists; cnnscope init never overwrites a study: pick another folder")
    args.directory.mkdir(parents=True, exist_ok=True)
    header = (
        "# A cnnscope study. Run it here with `cnnscope run` (or `cnnscope run --directory DIR`): results,\n"
        "# logs and downloads go into this folder. Below is the default study, offline on the built-in\n"
        "# synthetic worlds; every key is documented in cnnscope's config/README.md, and `cnnscope models`\n"
        "# and `cnnscope layers MODEL` list what the `models` entries can name.\n\n"
    )
    study.write_text(header + DEFAULT_STUDY.read_text())
    print(f"cnnscope: wrote {study}; next: cd {args.directory} && cnnscope run")
    return 0


def _check_writable(workdir: Path) -> None:
    """Results and Snakemake's own state (``.snakemake/``) go into the study folder: a folder where
    nothing can be written fails here in one line, not in Snakemake with a traceback."""
    probe = workdir / f".cnnscope-write-test-{os.getpid()}"
    try:
        probe.touch()
    except OSError as e:
        raise CnnscopeError(
            f"cannot write in the study folder {workdir}: {e.strerror}; run a study where you may write "
            "(copy it with cnnscope init DIR)"
        ) from e
    probe.unlink()


def _rebuild_damaged(workdir: Path, study: list[str], extra: list[str]) -> list[str]:
    """``extra`` with every damaged artifact of the study (a file missing or truncated, an unreadable
    manifest: :func:`~cnnscope.io.damaged_artifacts`) forced to rerun. Snakemake judges outputs by
    their timestamps alone, so without this a damaged artifact stays "up to date" and every later run
    stops at the step that reads it. Only when something is damaged does this ask Snakemake for the
    study's outputs (``--summary``, one more DAG build): a damaged artifact of another study, which
    this one cannot rebuild, is named and left as it is."""
    from cnnscope.io import damaged_artifacts

    damaged = {str(art.relative_to(workdir)): why for art, why in damaged_artifacts(workdir / "results")}
    if not damaged:
        return extra
    summary = subprocess.run([*study, "--summary"], cwd=workdir, capture_output=True, text=True)
    outputs = {line.split("\t")[0] for line in summary.stdout.splitlines()[1:]}
    paths = [path for path in damaged if path in outputs]
    for path, why in damaged.items():
        what = "rebuilding it" if path in outputs else "not an output of this study: left as it is"
        print(f"cnnscope: {path} is damaged ({why}); {what}", file=sys.stderr)
    if not paths:
        return extra
    for flag in ("--forcerun", "-R"):  # the user's own list keeps its place and gains ours
        if flag in extra:
            i = extra.index(flag) + 1
            return [*extra[:i], *paths, *extra[i:]]
    return [*extra, "--forcerun", *paths]


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    workdir = args.directory.resolve()
    if not workdir.is_dir():
        raise CnnscopeError(f"--directory {args.directory}: no such folder; create it with cnnscope init")
    studies = [str(_existing(f, "--configfile", ROOT)) for f in args.configfile]
    if not studies:
        studies = [str(workdir / STUDY_FILE if (workdir / STUDY_FILE).is_file() else DEFAULT_STUDY)]
    profile = _existing(args.profile, "--profile", PROFILES)
    _check_writable(workdir)
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
    snakemake += ["--directory", str(workdir), "--profile", str(profile)]
    extra = _rebuild_damaged(workdir, [*snakemake, "--configfile", *studies], extra)
    cmd = [*snakemake, *_gpu_resources(extra), *extra, "--configfile", *studies]
    code = subprocess.call(cmd, cwd=workdir)  # the study folder's own modules import (model: import)
    if code == 0 and not {"-n", "--dry-run", "--dryrun"} & set(extra):
        print(f"cnnscope: report at {workdir / 'results' / 'report' / PAGE}")
    return code


def _existing(name: str, what: str, packaged: Path) -> Path:
    """A path given on the command line: relative to here, else one of cnnscope's own (a packaged
    profile by name, or a study such as config/studies/x.yaml as the README names them)."""
    for base in (Path.cwd(), packaged):
        if (base / name).exists():
            return (base / name).resolve()
    raise CnnscopeError(f"{what} {name}: no such file here ({Path.cwd()}) or in {packaged}")


def _gpu_resources(extra: list[str]) -> list[str]:
    """``--resources gpu=N`` for the GPUs this machine has, so N GPU jobs run at once (each claims its
    own GPU, :func:`cnnscope.device.pick_device`), unless the user sets resources."""
    from cnnscope.device import gpu_count

    count = gpu_count()
    return ["--resources", f"gpu={count}"] if count > 1 and "--resources" not in extra else []


def _model(name: str, sets: list[str]):  # -> ModelSpec
    from cnnscope.models.registry import ModelSpec
    from cnnscope.stepkit.compose import compose_model

    return ModelSpec(**compose_model(name, sets))


def _layers(args: argparse.Namespace, extra: list[str]) -> int:
    from cnnscope.models.catalog import format_layers, layer_table
    from cnnscope.models.registry import skeleton

    spec = _model(args.model, args.set)
    size = args.input_size or spec.input_size or 224
    print(format_layers(layer_table(skeleton(spec), size, args.filter)))
    return 0


def _models(args: argparse.Namespace, extra: list[str]) -> int:
    import yaml

    from cnnscope.models.catalog import available_models, format_models

    print(format_models(available_models(CONFIG_DIR)))
    study = args.configfile or (Path(STUDY_FILE) if Path(STUDY_FILE).is_file() else None)
    if study is not None:
        if not study.is_file():
            raise CnnscopeError(f"--configfile {study}: no such file")
        entries = (yaml.safe_load(study.read_text()) or {}).get("models") or []
        print(f"\nstudy {study} ({len(entries)}):")
        for m in entries:
            print(f"  {m.get('name')}: model={m.get('model')} layers={', '.join(m.get('layers', []))}")
    return 0


def _explain(args: argparse.Namespace, extra: list[str]) -> int:
    from cnnscope.attribution.suite import METHODS, TRAINED
    from cnnscope.device import pick_device
    from cnnscope.explain import explain
    from cnnscope.models.catalog import check_layers, layer_table
    from cnnscope.models.registry import load_model, skeleton

    spec = _model(args.model, args.set)
    size = args.size or spec.input_size or EXPLAIN_SIZE
    layer = args.layer or _last_feature_maps(layer_table(skeleton(spec), size))
    check_layers(spec, [layer], args.model, size)  # a logits tensor out, feature maps at the layer
    loaded = load_model(spec, pick_device(args.device))
    methods = args.methods or [m for m in METHODS if m not in TRAINED]
    labels = _unit_labels(args.dissection) if args.dissection else None
    out = explain(
        loaded,
        layer,
        args.images,
        methods,
        args.out,
        size,
        loaded.class_names,
        args.target,
        unit_labels=labels,
    )
    print(f"cnnscope: {len(args.images)} image(s), layer {layer} -> {out / PAGE}")
    return 0


def _unit_labels(folder: Path) -> list[str]:
    """Each unit's best label and its IoU from a dissect step's output (``units.csv``)."""
    import pandas as pd

    from cnnscope.artifacts import DissectArtifact

    units = DissectArtifact(folder).units
    if not units.is_file():
        raise CnnscopeError(
            f"{folder} is not a dissect step's output (no {units.name}); give "
            "results/dissect/<dataset>/<model>/<layer> of a study that dissected this model's layer"
        )
    table = pd.read_csv(units).sort_values("unit")
    return [f"{label} ({iou:.2f})" for label, iou in zip(table["label"], table["iou"], strict=True)]


def _last_feature_maps(rows: list) -> str:
    """The class-activation layer by default: the last feature maps with spatial extent, named by
    their top-level module when it gives the same maps (``layer4`` of a ResNet, not its last ReLU, nor
    the global pooling)."""
    spatial = [r for r in rows if r.shape[1] * r.shape[2] > 1]
    if not spatial:
        raise CnnscopeError("the model has no layer with spatial feature maps; name one with --layer")
    last = spatial[-1]
    top = next((r for r in rows if r.name == last.name.split(".")[0]), last)
    return top.name if top.shape == last.shape else last.name


def _verify(args: argparse.Namespace, extra: list[str]) -> int:
    """Each artifact checked as a step checks its inputs, or (``--full``) with every file hashed, which
    also catches an edit in place that kept the file's size and modification time."""
    from cnnscope.io import MANIFEST, verify

    paths = args.paths or sorted(m.parent for m in Path("results").rglob(MANIFEST))
    if not paths:
        raise CnnscopeError("no artifacts under ./results: give their paths, or run this in a study folder")
    damaged = 0
    for path in paths:
        parts = path.resolve().parts
        step = parts[parts.index("results") + 1] if "results" in parts[:-1] else "its"
        try:
            verify(path, step, full=args.full)
        except CnnscopeError as e:
            print(f"cnnscope verify: {e}", file=sys.stderr)
            damaged += 1
    kind = "every digest" if args.full else "sizes, times and inodes; digests where they differ"
    print(f"cnnscope: {len(paths) - damaged} of {len(paths)} artifacts intact ({kind})")
    return 2 if damaged else 0


def _stages(args: argparse.Namespace, extra: list[str]) -> int:
    from cnnscope.stages import STAGES, stage_table

    print(stage_table(), end="")
    if args.settings:
        from cnnscope.stepkit.schema import schema, settings

        for name, stage in STAGES.items():
            print(f"\n{name} (study: steps.{name}.<key>): {stage.doc}")
            print("\n".join(f"  {line}" for line in settings(schema(name))))
    return 0


COMMANDS = {
    "init": _init,
    "run": _run,
    "layers": _layers,
    "models": _models,
    "explain": _explain,
    "verify": _verify,
    "stages": _stages,
}


if __name__ == "__main__":
    sys.exit(main())
