"""The warm-start server (cnnscope.stepkit.warm): a step run in a forked child is the step a fresh
``python -m`` runs, in the job's folder, environment and streams, with its exit status; no server
(or another interpreter) means a fresh interpreter; a killed job leaves no step running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from cnnscope.stepkit.warm import ENV

# A step stand-in: it reports where and how it ran, then exits with the status it is given.
PROBE = """
import json, os, sys, time
print("out line")
print("err line", file=sys.stderr)
facts = {"cwd": os.getcwd(), "argv": sys.argv[1:], "env": os.environ.get("PROBE_VALUE"),
         "ppid": os.getppid(), "pid": os.getpid(), "warm": os.environ.get("CNNSCOPE_WARM")}
open("facts.json", "w").write(json.dumps(facts))
if sys.argv[1] == "sleep":
    time.sleep(60)
if sys.argv[1] == "raise":
    raise RuntimeError("a bug")
sys.exit(int(sys.argv[1]))
"""


def _wait(predicate, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    socket = folder / "socket"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnscope.stepkit.warm", "--serve", str(socket), str(os.getpid())], env=env
    )
    assert _wait(socket.exists), "the server did not open its socket"
    yield proc, socket
    proc.terminate()
    proc.wait(timeout=30)


def _job(work: Path, socket: Path | None, *args: str, python: str = sys.executable) -> subprocess.Popen:
    (work / "probe_step.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PROBE_VALUE": "from the job"}
    env.pop(ENV, None)
    if socket is not None:
        env[ENV] = str(socket)
    with open(work / "job.log", "w") as log:  # the job's log, as the rule's redirection opens it
        return subprocess.Popen(
            [python, "-m", "cnnscope.stepkit.warm", "probe_step", *args],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


# The environment's interpreter by another of its names (a venv's python and python3: the workflow's
# jobs run `python`, `cnnscope run` starts Snakemake with the entry point's `python3`).
OTHER_NAME = next(
    (str(p) for p in Path(sys.executable).parent.glob("python3*") if p.name != Path(sys.executable).name),
    sys.executable,
)


@pytest.mark.parametrize("python", [sys.executable, OTHER_NAME])
def test_a_step_runs_in_a_child_of_the_server_as_python_m_would(server, tmp_path, python):
    proc, socket = server
    job = _job(tmp_path, socket, "3", "x=1", python=python)
    assert job.wait(timeout=60) == 3  # the step's exit status
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["ppid"] == proc.pid  # forked by the server, not a fresh interpreter
    assert facts["cwd"] == str(tmp_path) and facts["argv"] == ["3", "x=1"]
    assert facts["env"] == "from the job" and facts["warm"] is None  # its own subprocesses start cold
    assert (tmp_path / "job.log").read_text().splitlines() == ["out line", "err line"]


def test_an_uncaught_exception_prints_its_traceback_and_fails(server, tmp_path):
    _, socket = server
    assert _job(tmp_path, socket, "raise").wait(timeout=60) == 1
    log = (tmp_path / "job.log").read_text()
    assert "Traceback" in log and "RuntimeError: a bug" in log


@pytest.mark.parametrize("socket", [None, "dead"])
def test_without_a_server_the_step_runs_in_a_fresh_interpreter(tmp_path, socket):
    job = _job(tmp_path, tmp_path / "no-such-socket" if socket else None, "0")
    assert job.wait(timeout=60) == 0
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["pid"] == job.pid  # the client became the step (exec)


def test_a_server_that_ends_before_starting_the_step_leaves_it_to_the_job(tmp_path):
    import socket
    import threading

    path = tmp_path / "socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def hang_up():  # takes the request, then ends without an answer
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    job = _job(tmp_path, path, "0")
    assert job.wait(timeout=60) == 0
    thread.join(timeout=10)
    listener.close()
    assert json.loads((tmp_path / "facts.json").read_text())["pid"] == job.pid  # it ran the step itself


def test_another_interpreter_or_import_path_runs_the_step_itself(server, tmp_path):
    _, socket = server
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "probe_step.py").write_text(PROBE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(tmp_path / "elsewhere")]),
        ENV: str(socket),
    }
    job = subprocess.run(
        [sys.executable, "-m", "cnnscope.stepkit.warm", "probe_step", "0"], cwd=tmp_path, env=env, timeout=60
    )
    assert job.returncode == 0
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["ppid"] != server[0].pid  # not the server's child: its import path differs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_job_leaves_no_step_running(server, tmp_path, sig):
    proc, socket = server
    job = _job(tmp_path, socket, "sleep")
    assert _wait((tmp_path / "facts.json").exists)
    step = json.loads((tmp_path / "facts.json").read_text())["pid"]
    assert step != job.pid and _alive(step)
    job.send_signal(sig)  # SIGTERM is passed on; after SIGKILL the step sees its client gone
    job.wait(timeout=30)
    assert _wait(lambda: not _alive(step), 10), "the step outlived its job"
    assert proc.poll() is None  # the server goes on


def test_the_server_ends_with_the_process_that_started_it(tmp_path):
    socket = tmp_path / "s" / "socket"
    socket.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time; "
            f"subprocess.Popen([sys.executable, '-m', 'cnnscope.stepkit.warm', '--serve', {str(socket)!r}, "
            "str(os.getpid())]); time.sleep(60)",
        ],
        env=env,
    )
    assert _wait(socket.exists)
    starter.kill()
    starter.wait()
    assert _wait(lambda: not socket.parent.exists(), 10)  # its socket and folder are gone with it
