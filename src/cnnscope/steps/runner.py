"""The shared Hydra runner of every step: compose, validate, run, report errors without tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cnnscope.errors import CnnscopeError, disk_fault
from cnnscope.resources import CONFIG_DIR
from cnnscope.steps.schema import RUN_ONLY, validate

log = logging.getLogger("cnnscope")


def config_dir() -> Path:
    """The Hydra config tree: the checkout's ``config/``, or the installed package's."""
    return CONFIG_DIR


def result_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a step's config that decides its result (what resumed partial work must match): all
    but the settings of :data:`~cnnscope.steps.schema.RUN_ONLY`."""
    return {k: v for k, v in cfg.items() if k not in RUN_ONLY}


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A composed config as plain values (Enum settings as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def run_step(name: str, body: Callable[[dict[str, Any]], None]) -> None:
    """Run ``body`` on the resolved plain-dict config of step ``name``.

    A value out of its range, a :class:`CnnscopeError` (bad input) or a disk fault the user can fix
    (:func:`~cnnscope.errors.disk_fault`) is printed as one line and exits with status 2.
    """

    @hydra.main(config_path=str(config_dir()), config_name=name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            log.error(
                "%s failed: missing required setting(s) %s; give them as key=value", name, ", ".join(missing)
            )
            sys.exit(2)
        values = plain(cfg)
        try:
            validate(name, values)
            if "threads" in values:
                import torch  # only the steps that compute with it (download, prepare never do)

                torch.set_num_threads(values["threads"])
            body(values)
        except CnnscopeError as e:
            log.error("%s failed: %s", name, e)
            sys.exit(2)
        except OSError as e:
            line = disk_fault(e, f"a file under {values.get('out', 'its output')}")
            if line is None:
                raise
            log.error("%s failed: %s", name, line)
            sys.exit(2)

    _main()
