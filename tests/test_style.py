"""The code style the project holds itself to: ruff, snakefmt, and a clean ``snakemake --lint``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean():
    res = _run(str(BIN / "ruff"), "check", "src", "tests", "benchmarks")
    assert res.returncode == 0, res.stdout + res.stderr
    res = _run(str(BIN / "ruff"), "format", "--check", "src", "tests", "benchmarks")
    assert res.returncode == 0, res.stdout + res.stderr


def test_snakefmt_is_clean():
    res = _run(str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert res.returncode == 0, res.stdout + res.stderr


def test_snakemake_lint_is_clean():
    res = _run(sys.executable, "-m", "snakemake", "--lint")
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr, (
        res.stdout + res.stderr
    )


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    res = _run("bash", ".ci/run", "--print")
    assert res.returncode == 0 and res.stdout.strip() == block.strip()
    assert block.strip().endswith("pytest") and "pip install -e '.[test]'" in block


def _schema_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, sub in node.get("properties", {}).items():
        keys.append(f"{prefix}{name}")
        keys += _schema_keys(sub, f"{prefix}{name}.")
        keys += _schema_keys(sub.get("items", {}), f"{prefix}{name}[].")
    return keys


def test_config_readme_documents_every_study_key():
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", (REPO / "config/README.md").read_text(), re.M))
    assert documented == set(_schema_keys(schema)) | {"steps.<stage>"}


def test_config_readme_names_every_model_setting():
    import dataclasses

    from cnnscope.models.registry import ModelSpec

    row = next(
        line
        for line in (REPO / "config/README.md").read_text().splitlines()
        if line.startswith("| `models[].overrides`")
    )
    named = set(re.findall(r"`([a-z_]+)`", row.split("(", 1)[1].split(")", 1)[0]))
    assert named == {f.name for f in dataclasses.fields(ModelSpec)}
