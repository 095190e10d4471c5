"""Composing step configs outside a step (the Snakefile), and turning values into CLI overrides.

Snakemake only tracks params that are plain Python values, and never sees values pasted into a shell
template, so the workflow composes each job's config here and converts it to plain dicts (tracked
params); :mod:`cnnscope.overrides` writes the study's settings in Hydra's override grammar.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnscope.errors import CnnscopeError, did_you_mean
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.catalog import check_layers
from cnnscope.models.registry import ModelSpec, output_count, read_class_names, torchvision_archs
from cnnscope.overrides import hydra_value, model_items
from cnnscope.shapebias.classes import head_problem
from cnnscope.shapebias.evaluate import CLASS_SETS
from cnnscope.stages import STAGES, Study
from cnnscope.stepkit.runner import config_dir, plain
from cnnscope.stepkit.schema import schema, validate


def compose_step(step: str, overrides: list[str]) -> dict[str, Any]:
    """The step's composed and validated config as plain dicts (mandatory paths stay ``'???'``)."""
    schema(step)  # importing the step's module registers its schema
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = plain(compose(config_name=step, overrides=overrides))
    validate(step, cfg)
    return cfg


def study_model_spec(
    study: Study,
    name: str,
    composed: Callable[[str, tuple[str, ...]], dict[str, Any]] = lambda step, items: compose_step(
        step, list(items)
    ),
) -> ModelSpec:
    """The study's model ``name`` as every job that loads it sees it: its entry composed through the
    extract step's config (``composed``: a caching composition, the workflow's)."""
    return ModelSpec(**composed("extract", tuple(study.model_overrides(name)))["model"])


def compose_model(model: str, sets: Sequence[str] = ()) -> dict[str, Any]:
    """A model's validated spec (``ModelSpec`` fields) as the steps would load it, from a name a user
    types: a model YAML file (``ModelSpec`` keys), a ``config/model/`` entry, or a torchvision or
    built-in architecture; ``sets`` are further ``key=value`` settings of it (Hydra syntax)."""
    path = Path(model)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise CnnscopeError(f"model file {path} must be a mapping of ModelSpec keys")
        items = ["model=model_schema", *model_items({k: v for k, v in values.items() if k != "defaults"})]
    elif (config_dir() / "model" / f"{model}.yaml").is_file():
        items = [f"model={model}"]
    elif model in BUILTIN:
        items = ["model=model_schema", "model.source=builtin", f"model.arch={hydra_value(model)}"]
    elif model in torchvision_archs():
        items = ["model=model_schema", "model.source=torchvision", f"model.arch={hydra_value(model)}"]
        items.append("model.weights=DEFAULT")
    else:
        raise CnnscopeError(
            f"unknown model {model!r}: give a model YAML file, a config/model/ name or a torchvision or "
            "built-in architecture (`cnnscope models` lists them)"
        )
    try:
        given = [f"{s[: len(s) - len(s.lstrip('+~'))]}model.{s.lstrip('+~')}" for s in sets]
        return compose_step("weights", [*items, *given])["model"]
    except (HydraException, OmegaConfBaseException) as e:
        raise CnnscopeError(f"model {model}: {' '.join(str(e).split())}") from None


def check_model_entry(name: str, model: str, values: dict[str, Any]) -> None:
    """A study's model entry, in the study's own words, before Hydra composes it (whose messages
    speak of its config tree and advise ``+model.key=...``): ``model`` must name a ``config/model/``
    file, each of ``values`` (its ``overrides``) a ``ModelSpec`` field of the right type."""
    known = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    if model not in known:
        raise CnnscopeError(
            f"model {name!r}: unknown model {model!r}{did_you_mean(model, known)}; "
            f"the models are the files of config/model/: {', '.join(known)}"
        )
    keys = [f.name for f in dataclasses.fields(ModelSpec)]
    for key in values:
        if key not in keys:
            raise CnnscopeError(
                f"model {name!r}: unknown overrides key {key!r}{did_you_mean(key, keys)}; "
                f"the keys are {', '.join(keys)}"
            )
    spec = OmegaConf.structured(ModelSpec)
    for key, value in values.items():
        try:
            OmegaConf.merge(spec, {key: value})
        except OmegaConfBaseException as e:
            why = str(e).splitlines()[0]
            raise CnnscopeError(f"model {name!r}: overrides {key}: {value!r} is refused ({why})") from None


