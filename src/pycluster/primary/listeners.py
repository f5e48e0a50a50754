"""The primary's listener registry: one handle per address, shared by the
workers that bind it, plus the primary's own listeners (``--bind``).

The scheduling policy picks a handle class in one place, :data:`POLICIES`:
adding a policy is one entry there plus one module under ``handles/`` (and
the worker side's binding for the reply's ``mode``).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import TYPE_CHECKING, Any

from ..core import sockets as _sockets
from ..core.common import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR, Record
from ..core.worker import Address
from ..errors import ClusterError
from .handles import Handle, ReusePortHandle, RoundRobinHandle, SharedHandle
from .settings import DEFAULT_TUNING, Tuning
from .spawn import process_credentials

if TYPE_CHECKING:
    import asyncio

    from .worker import PrimaryWorker


MAX_LISTENERS_PER_WORKER = 256  # listeners one worker may hold (each costs the primary descriptors)


class Policy(Record):
    """The handle classes of a scheduling policy: ``inet`` for a TCP address
    the primary binds itself, ``local`` for a unix socket or an inherited
    descriptor (``--bind fd://N``). Datagram sockets are always shared (the
    kernel gives each datagram to one reader), whatever the policy."""

    __slots__ = ("inet", "local")
    inet: type[Handle]
    local: type[Handle]


POLICIES: dict[int, Policy] = {
    SCHED_RR: Policy(inet=RoundRobinHandle, local=RoundRobinHandle),
    SCHED_NONE: Policy(inet=SharedHandle, local=SharedHandle),
    # Workers cannot each bind a unix path or an inherited fd: those are shared.
    SCHED_REUSEPORT: Policy(inet=ReusePortHandle, local=SharedHandle),
}


def handle_class(policy: int, *, stream: bool, inet: bool) -> type[Handle]:
    """The strategy for a listener: chosen once, when it is created."""
    if not stream:
        return SharedHandle
    entry = POLICIES[policy]
    return entry.inet if inet else entry.local


def handle_key(msg: dict[str, Any]) -> str:
    """Node's handle key: address:port:addressType:fd:index."""
    return "{}:{}:{}:{}:{}".format(msg.get("address"), msg.get("port"), msg.get("address_type"),
                                   msg.get("fd"), msg.get("index", 0))


def address_key(address: Address) -> str | None:
    """The key of a worker's bind of ``address`` (a bound socket's real
    address): the same host string, port and family only. A specific address
    is not matched to a wildcard listener on its port, nor an IPv4 bind to a
    dual-stack IPv6 listener (the worker's socket keeps its own family)."""
    host = address.address
    if host is None:
        return None  # an unnamed unix socket: no bind asks for it
    if address.address_type == -1 and not host.startswith("\0"):
        host = os.path.abspath(host)  # as a worker's query names it
    return handle_key({"address": host, "port": address.port, "address_type": address.address_type,
                       "fd": None, "index": 0})


_ADDRESS_TYPES = {4: (socket.AF_INET, socket.SOCK_STREAM), 6: (socket.AF_INET6, socket.SOCK_STREAM),
                  -1: (socket.AF_UNIX, socket.SOCK_STREAM), "udp4": (socket.AF_INET, socket.SOCK_DGRAM),
                  "udp6": (socket.AF_INET6, socket.SOCK_DGRAM)}


def family_type(atype: Any) -> tuple[int, int]:
    """(family, socket type) of a query's address_type (Node's 4, 6, -1, 'udp4', 'udp6')."""
    try:
        return _ADDRESS_TYPES[atype]
    except (KeyError, TypeError):
        raise ValueError(f"bad address type {atype!r}") from None


