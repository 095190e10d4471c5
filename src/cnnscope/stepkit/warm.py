"""Warm start for the steps of a local run: one process imports the heavy libraries once, and each
step runs in a child forked from it instead of a fresh interpreter.

Why: most of the default study's jobs take 4–7 s, and 3–5 s of that is importing torch, pandas and
Hydra (README, "CPU cores and start-up"). A forked child has them already, so such a job costs its
work. What a step computes does not change: the child runs the step module as ``python -m`` would
(``runpy``, ``__main__``), in the job's folder and environment, with its standard streams; the
server imports no module of cnnscope (a step always runs the code on disk) and runs no torch
operation (a child that inherited a started thread pool could hang).

``python -m cnnscope.stepkit.warm <module> <args...>`` is how the workflow runs a step: it asks the
server named by :data:`ENV` to run it and exits with the step's status, passing on SIGINT, SIGTERM
and SIGHUP; without a server (no :data:`ENV`, or nobody answers) it becomes
``python -m <module> <args...>`` itself. The server (``python -m cnnscope.stepkit.warm --serve
PATH PID``) is started by the workflow (process ``PID``) for a local run only, and ends with it.
A child whose client is gone (killed) is ended too, so no step outlives the job Snakemake thinks of.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from typing import NoReturn

ENV = "CNNSCOPE_WARM"  # the server's socket, in the environment of the jobs of a local run
PRELOAD = ("numpy", "torch", "pandas", "omegaconf", "hydra", "PIL.Image")  # what nearly every step imports
_LEN = struct.Struct("!I")
_PID = struct.Struct("!q")
_STATUS = struct.Struct("!i")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# --- the client: what a job runs --------------------------------------------------------------------
def client(argv: list[str]) -> int:
    """Run ``python -m argv[0] argv[1:]`` in a child of the server, or in this process without one."""
    path = os.environ.get(ENV)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError("no server")
        conn.connect(path)
    except OSError:
        conn.close()
        _run_here(argv)
    request = json.dumps(
        {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "python": _interpreter()}
    ).encode()
    fds = array.array("i", [0, 1, 2])
    conn.sendmsg([_LEN.pack(len(request)), request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    try:
        (pid,) = _PID.unpack(_recv_exact(conn, _PID.size))
    except EOFError:  # the server ended before it started the step: nothing ran, so run it here
        pid = 0
    if pid == 0:  # or another interpreter or import path than the server's (e.g. a conda env)
        conn.close()
        _run_here(argv)
    for sig in _FORWARDED:
        signal.signal(sig, lambda s, frame, pid=pid: _pass_on(pid, s))
    try:
        (status,) = _STATUS.unpack(_recv_exact(conn, _STATUS.size))
    except EOFError:  # the child ended without a status: killed by a signal, e.g. out of memory
        print(f"cnnscope: the step's process {pid} ended without an exit status (killed)", file=sys.stderr)
        return 1
    return status


def _run_here(argv: list[str]) -> NoReturn:
    """Become ``python -m argv[0] argv[1:]`` in a fresh interpreter (this process, exec'd)."""
    os.execv(sys.executable, [sys.executable, "-m", *argv])


def _pass_on(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the step may have ended a moment ago
        os.kill(pid, sig)


# --- the server -------------------------------------------------------------------------------------
def _interpreter() -> list[str]:
    """What decides which code a step imports: the Python and environment (a venv's ``python`` and
    ``python3`` are one) and the import path (without the working folder, which the child sets)."""
    return [sys.version, sys.prefix, *sys.path[1:]]


def serve(path: str, parent: int) -> None:
    """Import :data:`PRELOAD`, then fork a child for every request on the socket ``path`` until the
    process ``parent`` that started the server is gone (it is no longer this one's parent)."""
    import importlib

    own = _interpreter()  # before any import can touch the path
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children report their own status; none to reap
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    try:
        listener.listen(64)
        listener.settimeout(1.0)
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            try:
                request, fds = _receive(conn)
            except (EOFError, OSError, ValueError):
                conn.close()
                continue
            if request.get("python") != own:
                with contextlib.suppress(OSError):  # a client already gone must not end the server
                    conn.sendall(_PID.pack(0))  # the client runs the step itself
            elif os.fork() == 0:
                listener.close()
                _child(conn, request, fds)  # never returns
            conn.close()
            for fd in fds:
                os.close(fd)
    finally:
        listener.close()
        os.unlink(path)
        os.rmdir(os.path.dirname(path))  # the server's own folder (the workflow's start_warm made it)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    head, ancillary, _, _ = conn.recvmsg(_LEN.size, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if len(head) < _LEN.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request needs its length and three file descriptors")
    (n,) = _LEN.unpack(head)
    return json.loads(_recv_exact(conn, n)), list(fds)


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Become the job's step: its streams, folder, environment and command line; report its status."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a step's own subprocesses must be waitable
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # a step's own subprocesses start cold
        module, *args = request["argv"]
        sys.argv = [module, *args]
        sys.path[0] = request["cwd"]  # as ``python -m`` puts the working folder first
        conn.sendall(_PID.pack(os.getpid()))
        threading.Thread(target=_end_with_client, args=(conn,), daemon=True).start()
        status = _run_module(module)
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(_STATUS.pack(status))
        finally:
            os._exit(status)


def _run_module(module: str) -> int:
    import runpy

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        return 1
    return 0


def _end_with_client(conn: socket.socket) -> None:
    """The client never sends after its request: a read returns only when it is gone."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"] and len(sys.argv) == 4:
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 2:
        sys.exit(client(sys.argv[1:]))
    else:
        sys.exit("usage: python -m cnnscope.stepkit.warm MODULE [ARGS...] | --serve SOCKET PARENT_PID")
