"""The shared Hydra runner of every step: compose, validate, run, report errors without tracebacks."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import cnnscope.steps.schema  # noqa: F401  (registers the schemas)
from cnnscope.errors import CnnscopeError

log = logging.getLogger("cnnscope")


def config_dir() -> Path:
    """The Hydra config tree: ``$CNNSCOPE_CONFIG_DIR`` or the repository's ``config/``."""
    env = os.environ.get("CNNSCOPE_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "config"


def result_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a step's config that decides its result: all but where it writes, how it reports,
    its thread count and its checkpoint cadence (what resumed partial work must match)."""
    return {k: v for k, v in cfg.items() if k not in ("out", "progress", "threads", "checkpoint_s")}


def run_step(name: str, body: Callable[[dict[str, Any]], None]) -> None:
    """Run ``body`` on the resolved plain-dict config of step ``name``.

    A :class:`CnnscopeError` (bad input) is printed as one line and exits with status 2.
    """

    @hydra.main(config_path=str(config_dir()), config_name=name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        if "threads" in plain:
            torch.set_num_threads(max(1, int(plain["threads"])))
        try:
            body(plain)
        except CnnscopeError as e:
            log.error("%s failed: %s", name, e)
            sys.exit(2)

    _main()
