"""The master's side of a ``--preload`` fork server: :class:`ForkServer`.

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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from ...ipc.messages import ENV_PPID
from ._wire import ENV_FD, MAX_MESSAGE, fork_timeout

if TYPE_CHECKING:
    import asyncio  # imported when used: the master forks its first workers before it imports asyncio
    import subprocess

class ForkServerError(OSError):
    pass


class ForkedProcess:
    """What the engine keeps of a worker started by the fork server (the
    parts of ``subprocess.Popen`` it uses)."""

    def __init__(self, pid: int, stdin: BinaryIO | None, stdout: BinaryIO | None, stderr: BinaryIO | None):
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
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.ready = False
        self.error: str | None = None
        self.usage_error = False  # the target is no app pycluster can run (the error is one line)
        self.timeout = fork_timeout()
        self.stalled = False
        self.log: Callable[[str], None] = lambda line: None  # the master's log
        self.on_stall: Callable[[ForkServer], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[int]] = {}  # request id -> future of the worker's pid
        self._abandoned: set[int] = set()  # request ids given up: their late workers are killed

    def start(self) -> None:
        import subprocess
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(self.env)
        env[ENV_FD] = str(theirs.fileno())
        env[ENV_PPID] = str(os.getpid())
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
            self.usage_error = bool(msg.get("usage"))
            return self.error
        self.ready = True
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Once ready: read the replies on ``loop`` (the master never blocks on them)."""
        assert self.sock is not None, "listen() after start()"
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._read_replies)

    def launch(self, argv: list[str], *, env: dict[str, str], pass_fds: list[int] | tuple[int, ...] = (),
               stdin: Any = None, stdout: Any = None, stderr: Any = None,
               **_ignored: Any) -> Awaitable[ForkedProcess]:
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
        files: list[BinaryIO | None] = [None, None, None]
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

    async def _wait(self, rid: int, future: asyncio.Future[int], files: list[BinaryIO | None]) -> ForkedProcess:
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
        loop = self._loop
        if loop is None:
            return  # replies are only read once listen() gave us the loop
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
            loop.remove_reader(pidfd)
            os.close(pidfd)
        loop.add_reader(pidfd, reap)

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
