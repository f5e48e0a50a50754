"""The fork server process (``python -m pycluster.master.forkserver TARGET``).

It imports the app once, then forks a worker for each request from the
master, each through an intermediate process so that the worker is
re-parented to the master.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
from typing import Any

from ...errors import WORKER_BOOT_ERROR, WORKER_USAGE_ERROR
from ...ipc.messages import ENV_PPID, ENV_SERVE
from ._wire import ENV_FD, MAX_MESSAGE
from ._wire import send as _send


def serve(target: str) -> int:
    fd = int(os.environ[ENV_FD])  # kept: it tells pycluster's import this is a fork server
    master = int(os.environ.get(ENV_PPID, "0") or 0)
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    # Ctrl-C and a stop that signals the whole process group (systemd, timeout)
    # are the master's to coordinate: the fork server leaves when the master
    # closes its socket (or dies: PDEATHSIG).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ...child.process import arm_parent_death
    arm_parent_death(master)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import io
    err = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = err  # load() reports an import failure on stderr: send it to the master instead
    try:
        from ...child.entry import load, prepare
        from ...serve import selfrun
        selfrun.install()  # uvicorn.run() by the app drains as a served app does
        obj = load(target)
        fn = None if obj is None else prepare(obj, target)  # detection, and --factory's call, happen once here
    except SystemExit as exc:
        sys.stderr = real_stderr
        usage = exc.code == WORKER_USAGE_ERROR
        text = err.getvalue() or (str(exc.code) if exc.code not in (None, 0, 1) and not usage else "")
        _send(sock, {"error": text.rstrip() or f"cannot load {target!r}", "usage": usage})
        return 1
    finally:
        sys.stderr = real_stderr
    if fn is None:
        _send(sock, {"error": f"--preload needs a module:callable target, not the script {target!r}"})
        return 1
    import gc
    gc.collect()
    gc.freeze()  # everything imported so far stays out of the workers' collections: shared pages stay shared
    _send(sock, {"ready": os.getpid()})
    while True:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(64 * 4))
        except InterruptedError:
            continue
        if not data:
            return 0  # the master closed us: retired
        fds = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        try:
            request = json.loads(data)
            targets = [int(t) for t in request["targets"]]
            env = {str(k): str(v) for k, v in request["env"].items()}
            if len(targets) != len(fds):
                raise ValueError(f"{len(targets)} targets for {len(fds)} descriptors")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            for f in fds:
                os.close(f)
            _send(sock, {"id": None, "fail": f"bad request: {exc}"})
            continue
        pid = _fork_worker(sock, fn, target, master, list(fds), targets, env)
        for f in fds:
            os.close(f)
        if pid is None:
            _send(sock, {"id": request.get("id"), "fail": "fork failed"})
        else:
            _send(sock, {"id": request.get("id"), "pid": pid})


def _fork_worker(sock: socket.socket, fn: Any, target: str, master: int, fds: list[int],
                 targets: list[int], env: dict[str, str]) -> int | None:
    """Fork twice (the worker is re-parented to the master); return its pid."""
    r, w = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if middle == 0:  # the intermediate: fork the worker, say its pid, leave
        os.close(r)
        try:
            pid = os.fork()
        except OSError:
            os._exit(1)
        if pid == 0:
            os.close(w)
            _become_worker(sock, fn, target, master, fds, targets, env)  # never returns
        os.write(w, pid.to_bytes(4, "little"))
        os._exit(0)
    os.close(w)
    data = b""
    while len(data) < 4:
        chunk = os.read(r, 4 - len(data))
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(middle, 0)
    return int.from_bytes(data, "little") if len(data) == 4 else None


def _become_worker(sock: socket.socket, fn: Any, target: str, master: int, fds: list[int],
                   targets: list[int], env: dict[str, str]) -> None:
    """In the forked worker: take its descriptors and environment, boot
    pycluster's worker side, run the app, exit (as ``pycluster.child.entry``)."""
    import time
    sock.close()
    # Wait to be re-parented to the master (the intermediate exits at once).
    deadline = time.monotonic() + 5.0
    while os.getppid() != master:
        if time.monotonic() > deadline:
            os._exit(WORKER_BOOT_ERROR)
        time.sleep(0.0002)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a spawned worker starts
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _install_fds(fds, targets)
    os.environ.clear()
    os.environ.update(env)
    os.environ.pop(ENV_SERVE, None)  # read by the fork server already (the app was prepared there)
    import pycluster

    from ...child import runtime as child
    from ...child.entry import call
    pycluster._boot_forked()
    child.announce_online()
    sys.argv = [target]
    try:
        code = call(fn)
    finally:
        child.leaving()
    raise SystemExit(code)


def _install_fds(fds: list[int], targets: list[int]) -> None:
    """Put each received descriptor at the number the master asked for and
    close every other one (what Popen's pass_fds and close_fds do)."""
    import fcntl
    floor = max([*targets, *fds, 2]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
    keep = set(high)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor of the directory listing itself
    for fd, t in zip(high, targets):
        os.dup2(fd, t, inheritable=t < 3)
    for fd in high:
        if fd not in targets:
            os.close(fd)


def main() -> int:
    if len(sys.argv) != 2 or ENV_FD not in os.environ:
        print("usage: python -m pycluster.master.forkserver TARGET (started by pycluster run --preload)",
              file=sys.stderr)
        return 2
    return serve(sys.argv[1])


if __name__ == "__main__":
    sys.exit(main())