def _is_ip(host: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(host.split("%")[0])
        return True
    except ValueError:
        return False


class Refused(OSError):
    """A worker asked the primary for what it may not do itself."""

    def __init__(self, code: int, why: str):
        super().__init__(code, why)
        self.why = why


def check_may_bind(worker: PrimaryWorker, msg: dict[str, Any]) -> None:
    """Bind a new address for a worker only when it runs with the primary's
    own credentials: otherwise the primary would bind, as root say, a port
    below 1024 or a socket file in a directory the worker cannot write.
    The worker's process is our unreaped child, so its pid is not reused."""
    pid = worker.pid
    theirs = process_credentials(pid) if pid is not None else None
    if theirs is not None and theirs == process_credentials("self"):
        return
    what = msg.get("address")
    if msg.get("address_type") != -1:
        what = f"{what}:{msg.get('port')}"
    uid = theirs[0][1] if theirs is not None else "?"
    raise Refused(errno.EACCES,
                  f"pycluster: worker {worker.id} runs with other credentials than the primary"
                  f" (uid {uid}, primary uid {os.geteuid()}): it may share the primary's listeners"
                  f" but not have {what} bound for it; add it to the primary's --bind")


def _listen(sock: socket.socket) -> None:
    if sock.type == socket.SOCK_STREAM and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(_sockets.DEFAULT_BACKLOG)


class Listeners:
    """Every handle the primary holds, by key; ``master`` are its own (--bind)."""

    def __init__(self) -> None:
        self.handles: dict[str, Handle] = {}
        self.master: list[Handle] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.policy = SCHED_RR  # set when the engine freezes the policy
        self.tuning: Tuning = DEFAULT_TUNING

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for handle in set(self.handles.values()):
            handle.loop = loop  # listeners bound before the loop existed (--bind)

    # -- a worker's query -----------------------------------------------------
    def answer_query(self, worker: PrimaryWorker, msg: dict[str, Any],
                     fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """The reply (and descriptors) to a worker's listen query; an error
        reply when it may not have that listener."""
        try:
            handle = self.handle_for(worker, msg, fds)
            if handle.unix_name is not None:
                handle.unix_name.relink()
        except Refused as exc:
            return {"errno": exc.errno, "message": str(exc), "why": exc.why}, []
        except OSError as exc:
            return {"errno": exc.errno or errno.EINVAL, "message": str(exc)}, []
        except (ValueError, TypeError, KeyError, ClusterError) as exc:
            return {"errno": errno.EINVAL, "message": str(exc)}, []
        reply, out = handle.add(worker)
        worker.handle_keys.add(handle.key)
        reply["key"] = handle.key
        reply["address"] = handle.address.to_dict()
        reply["masters"] = len(self.master)
        return reply, out

    def handle_for(self, worker: PrimaryWorker, msg: dict[str, Any], fds: list[int]) -> Handle:
        """The handle a worker's query asks for. A worker is untrusted: it
        gets the primary's listeners, a socket it sent itself, or a new
        address bound for it only when it has the primary's own privileges."""
        master = msg.get("master")
        if master is not None:
            if not isinstance(master, int) or not 0 <= master < len(self.master):
                raise ClusterError(f"the primary has no listener #{master}"
                                   f" ({len(self.master)} configured)")
            return self.master[master]
        if msg.get("fd") is not None:
            return self._worker_socket_handle(worker, msg, fds)
        key = handle_key(msg)
        if key not in worker.handle_keys:
            self._check_room(worker)  # joining a listener costs descriptors too (an rr lane)
        handle = self.handles.get(key)
        if handle is None:
            check_may_bind(worker, msg)
            try:
                handle = self.create(key, msg, owned=False)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    self._check_not_inherited(msg)
                raise
            self.handles[key] = handle
        return handle

    @staticmethod
    def _check_room(worker: PrimaryWorker) -> None:
        """Every listener a worker asks for costs the primary a descriptor
        (a listener or a socket the worker sent, under any index it names):
        bound per worker, so one worker cannot run the primary out of them."""
        if len(worker.handle_keys) >= MAX_LISTENERS_PER_WORKER:
            raise Refused(errno.EMFILE,
                          f"pycluster: worker {worker.id} holds {len(worker.handle_keys)} listeners already,"
                          f" the most one worker may have (close some first)")

    def _check_not_inherited(self, msg: dict[str, Any]) -> None:
        """A bind that failed with EADDRINUSE: say so when one of the
        primary's own listeners holds that port under another address (the
        socket systemd passed is [::]:P or 0.0.0.0:P, the app binds
        0.0.0.0:P or 127.0.0.1:P), as only the exact address is shared."""
        port = msg.get("port")
        for handle in self.master:
            held = handle.address
            if port is not None and held.port == port and \
                    isinstance(held.address_type, str) == isinstance(msg.get("address_type"), str):
                asked = _sockets.ListenSpec("udp" if isinstance(held.address_type, str) else "tcp",
                                            msg.get("address"), port)
                raise Refused(errno.EADDRINUSE,
                              f"pycluster: {asked} is in use by the primary's listener {held}"
                              f"{f' (fd://{held.fd})' if held.fd is not None else ''}:"
                              f" bind {held} exactly to share it, or serve cluster.listeners()")

    def _worker_socket_handle(self, worker: PrimaryWorker, msg: dict[str, Any], fds: list[int]) -> Handle:
        """``listen(fd=N)`` in a worker: N is the worker's own descriptor,
        sent with the query (never a number looked up in our fd table). The
        worker keeps the same open file, so it could make it blocking under
        us: the primary never accepts on it, whatever the policy; workers
        accept on it directly (SCHED_NONE), and workers sending the same
        socket share one handle."""
        fd = msg["fd"]
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
            raise ValueError(f"bad fd {fd!r}")
        if len(fds) != 1:
            raise OSError(errno.EBADF, f"fd {fd} did not come with the request")
        st = os.fstat(fds[0])
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ENOTSOCK, f"fd {fd} is not a socket")
        key = f"fd:{st.st_dev}:{st.st_ino}:{msg.get('index', 0)}"
        if key not in worker.handle_keys:
            self._check_room(worker)
        handle = self.handles.get(key)
        if handle is not None:
            return handle
        sock = socket.socket(fileno=os.dup(fds[0]))
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) or \
                    sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                raise OSError(errno.EINVAL, f"fd {fd} is not a TCP, UDP or unix socket")
            _listen(sock)
            described = _sockets.describe(sock, fd)
        except BaseException:
            sock.close()
            raise
        handle = SharedHandle(key, sock, described, loop=self.loop)
        self.handles[key] = handle
        return handle

    # -- creating one -----------------------------------------------------------
    def create(self, key: str, msg: dict[str, Any], *, owned: bool) -> Handle:
        """Bind (or take over) the socket a query or --bind describes and
        wrap it in the policy's handle."""
        fd = msg.get("fd")
        name = None
        if fd is not None:  # the primary's own fd (--bind fd://N, socket activation)
            if not owned:
                raise ValueError("a worker's fd is never looked up in the primary")
            if not isinstance(fd, int) or fd < 0:
                raise ValueError(f"bad fd {fd!r}")
            sock = _sockets.socket_from_fd(fd)
            _listen(sock)
            cls = handle_class(self.policy, stream=sock.type == socket.SOCK_STREAM, inet=False)
        else:
            family, sock_type = family_type(msg.get("address_type"))
            cls = handle_class(self.policy, stream=sock_type == socket.SOCK_STREAM,
                               inet=family != socket.AF_UNIX)
            address: Any
            if family == socket.AF_UNIX:
                path = msg.get("address")
                if not isinstance(path, str) or not path:
                    raise ValueError("unix socket path missing")
                if path.startswith("\0"):
                    address = path
                else:
                    # Bind a private name and hard-link the public one to it,
                    # all through the directory's fd (see UnixName).
                    name = _sockets.UnixName(path)
                    if name.exists():
                        name.remove()
                        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))  # as a plain bind
                    address = name.bind_address()
            else:
                host, port = msg.get("address") or "", msg.get("port") or 0
                if not isinstance(port, int) or not 0 <= port <= 65535:
                    raise ValueError(f"bad port {port!r}")
                address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
            try:
                sock = _sockets.create_listener(family, sock_type, address, v6only=msg.get("v6only"),
                                                reuseport=cls.reuseport, listen=not cls.reuseport)
                if name is not None:
                    name.bound()
            except BaseException:
                if name is not None:
                    name.remove()
                raise
        described = _sockets.describe(sock, fd)
        if name is not None:
            described = Address(name.path, None, -1, None)  # the path the app asked for
        return cls(key, sock, described, loop=self.loop, owned=owned, unix_name=name, tuning=self.tuning)

    def add_listener(self, spec: Any, *, kind: str | None = None) -> Handle:
        """A listener owned by the primary (``--bind``): it outlives its workers,
        and a worker gets it with ``pycluster.listen()`` or by binding its address."""
        parsed = _sockets.parse_address(spec, kind)
        msg: dict[str, Any]
        if parsed.kind == "fd":
            msg = {"fd": parsed.fd, "address_type": None}
        elif parsed.kind == "unix":
            path = str(parsed.path)
            msg = {"address": os.path.abspath(path) if not path.startswith("\0") else path, "address_type": -1}
        else:
            family, _ = _sockets.family_for_host(parsed.host, socket.SOCK_DGRAM if parsed.kind == "udp"
                                                 else socket.SOCK_STREAM)
            host = parsed.host or ("0.0.0.0" if family == socket.AF_INET else "::")
            if family == socket.AF_INET and not _is_ip(host):
                host = _sockets.family_for_host(host, socket.SOCK_STREAM)[1][0]
            v6 = family == socket.AF_INET6
            atype = ("udp6" if v6 else "udp4") if parsed.kind == "udp" else (6 if v6 else 4)
            msg = {"address": host, "port": parsed.port, "address_type": atype}
        key = handle_key({**msg, "index": 0})
        handle = self.create(key, msg, owned=True)
        # Register under the resolved address too, so a worker binding the
        # real port (after port 0) shares it.
        real_key = handle_key({"address": msg.get("address"), "port": handle.address.port,
                               "address_type": msg.get("address_type"), "fd": msg.get("fd"), "index": 0})
        self.handles[key] = handle
        self.handles[real_key] = handle
        handle.key = real_key
        if parsed.kind == "fd":
            # An inherited socket (socket activation, --bind fd://N) is also
            # found by its address, so an app binding that address itself
            # shares it instead of failing with EADDRINUSE.
            by_address = address_key(handle.address)
            if by_address is not None:
                self.handles.setdefault(by_address, handle)
        self.master.append(handle)
        return handle

    # -- workers leaving ----------------------------------------------------------
    def activate(self, worker: PrimaryWorker, key: Any) -> None:
        """The worker listens on ``key``: the handle puts it to work."""
        handle = self.handles.get(key) if isinstance(key, str) else None
        if handle is not None:
            handle.activate(worker)

    def release(self, worker: PrimaryWorker, key: str) -> None:
        worker.handle_keys.discard(key)
        handle = self.handles.get(key)
        if handle is None:
            return
        if handle.remove(worker) and not handle.owned:
            # Node: the primary closes a listener when its last worker leaves.
            del self.handles[key]
            handle.close()

    def release_all(self, worker: PrimaryWorker) -> None:
        for key in list(worker.handle_keys):
            self.release(worker, key)

    def close(self) -> None:
        for handle in set(self.handles.values()):
            handle.close()
        self.handles.clear()
        self.master.clear()