def _check_snapshots(name: str, entry: dict[str, Any]) -> None:
    """A model's ``snapshots``: steps of its training here (``train: true``), or ``{step, checkpoint}``
    files of a run trained elsewhere; each step once."""
    kept = entry.get("snapshots") or []
    trained = bool(entry.get("train"))
    if any(isinstance(k, int) != trained for k in kept):
        how = (
            "training steps (integers)" if trained else "{step, checkpoint} entries (it is not trained here)"
        )
        raise CnnscopeError(f"model {name!r}: its snapshots must be {how}")
    steps = [k if isinstance(k, int) else k["step"] for k in kept]
    if len(set(steps)) < len(steps):
        raise CnnscopeError(f"model {name!r} lists a snapshot step twice: {sorted(steps)}")


def _check_snapshot_steps(
    study: Study, name: str, composed: Callable[[str, tuple[str, ...]], dict[str, Any]]
) -> None:
    """A trained model's snapshot steps lie within its training."""
    train = composed("train", tuple(study.job_items("train", {"model": name})))["train"]
    late = [k for k in study.models[name]["snapshots"] if k > train["steps"]]
    if late:
        raise CnnscopeError(f"snapshots {late} lie beyond its training's {train['steps']} steps; drop them")


def _check_model(study: Study, name: str, spec: ModelSpec) -> None:
    """One model of the study: its layers, its weights source, and a head that fits the cue-conflict
    decision space."""
    m = study.models[name]
    if len(set(m["layers"])) < len(m["layers"]):
        raise CnnscopeError(f"model {name!r} lists a layer twice: {m['layers']}")
    if m.get("train") and spec.source != "builtin":
        raise CnnscopeError(f"model {name!r} has train: true but is not built-in")
    if spec.source == "builtin" and not m.get("train") and spec.checkpoint is None:
        raise CnnscopeError(
            f"model {name!r} is built-in with neither train: true nor a checkpoint; give it one of them"
        )
    check_layers(spec, [*m["layers"], study.cam_layer(name)], name)
    unknown = [layer for layer in m.get("tcav_layers", []) if layer not in m["layers"]]
    if unknown:
        raise CnnscopeError(
            f"model {name!r}: tcav_layers {unknown} are not among its layers {m['layers']} (TCAV is "
            "compared with each layer's Net2Vec and shown beside its dissection); add them to layers"
        )
    if name in study.cc_models():
        classes = (study.cc or {})["classes"]
        names = read_class_names(spec.classes) if spec.classes else None
        problem = head_problem(output_count(spec), CLASS_SETS[classes], names)
        if problem:
            raise CnnscopeError(
                f"model {name!r} cannot decide among cue_conflict classes {classes!r}: "
                f"{problem}; set cue_conflict: false on the model or change classes"
            )


def check_study(
    study: Study,
    composed: Callable[[str, tuple[str, ...]], dict[str, Any]],
    model_spec: Callable[[str], ModelSpec],
) -> None:
    """Fail before any job on a duplicate model or layer, an unknown one, an untrainable model, a head
    that cannot decide the cue conflict, an unknown ``steps.<stage>``, or any job setting that its
    step's schema refuses. ``composed(step, items)`` composes a job's config (the workflow's cached
    composition, which its rules reuse) and ``model_spec(name)`` a model's spec.
    """
    for m in study.config["models"]:
        if m.get("seeds") and "seed" in (m.get("overrides") or {}):
            raise CnnscopeError(f"model {m['name']!r} gives seeds and overrides.seed; keep one of them")
    names = [m["name"] for m in study.entries]
    names += [m["name"] for m in study.config["models"] if m.get("seeds")]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise CnnscopeError(
            f"model name(s) {', '.join(twice)} given twice (a model's seeds name its repeats "
            "<name>-seed<k>); every model needs its own name"
        )
    for name in study.config.get("steps") or {}:
        if name not in STAGES:
            raise CnnscopeError(
                f"steps.{name}: no such stage{did_you_mean(name, list(STAGES))}; the stages are "
                f"{', '.join(STAGES)}"
            )
    for n, m in study.models.items():  # before anything composes them (the job list does)
        check_model_entry(n, m["model"], m.get("overrides") or {})
        _check_snapshots(n, m)
    checks = [(f"models.{n}", lambda n=n: _check_model(study, n, model_spec(n))) for n in study.models]
    checks += [
        (f"models.{n}", lambda n=n: _check_snapshot_steps(study, n, composed))
        for n in study.trained()
        if study.models[n].get("snapshots")
    ]
    checks += [
        (f"steps.{step}", lambda step=step, wc=wc: composed(step, tuple(study.job_items(step, wc))))
        for step, wc in [*study.all_jobs(), ("report", {})]
    ]
    for where, check in checks:
        try:
            check()
        except (HydraException, OmegaConfBaseException) as e:
            why = f"{e}: {e.__cause__}" if e.__cause__ else str(e)
            raise CnnscopeError(f"{where}: {' '.join(why.split())}") from None
        except CnnscopeError as e:
            raise CnnscopeError(f"{where}: {e}") from None
