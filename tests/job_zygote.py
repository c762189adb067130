"""Snakemake's Python jobs in the tests, run as forks of a process that has imported torch.

Every `script:` job of the workflow starts a Python process that spends 2-3 s of CPU importing
torch, timm (and through it torchvision and torch._dynamo), pytorch-metric-learning (scipy,
scikit-learn), ONNX Runtime and FAISS before it does a second of work; the workflow tests run
over a hundred such jobs. Here a zygote process makes those imports once, and each job is a
fork of it that runs the job's script file as `python SCRIPT` would: the script's folder first
on `sys.path`, the job's working directory, environment, arguments and standard streams, its
exit status. The zygote imports no module of the workflow's package, so a job imports `effocr`
from its own workflow copy (edited code included), as a new process does.

Wiring: `snakemake_forks`' server sets Snakemake's `sys.executable` (which it runs script jobs
with) to `shim()`, a shell script that sends a job's command line to the zygote when it is
`python .../.snakemake/scripts/*.py` and `exec`s the real interpreter for anything else.

What a fork cannot give a job, and why it does not matter here:
- its own str hash seed (PYTHONHASHSEED is the zygote's): no test compares two workflow runs'
  outputs for determinism (test_synth_lines does, in-process);
- libraries' import-time reads of the environment (OMP_NUM_THREADS): the zygote starts with
  the tests' one-thread environment, and the jobs set their thread counts themselves.
`EFFOCR_TEST_JOB_ZYGOTE=0` turns it off (every job a new process again).

Run as `python job_zygote.py serve SOCKET` (the zygote) or `python -S -E job_zygote.py client
SOCKET SCRIPT...` (the shim's client, standard library only).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# Third-party modules the workflow's scripts import, directly or through effocr.
PRELOAD = (
    "numpy",
    "PIL.Image",
    "yaml",
    "jsonschema",
    "torch",
    "torch.nn.functional",
    "torch.optim",
    "torch._dynamo",  # imported on the first optimizer call anyway
    "torchvision",
    "timm",
    "pytorch_metric_learning.losses",
    "pytorch_metric_learning.samplers",
    "onnx",
    "onnxruntime",
    "faiss",
    "matplotlib.pyplot",
    "snakemake.script",
)
ENABLE = "EFFOCR_TEST_JOB_ZYGOTE"


def enabled(env: dict[str, str]) -> bool:
    """Whether a run with environment `env` sends its jobs to the zygote."""
    return env.get(ENABLE, "1") != "0"


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    """`message`, framed for `_recv`; `fds` go with its first bytes."""
    body = json.dumps(message).encode()
    data = struct.pack("!I", len(body)) + body
    sent = socket.send_fds(sock, [data], fds) if fds else 0
    sock.sendall(data[sent:])


def _recv(sock: socket.socket, data: bytes = b"") -> dict | None:
    """The next `_send` message (its first bytes may be in `data`), or None when the peer is
    gone before it is whole. Reads no further than the message: the next one stays queued."""
    while True:
        need = 4 if len(data) < 4 else 4 + struct.unpack("!I", data[:4])[0]
        if len(data) >= need:
            return json.loads(data[4:need])
        chunk = sock.recv(need - len(data))
        if not chunk:
            return None
        data += chunk


def exit_status(exc: SystemExit) -> int:
    """The status an interpreter ends with on `exc` (a message code is printed, status 1)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


# -- the zygote -------------------------------------------------------------------------


def serve(path: str) -> None:
    del sys.path[0]  # this file's folder: each job puts its script's folder first
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    assert "effocr" not in sys.modules, "the zygote must not import the workflow's package"
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # jobs report their own status; no zombies
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _job(conn)  # never returns
        conn.close()


def _job(conn: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)  # the job and what it starts, apart from the zygote
        # The descriptors come with the request's first bytes; a large one continues after.
        first, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        req = _recv(conn, first)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        _send(conn, {"pid": os.getpid()})
        _watch(conn)
        script = req["argv"][0]
        sys.argv = list(req["argv"])
        # As a new interpreter's: the script's folder, then PYTHONPATH's entries, then the
        # zygote's own path (started without PYTHONPATH: the standard library, site-packages).
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:0] = [os.path.dirname(os.path.abspath(script)), *map(os.path.abspath, extra)]
        import runpy

        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exit_status(exc)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        try:
            atexit._run_exitfuncs()  # as an interpreter that ends does (logging's flush)
            sys.stdout.flush()
            sys.stderr.flush()
            _send(conn, {"returncode": code})
        finally:
            os._exit(code)


def _watch(conn: socket.socket) -> None:
    """End the job when its client is gone (killed by a timeout): a new process would have
    been in the killed process group."""
    import threading

    def wait() -> None:
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=wait, daemon=True).start()


# -- the client (the shim runs it with `python -S -E`) -----------------------------------


def client(path: str, argv: list[str]) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    _send(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
    pid = _recv(sock)["pid"]

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    reply = _recv(sock)
    if reply is None:  # the job died without a word (a signal, a crash)
        return 1
    return int(reply["returncode"])


# -- the shim ----------------------------------------------------------------------------

SHIM = """#!/bin/sh
# Written by tests/job_zygote.py: Snakemake's script jobs go to the zygote at {sock}.
case "$1" in
  */.snakemake/scripts/*.py)
    if [ $# -eq 1 ] && [ -S {sock} ]; then exec {python} -S -E {client} client {sock} "$@"; fi ;;
esac
exec {python} "$@"
"""


def write_shim(folder: str, sock: str) -> str:
    """A `python` for Snakemake's `sys.executable` (see the module's docstring)."""
    shim = os.path.join(folder, "python")
    with open(shim, "w", encoding="utf-8") as f:
        f.write(SHIM.format(sock=sock, python=sys.executable, client=os.path.abspath(__file__)))
    os.chmod(shim, 0o755)
    return shim


class Zygote:
    """A zygote process and its shim, started without PYTHONPATH (each job applies its own)
    and in the tests' one-thread environment."""

    def __init__(self):
        import subprocess
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="zyg")
        self.sock = os.path.join(self.folder, "s")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", self.sock],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.folder,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the job zygote did not start ({self.proc.wait()})")
        self.shim = write_shim(self.folder, self.sock)

    def close(self) -> None:
        import shutil

        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[2], sys.argv[3:]))
