"""The master's control server: a unix socket on the master's loop.

The socket is created 0600 (umask around bind: no chmod window), in a
directory created 0700 when missing (an existing one is never chmodded);
a peer whose uid (SO_PEERCRED) is neither ours nor root's is refused.
Requests are bounded in size, read with a timeout, and the number of
clients at once is capped. A leftover socket is replaced (claim.py) only
after a connect() proves nobody listens on it, under a lock.

Nothing a client sends or a command does escapes a connection's task: a bug
becomes an ``internal`` error reply, its traceback goes to the master's log
(``pycluster logs``, ``--log-file``), and the master keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from . import commands, protocol
from .claim import ControlSocketInUse, claim, claim_with_identity, probe, release  # noqa: F401 (re-exported)

MAX_CLIENTS = 32
WRITE_TIMEOUT = 10.0  # seconds a reply may wait for the client to read it
READ_TIMEOUT = 10.0
_CRED = struct.Struct("3i")


class ControlServer:
    def __init__(self, arbiter, path: str):
        self.arbiter = arbiter
        self.path = path
        self.server: asyncio.base_events.Server | None = None
        self.clients: set[asyncio.Task] = set()
        self._readers: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        self._uid = os.geteuid()
        self._identity: tuple[int, int] | None = None  # of the socket file we took (release() checks it)

    async def start(self) -> None:
        sock, self._identity = claim_with_identity(self.path)
        self.server = await asyncio.start_unix_server(self._client, sock=sock,
                                                      limit=protocol.MAX_REQUEST + 1)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.clients):
            task.cancel()
        if self._identity is not None:
            release(self.path, self._identity)  # only our own socket: another master may own the name now
            self._identity = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a client callback runs in its own task
        sock = writer.get_extra_info("socket")
        try:
            if len(self.clients) >= MAX_CLIENTS:
                writer.write(protocol.error("busy", f"too many control clients (max {MAX_CLIENTS})"))
                return
            self.clients.add(task)
            peer = self._peer(sock)
            if peer is None or peer[1] not in (self._uid, 0):
                who = f"pid {peer[0]}, uid {peer[1]}" if peer else "unknown peer"
                self.arbiter.logs.master(f"control socket: refused a client ({who}): not the master's user or root")
                writer.write(protocol.error("forbidden", "permission denied: not the master's user or root"))
                return
            self._readers[writer] = reader
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001 - habit 14: the client is told, the master keeps serving
            message = commands.log_internal(self.arbiter, "the control server", exc)
            if not writer.is_closing():
                writer.write(protocol.error("internal", message))
        finally:
            self.clients.discard(task)
            self._readers.pop(writer, None)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass
            writer.close()

    def watch_hangup(self, writer: asyncio.StreamWriter, on_hangup) -> asyncio.Task | None:
        """Call ``on_hangup()`` once the client on ``writer``'s connection hangs up
        (EOF or an error): for a command that streams (``logs -f``), which would
        otherwise only learn of it at its next write, holding a client slot till
        then. What the client sends meanwhile is read and discarded: a streaming
        connection takes no further requests. Cancel the task when done."""
        reader = self._readers.get(writer)
        if reader is None:
            return None

        async def watch() -> None:
            try:
                while await reader.read(65536):
                    pass
            except (ConnectionError, OSError):
                pass
            on_hangup()

        keep = getattr(self.arbiter, "keep_task", None)  # every task the master starts is kept (habit 14)
        return keep(watch(), "logs -f hang-up watch") if keep is not None else asyncio.ensure_future(watch())

    @staticmethod
    def _peer(sock: socket.socket) -> tuple[int, int] | None:
        """(pid, uid) of the client, from SO_PEERCRED."""
        try:
            pid, uid, _gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        except OSError:
            return None
        return pid, uid

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            except asyncio.TimeoutError:
                writer.write(protocol.error("timeout", f"no complete request within {READ_TIMEOUT:g}s"))
                return
            except (ValueError, asyncio.LimitOverrunError):
                writer.write(protocol.error("too_large",
                                            f"request over the {protocol.MAX_REQUEST}-byte limit"))
                return
            if not line:
                return
            if not line.endswith(b"\n"):
                writer.write(protocol.error("bad_request", "truncated request (no newline before EOF)"))
                return
            try:
                request = protocol.decode_request(line.rstrip(b"\r\n"))
            except protocol.RequestError as exc:
                writer.write(protocol.error(exc.code, exc.message))
                return
            keep_open = await commands.serve_request(self.arbiter, request, writer)
            try:
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            except asyncio.TimeoutError:
                return  # a client that does not read its replies loses its connection
            if not keep_open:
                return
