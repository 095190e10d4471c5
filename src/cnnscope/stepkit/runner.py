"""The shared Hydra runner of every step: compose, validate, run, report errors without tracebacks;
and :class:`Output`, the skeleton every step's artifact is written through."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig, OmegaConf

from cnnscope.artifacts import CONFIG_FILE
from cnnscope.errors import CnnscopeError, disk_fault
from cnnscope.io import atomic_dir, resumable_dir, verify, write_yaml
from cnnscope.resources import CONFIG_DIR
from cnnscope.stepkit.schema import RUN_ONLY, Step, step_of, validate

log = logging.getLogger("cnnscope")
C = TypeVar("C", bound=Step)


def config_dir() -> Path:
    """The Hydra config tree: the checkout's ``config/``, or the installed package's."""
    return CONFIG_DIR


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A composed config as plain values (Enum settings as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def values(cfg: Step) -> dict[str, Any]:
    """A step's typed config as plain values: what its ``config.yaml`` holds."""
    return plain(OmegaConf.structured(cfg))


def result_config(cfg: Step) -> dict[str, Any]:
    """The part of a step's config that decides its result (what resumed partial work must match): all
    but the settings of :data:`~cnnscope.stepkit.schema.RUN_ONLY`."""
    return {k: v for k, v in values(cfg).items() if k not in RUN_ONLY}


class Output:
    """The skeleton every step's artifact goes through: its inputs verified (:meth:`verify`), the
    identity resumed work must match (the result config, the inputs' digests and whatever else
    :meth:`identify` adds), the artifact written atomically, or resumably, with ``config.yaml``
    beside it (:meth:`write`), and one summary line (:meth:`done`)."""

    def __init__(self, cfg: Step) -> None:
        self.cfg, self.step = cfg, step_of(cfg)
        self.identity: dict[str, Any] = {"config": result_config(cfg)}
        self.resumed = False

    def verify(self, **inputs: str) -> None:
        """Verify each input artifact, ``setting=producing step``, and make its digest part of the
        identity (a setting left ``None`` is skipped)."""
        for setting, step in inputs.items():
            path = getattr(self.cfg, setting)
            if path is not None:
                self.identity[setting] = verify(path, step)

    def identify(self, **facts: Any) -> None:
        """Further facts the result depends on (the weights' digest, the device, ...)."""
        self.identity.update(facts)

    @contextmanager
    def write(self, resumable: bool = False, config_file: str = CONFIG_FILE) -> Iterator[Path]:
        """Yield the work directory that becomes the artifact ``out`` when the block finishes, with
        the config beside it (``config_file``). ``resumable``: the work survives a crash and a rerun
        with the same identity continues in it (:attr:`resumed`)."""
        if resumable:
            with resumable_dir(self.cfg.out, self.identity) as (tmp, self.resumed):
                if self.resumed:
                    log.info("%s: continuing the work a killed run left in %s", self.step, tmp)
                yield tmp
                write_yaml(tmp / config_file, values(self.cfg))
        else:
            with atomic_dir(self.cfg.out) as tmp:
                yield tmp
                write_yaml(tmp / config_file, values(self.cfg))

    def done(self, message: str, *args: Any) -> None:
        """The step's one summary line: ``<step>: <message> -> <out>``."""
        log.info(f"%s: {message} -> %s", self.step, *args, self.cfg.out)


def run_step(name: str, body: Callable[[C], None]) -> None:
    """Run ``body`` on the composed, validated, typed config of step ``name``.

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
        out = cfg.get("out", "its output")
        try:
            validate(name, plain(cfg))
            typed = OmegaConf.to_object(cfg)
            if hasattr(typed, "threads"):
                import torch  # only the steps that compute with it (download, prepare never do)

                torch.set_num_threads(typed.threads)
            body(typed)
        except CnnscopeError as e:
            log.error("%s failed: %s", name, e)
            sys.exit(2)
        except OSError as e:
            line = disk_fault(e, f"a file under {out}")
            if line is None:
                raise
            log.error("%s failed: %s", name, line)
            sys.exit(2)

    _main()
