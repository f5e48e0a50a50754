"""A WSGI app served with cheroot's threaded server on the master's listeners (SPEC 8).

cheroot was chosen by measurement against gunicorn's ``gthread`` worker on the
same Flask app (one process, ``wrk -t2 -c32``; README "Serving applications"):
it answered more requests per second than gthread and waitress both with
keep-alive and with ``Connection: close``, and it is a pure-Python,
well-kept server with HTTP/1.1 keep-alive and a thread pool (``threads``).

cheroot takes the master's socket instead of binding one: under rr it is the
worker's hand-off lane (its ``accept()`` is the binding's), under none and
reuseport the shared listener, made non-blocking so that a worker losing the
race for a connection never waits in ``accept()``.

The drain (SIGTERM): the listener leaves cheroot's selector and is closed,
every response from then on says ``Connection: close`` (cheroot's own
keep-alive decision, ``can_add_keepalive_connection``), idle connections
close after ``keep_alive`` seconds (cheroot's ``timeout``), and once every
connection the worker accepted is closed the server stops and the worker
exits 0.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .common import Drain, access_line, master_listeners
from .options import ServeOptions

_POLL = 0.05  # seconds between two looks at the open connections while draining

StartResponse = Callable[..., Any]


def serve(app: Any, options: ServeOptions) -> int:
    from cheroot import connections, wsgi

    drain = Drain()
    drain.install()
    sockets = master_listeners("a WSGI")
    app = _wrap(app, options)

    class Connections(connections.ConnectionManager):
        def _from_server_socket(self, server_socket: Any) -> Any:
            if drain.active:
                return None  # the listener is leaving (or left) the selector: accept nothing more
            return super()._from_server_socket(server_socket)  # type: ignore[misc]

    class Server(wsgi.Server):
        def __init__(self, sock: socket.socket):
            super().__init__(sock.getsockname(), app, numthreads=options.threads,
                             timeout=max(1, round(options.keep_alive)), shutdown_timeout=1)
            self.listener = sock
            self.expiration_interval = 0.25

        def prepare(self) -> None:
            """cheroot's prepare, with the master's socket instead of a bind of its own."""
            self._interrupt = None
            if self.software is None:
                self.software = f"{self.version} Server"
            self.socket = self.listener
            self.socket.setblocking(False)
            self._connections = Connections(self)
            self.requests.start()
            self.ready = True
            self._start_time = time.time()

        @property
        def can_add_keepalive_connection(self) -> bool:
            return not drain.active and bool(super().can_add_keepalive_connection)

        def stop_accepting(self) -> None:
            try:
                self._connections._selector.unregister(self.listener.fileno())  # type: ignore[attr-defined]
            except (KeyError, ValueError, OSError):
                pass
            self.listener.close()  # under rr the lane closes: the primary hears it

        def finish(self) -> None:
            self.socket = None  # stop() would otherwise connect to it to wake accept()
            self.stop()

    servers = [Server(sock) for sock in sockets]
    for server in servers:
        server.prepare()
    watcher = threading.Thread(target=_drain, args=(drain, servers), name="pycluster-drain", daemon=True)
    watcher.start()
    for extra in servers[1:]:
        threading.Thread(target=extra.serve, name="pycluster-serve", daemon=True).start()
    servers[0].serve()
    return 0


def _drain(drain: Drain, servers: list[Any]) -> None:
    drain.event.wait()
    for server in servers:
        server.stop_accepting()
    from ..child import runtime
    current = runtime.current()
    if current is not None:
        inflight = current.exits.inflight
        while inflight.busy():
            time.sleep(_POLL)
    for server in servers:
        server.finish()


def _wrap(app: Any, options: ServeOptions) -> Any:
    """The app with root_path, proxy headers and the access log applied, as asked."""
    trusted = _trusted(options.forwarded_allow_ips) if options.proxy_headers else None
    root = options.root_path.rstrip("/")
    if not (trusted or root or options.access_log):
        return app

    def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if root:
            environ["SCRIPT_NAME"] = root + environ.get("SCRIPT_NAME", "")
            path = environ.get("PATH_INFO", "")
            if path == root or path.startswith(root + "/"):
                environ["PATH_INFO"] = path[len(root):]
        if trusted is not None and trusted(environ.get("REMOTE_ADDR", "")):
            forwarded = environ.get("HTTP_X_FORWARDED_FOR")
            if forwarded:
                environ["REMOTE_ADDR"] = forwarded.split(",")[0].strip()
            proto = environ.get("HTTP_X_FORWARDED_PROTO")
            if proto:
                environ["wsgi.url_scheme"] = proto.split(",")[0].strip()
        if not options.access_log:
            return app(environ, start_response)
        started = time.perf_counter()
        status: list[str] = ["-"]

        def logged_start(code: str, headers: Any, *exc_info: Any) -> Any:
            status[0] = code.split(" ", 1)[0]
            return start_response(code, headers, *exc_info)
        try:
            return app(environ, logged_start)
        finally:
            access_line((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")), environ.get("REQUEST_METHOD", "-"),
                        environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
                        environ.get("QUERY_STRING", ""), environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                        status[0], time.perf_counter() - started)
    return wrapped


def _trusted(spec: str) -> Callable[[str], bool]:
    """Is a peer address one of ``forwarded_allow_ips`` ("*", addresses, networks)?"""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if "*" in items:
        return lambda _addr: True
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue

    def check(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in networks)
    return check
