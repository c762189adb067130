"""Snakemake command lines run as forks of one process that has imported Snakemake already.

The workflow tests run Snakemake dozens of times, mostly dry runs; each `python -m snakemake`
first spends about a second of CPU importing Snakemake (pandas, SQLAlchemy, its plugins).
`run` hands the command line to a server process that made that import once: a fork of it
changes to the run's directory, takes the run's environment and arguments and calls
Snakemake's `main`, as `python -m snakemake` does. The workflow itself is not imported by the
server, so each run reads its Snakefile and imports `effocr` from its own directory (a test's
copy of the workflow, edited package code included), as a new process would.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import job_zygote
from job_zygote import Zygote

SERVER = r"""
import json, os, sys, traceback

del sys.path[0]  # `-c`'s current directory: each run puts its own first
sys.path.insert(0, sys.argv[1])  # tests/, for job_zygote's exit_status alone
from job_zygote import exit_status
del sys.path[0]
import snakemake.cli
import snakemake.workflow

assert "effocr" not in sys.modules, "the server must not import the workflow's package"
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)  # a timeout kills the run and the jobs it started
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            sys.stdin = open(os.devnull)
            sys.path.insert(0, os.getcwd())  # as `python -m snakemake` started here
            sys.argv = [os.path.join(os.path.dirname(snakemake.cli.__file__), "__main__.py")]
            sys.argv += req["args"]
            # The one import-time record of the directory (Snakemake's log header shows it).
            snakemake.workflow.Workflow._rundir = os.getcwd()
            if req.get("executable"):  # what script jobs run with (tests/job_zygote.py)
                sys.executable = req["executable"]
            try:
                snakemake.cli.main(req["args"])
                code = 0
            except SystemExit as exc:  # as the interpreter ends on it
                code = exit_status(exc)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class _Server:
    """A server process; one per PYTHONPATH (its imports depend on it)."""

    def __init__(self, pythonpath: str | None):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        # No thread pools in a process that forks (NumPy's BLAS, imported with pandas).
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(Path(__file__).resolve().parent)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )

    def send(self, request: dict) -> None:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float | None) -> dict | None:
        """The server's next line, or None after `timeout` seconds without one."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Snakemake server stopped ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_servers: dict[str | None, _Server] = {}
_zygote: list[Zygote] = []  # one per process, started by the first run


@atexit.register
def _close_all() -> None:
    while _servers:
        _servers.popitem()[1].close()
    while _zygote:
        _zygote.pop().close()


def _job_python(env: dict[str, str]) -> str | None:
    """The `sys.executable` of a run's script jobs: the zygote's shim (None: the real one)."""
    if not job_zygote.enabled(env):
        return None
    if not _zygote:
        _zygote.append(Zygote())
    return _zygote[0].shim


def run(
    cmd: list[str],
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)`
    for ``cmd = [sys.executable, "-m", "snakemake", *args]``, run on a fork of the server."""
    if cmd[:3] != [sys.executable, "-m", "snakemake"]:
        raise ValueError(f"not a `python -m snakemake` command line: {cmd[:3]}")
    env = dict(os.environ if env is None else env)
    pythonpath = env.get("PYTHONPATH")
    if pythonpath not in _servers:
        _servers[pythonpath] = _Server(pythonpath)
    server = _servers[pythonpath]
    pid = None
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        try:
            server.send(
                {
                    "args": [str(a) for a in cmd[3:]],
                    "cwd": str(Path(cwd or os.getcwd()).resolve()),
                    "env": env,
                    "stdout": str(out),
                    "stderr": str(err),
                    "executable": _job_python(env),
                }
            )
            pid = server.reply(60)["pid"]
            reply = server.reply(timeout)
            if reply is None:
                raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
        except BaseException:
            # A run cut short (a timeout, pytest-timeout, Ctrl-C): stop it and its jobs, and
            # start a new server for the next run rather than read this run's late replies.
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            del _servers[pythonpath]
            server.proc.kill()
            server.proc.wait()
            raise
        return subprocess.CompletedProcess(
            cmd, reply["returncode"], out.read_text(encoding="utf-8"), err.read_text("utf-8")
        )
