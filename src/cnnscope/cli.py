"""The ``cnnscope`` command: run the study DAG with the right profile, and say where the report is.

``cnnscope run [SNAKEMAKE ARGS...]`` runs Snakemake on the repository's ``Snakefile`` with the
default profile (extra arguments go to Snakemake, e.g. ``--configfile config/studies/x.yaml`` or
``-n``), then prints the path of ``results/report/index.html``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the study (default: config/config.yaml, offline)")
    run.add_argument("--profile", default="workflow/profiles/default")
    run.add_argument("--configfile", nargs="+", default=[], help="study config files (relative to here)")
    args, extra = parser.parse_known_args(argv)
    if not (REPO / "Snakefile").is_file():
        parser.error(f"no Snakefile in {REPO}; install cnnscope from a checkout with pip install -e")
    studies = [_study_file(parser, f) for f in args.configfile]
    cmd = [sys.executable, "-m", "snakemake", "--profile", args.profile, *extra]
    cmd += ["--configfile", *studies] if studies else []
    code = subprocess.call(cmd, cwd=REPO)
    report = REPO / "results" / "report" / "index.html"
    if code == 0 and "-n" not in extra and "--dry-run" not in extra:
        print(f"cnnscope: report at {report}")
    return code


def _study_file(parser: argparse.ArgumentParser, name: str) -> str:
    """A ``--configfile`` as an absolute path: relative to the working directory (or, failing that,
    to the checkout, as the README's examples are), since Snakemake runs in the checkout."""
    for base in (Path.cwd(), REPO):
        if (base / name).is_file():
            return str((base / name).resolve())
    parser.error(f"--configfile {name}: no such file here ({Path.cwd()}) or in {REPO}")


if __name__ == "__main__":
    sys.exit(main())
