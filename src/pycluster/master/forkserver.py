"""``--preload``: a fork server that imports the app once and forks workers.

The fork server is a fresh interpreter started by the master
(``python -m pycluster.master.forkserver TARGET``), single-threaded, that imports
the app's module, runs ``gc.collect(); gc.freeze()`` (so the imported objects
stay shared, copy-on-write, between workers) and then forks a worker for each
request from the master. A reload starts a new fork server with the new code
and retires the old one once the reload succeeded.

Each worker is forked through an intermediate process that exits at once,
so the worker is re-parented to the master (a child subreaper): the master
reaps it and watches it through a pidfd exactly as a spawned worker, and its
PR_SET_PDEATHSIG is tied to the master, not to the fork server.

The master and the fork server talk over a SOCK_SEQPACKET socketpair: one
JSON object per datagram, file descriptors (the worker's channel and stdio)
with SCM_RIGHTS. Master -> server: ``{"id": N, "env": {...}, "targets":
[fd numbers]}`` with one fd per target; server -> master: ``{"ready": pid}``,
``{"error": text}`` (the app failed to import; the server exits 1),
``{"id": N, "pid": P}`` or ``{"id": N, "fail": text}``.

The master never waits on the fork server: a request is sent without
blocking and answered through the loop, matched by its id (unique per fork
server). A request not answered within ``PYCLUSTER_FORK_TIMEOUT`` seconds
(5) fails that one start, and the fork server is judged stalled (the arbiter
kills it and starts a new one); a reply that comes after its request was
given up is discarded and the worker it names is killed and reaped.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

ENV_FD = "PYCLUSTER_FORKSERVER_FD"
MAX_MESSAGE = 1 << 20
_FORK_TIMEOUT = 5.0  # forking takes milliseconds: a fork server this late is stalled


def fork_timeout() -> float:
    try:
        value = float(os.environ.get("PYCLUSTER_FORK_TIMEOUT") or _FORK_TIMEOUT)
    except ValueError:
        return _FORK_TIMEOUT
    return value if value > 0 else _FORK_TIMEOUT


# -- the master's side ----------------------------------------------------------
class ForkServerError(OSError):
    pass


class ForkedProcess:
    """What the engine keeps of a worker started by the fork server (the
    parts of ``subprocess.Popen`` it uses)."""

    def __init__(self, pid: int, stdin: Any, stdout: Any, stderr: Any):
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None


class ForkServer:
    """Starts and talks to one fork server (the master's side)."""

    def __init__(self, target: str, *, env: dict[str, str], cwd: str | None = None,
                 credentials: dict[str, Any] | None = None):
        self.target = target
        self.env = env
        self.cwd = cwd
        self.credentials = credentials or {}
        self.sock: socket.socket | None = None
        self.proc: Any = None
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.ready = False
        self.error: str | None = None
        self.timeout = fork_timeout()
        self.stalled = False
        self.log: Callable[[str], None] = lambda line: None  # the master's log
        self.on_stall: Callable[[ForkServer], None] | None = None
        self._loop: Any = None
        self._next_id = 0
        self._pending: dict[int, Any] = {}  # request id -> future of the worker's pid
        self._abandoned: set[int] = set()  # request ids given up: their late workers are killed

    def start(self) -> None:
        import subprocess
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(self.env)
        env[ENV_FD] = str(theirs.fileno())
        env["PYCLUSTER_PPID"] = str(os.getpid())
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "pycluster.master.forkserver", self.target],
                                         env=env, cwd=self.cwd, pass_fds=[theirs.fileno()], close_fds=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, **self.credentials)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine
        self.pid = self.proc.pid
        self.pidfd = os.pidfd_open(self.pid)
        # The fork server is our child: the children it forks come back to us.
        _set_child_subreaper()

    async def wait_ready(self, timeout: float) -> str | None:
        """None once the app is imported, else why not (its error text)."""
        import asyncio
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        self.sock.setblocking(False)
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, MAX_MESSAGE), timeout)
        except asyncio.TimeoutError:
            self.error = f"the fork server did not import {self.target!r} within {timeout:g}s"
            return self.error
        except OSError as exc:
            self.error = f"the fork server failed: {exc}"
            return self.error
        if not data:
            self.error = "the fork server exited before it was ready"
            return self.error
        try:
            msg = json.loads(data)
        except ValueError:
            msg = {"error": f"the fork server sent {data[:80]!r}"}
        if "ready" not in msg:
            self.error = str(msg.get("error") or msg)
            return self.error
        self.ready = True
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def listen(self, loop: Any) -> None:
        """Once ready: read the replies on ``loop`` (the master never blocks on them)."""
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._read_replies)

    def launch(self, argv: list[str], *, env: dict[str, str], pass_fds: list[int] | tuple[int, ...] = (),
               stdin: Any = None, stdout: Any = None, stderr: Any = None, **_ignored: Any) -> Any:
        """An asynchronous Popen-like launcher (``Engine.fork_async``): send
        the fork server a request for a worker with this environment and
        these descriptors (``argv``, cwd and credentials are the fork
        server's own), without blocking; return an awaitable for the
        :class:`ForkedProcess`. Raises ForkServerError at once if the request
        cannot be sent."""
        import subprocess
        if not self.ready or self.sock is None or self._loop is None or not self.alive():
            raise ForkServerError(f"the fork server for {self.target!r} is not running"
                                  f"{' (stalled: a new one is starting)' if self.stalled else ''}")
        targets: list[int] = []
        fds: list[int] = []
        ours: list[int] = []   # pipe ends we keep
        theirs: list[int] = []  # pipe ends to close once sent
        files: list[Any] = [None, None, None]
        try:
            for index, spec in enumerate((stdin, stdout, stderr)):
                if spec is None:
                    continue
                if spec == subprocess.PIPE:
                    r, w = os.pipe()
                    mine, child = (w, r) if index == 0 else (r, w)
                    ours.append(mine)
                    theirs.append(child)
                    files[index] = os.fdopen(mine, "wb" if index == 0 else "rb")
                    targets.append(index)
                    fds.append(child)
                elif spec == subprocess.DEVNULL:
                    fd = os.open(os.devnull, os.O_RDWR)
                    theirs.append(fd)
                    targets.append(index)
                    fds.append(fd)
                elif isinstance(spec, int):
                    targets.append(index)
                    fds.append(spec)
            for fd in pass_fds:
                targets.append(fd)
                fds.append(fd)
            self._next_id += 1
            rid = self._next_id
            request = json.dumps({"id": rid, "env": env, "targets": targets}).encode()
            try:
                # Never blocks: a full socket means the fork server stopped reading.
                self.sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
                                  socket.MSG_DONTWAIT)
            except OSError as exc:
                raise ForkServerError(f"cannot send the fork server a request: {exc}") from None
            future = self._loop.create_future()
            self._pending[rid] = future
            self._loop.call_later(self.timeout, self._expire, rid)
        except BaseException:
            for f in files:
                if f is not None:
                    f.close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)  # in flight now (or never sent): the fork server has its own
        return self._wait(rid, future, files)

    async def _wait(self, rid: int, future: Any, files: list[Any]) -> ForkedProcess:
        try:
            pid = await future
        except BaseException:
            if self._pending.pop(rid, None) is not None:
                self._abandoned.add(rid)  # cancelled: the worker it may still fork is killed
            for f in files:
                if f is not None:
                    f.close()
            raise
        return ForkedProcess(pid, *files)

    def _expire(self, rid: int) -> None:
        future = self._pending.pop(rid, None)
        if future is None:
            return  # answered in time
        self._abandoned.add(rid)
        if not future.done():
            future.set_exception(ForkServerError(f"the fork server (pid {self.pid}) did not answer within"
                                                 f" {self.timeout:g}s"))
        if not self.stalled and self.sock is not None:
            self.stalled = True
            self.ready = False  # no new requests: they would wait as long
            if self.on_stall is not None:
                self.on_stall(self)

    def _read_replies(self) -> None:
        """Every reply waiting on the socket, matched to its request by id."""
        while self.sock is not None:
            try:
                data = self.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                data = b""
                self.log(f"fork server (pid {self.pid}): {exc}")
            if not data:
                self._closed()
                return
            self._on_reply(data)

    def _on_reply(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            rid = msg.get("id")
            pid = msg.get("pid")
            if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1):
                raise ValueError(f"pid {pid!r}")
        except (ValueError, AttributeError) as exc:
            self.log(f"fork server (pid {self.pid}) sent a bad reply ({exc}): {data[:120]!r}")
            return
        future = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if future is not None and not future.done():
            if pid is not None and _our_child(pid):
                future.set_result(pid)
            elif pid is not None:
                future.set_exception(ForkServerError(f"the fork server named pid {pid}, not a new child of"
                                                     f" the master"))
            else:
                future.set_exception(ForkServerError(f"the fork server could not fork: {msg.get('fail', msg)}"))
            return
        given_up = isinstance(rid, int) and rid in self._abandoned
        if given_up:
            self._abandoned.discard(rid)
        if pid is not None and given_up:
            self.log(f"fork server (pid {self.pid}): a late worker (pid {pid}) for a start given up; killing it")
            self._discard_worker(pid)
        else:
            self.log(f"fork server (pid {self.pid}): {msg.get('fail', msg)}")

    def _discard_worker(self, pid: int) -> None:
        """Kill a worker nobody waits for any more, and reap it."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return  # gone already (reaped as an orphan)
        if not _our_child(pid):
            os.close(pidfd)
            return  # never signal a process that is not ours
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass

        def reap() -> None:
            try:
                res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                res = None  # reaped by the orphan reaper first
            if res is not None and res.si_pid == 0:
                return
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
        self._loop.add_reader(pidfd, reap)

    def _closed(self) -> None:
        """EOF: the fork server exited; every request waiting fails now."""
        if self._loop is not None and self.sock is not None:
            try:
                self._loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
        pending, self._pending = self._pending, {}
        for rid, future in pending.items():
            self._abandoned.add(rid)
            if not future.done():
                future.set_exception(ForkServerError(f"the fork server (pid {self.pid}) exited"))

    def stop(self) -> None:
        """Retire the fork server: it exits 0 at the EOF (it ignores SIGTERM).
        Its workers are the master's children and stay."""
        self.ready = False
        if self.sock is not None:
            if self._loop is not None:
                self._read_replies()  # the replies already queued: late workers are killed, not lost
                self._closed()
            if self.sock is not None:
                self.sock.close()
                self.sock = None

    def reap(self) -> None:
        """After the pidfd said it exited: collect its status, close the pidfd."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _our_child(pid: int) -> bool:
    """Is ``pid`` a child of this process and none of the cluster's workers?
    The fork server names its new workers' pids (it runs the app's code: a
    stranger); the master only ever adopts or kills a new child of its own."""
    import pycluster
    if any(w.pid == pid for w in pycluster.workers.values()):
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rpartition(")")[2].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def _set_child_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


# -- the fork server ------------------------------------------------------------
def _send(sock: socket.socket, obj: dict) -> None:
    sock.send(json.dumps(obj).encode())


def serve(target: str) -> int:
    fd = int(os.environ[ENV_FD])  # kept: it tells pycluster's import this is a fork server
    master = int(os.environ.get("PYCLUSTER_PPID", "0") or 0)
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    # Ctrl-C and a stop that signals the whole process group (systemd, timeout)
    # are the master's to coordinate: the fork server leaves when the master
    # closes its socket (or dies: PDEATHSIG).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..child.runtime import _arm_parent_death
    _arm_parent_death(master)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import io
    err = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = err  # load() reports an import failure on stderr: send it to the master instead
    try:
        from ..child.entry import load
        fn = load(target)
    except SystemExit as exc:
        sys.stderr = real_stderr
        text = err.getvalue() or (str(exc.code) if exc.code not in (None, 0, 1) else "")
        _send(sock, {"error": text.rstrip() or f"cannot load {target!r}"})
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
            os._exit(70)
        time.sleep(0.0002)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a spawned worker starts
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _install_fds(fds, targets)
    os.environ.clear()
    os.environ.update(env)
    import pycluster

    from ..child import runtime as child
    from ..child.entry import call
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
