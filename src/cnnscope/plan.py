"""The workflow's plan of a study, kept on disk so that a DAG parse that changed nothing imports neither
torch nor Hydra.

Building the DAG needs, per job, its composed step config (tracked params: a changed setting reruns the
job) and, per model, its composed spec (which files loading it reads, whether its weights are fetched);
and the study is checked once (every job's settings against its schema, every model's layers and head
on its skeleton). All of that is a pure function of the study config, the Hydra config tree, the
cnnscope code, the installed model and config libraries, and the files a model entry names (its own
module's folder, checkpoint, class names). So it is computed once and stored under a key made of the
config, those libraries' versions, and the size and modification time of each of those files (a
``stat`` each). Any edit changes the key, and the plan is built again, with the check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import xxhash

from cnnscope.io import atomic_file

PREFIX = "plan-"
# Packages whose version can change what the plan holds (a model's layers, how configs compose).
PACKAGES = ("torch", "torchvision", "timm", "hydra-core", "omegaconf")


def _files(root: Path, suffixes: tuple[str, ...]) -> Iterable[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        yield from (Path(folder) / n for n in sorted(names) if n.endswith(suffixes))


def key(config: dict[str, Any], code: Path, configs: Path, named: Iterable[str]) -> str:
    """The plan's identity: the study config, the versions of :data:`PACKAGES`, and the size and
    modification time of every cnnscope source file, every file of the config tree, and each path a
    model entry names (``named``; for a folder, its Python files), or its absence."""
    h = xxhash.xxh3_128()
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for package in PACKAGES:
        try:
            h.update(f"{package}={metadata.version(package)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package} absent\n".encode())
    paths = [*_files(code, (".py",)), *_files(configs, (".yaml", ".yml"))]
    for name in named:
        p = Path(name)
        paths += list(_files(p, (".py",))) if p.is_dir() else [p]
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def cached(folder: Path, plan_key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The plan stored under ``plan_key`` in ``folder``, else ``build()``'s, stored there (replacing
    the plans of earlier keys: only the latest is kept). A plan that cannot be read is built again; one
    that cannot be stored (a read-only folder) is used all the same."""
    path = folder / f"{PREFIX}{plan_key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    plan = build()
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(plan))
        for old in folder.glob(f"{PREFIX}*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only study folder: the plan is simply not kept
    return plan
