"""A unix-socket HTTP server and a UDP echo server, each shared by 2 workers.

Ports the behaviour of Node's test-cluster-http-pipe (an HTTP server on a pipe
path in a worker, reached by a client through that path),
test-cluster-net-listen-relative-path (the socket file is removed once the
last worker leaves) and
test-cluster-dgram-1 / test-cluster-dgram-reuse (a UDP socket bound in workers is
shared: datagrams sent to the one port reach the workers). SPEC section 2: unix
stream binds are shared (RR hand-off under SCHED_RR, one listener otherwise);
UDP is always shared, whatever the policy.

The client (httpx over the unix path, a UDP socket) runs in a thread of the
primary; afterwards ``cluster.disconnect()`` and every process exits 0.
"""

from __future__ import annotations

import pytest

from server_support import assert_finished, describe

pytestmark = pytest.mark.timeout(60)

UNIX_SCRIPT = r'''
import os
import sys

import pycluster as cluster
from harness import report, deadline

SERVER = os.environ["SERVER"]
POLICY = os.environ["PYCLUSTER_SCHED_POLICY"]
PATH = os.environ["SOCK_PATH"]
BATCH, MAX_ROUNDS = 20, 10


def worker_main():
    pid = os.getpid()
    body = str(pid).encode()
    if SERVER == "asyncio_unix":
        import asyncio

        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nX-Pid: %d\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (pid, len(body), body))
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_unix_server(handle, PATH)
            await server.serve_forever()

        asyncio.run(main())
    else:
        import socketserver
        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("X-Pid", str(pid))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self):
                return "unix"

            def log_message(self, *args):
                pass

        socketserver.ThreadingUnixStreamServer(PATH, Handler).serve_forever()


def client_thread(loop):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    served, failures, total = {}, [], 0
    transport = httpx.HTTPTransport(uds=PATH, limits=httpx.Limits(max_keepalive_connections=0))

    def one(client):
        r = client.get("http://cluster/")
        return r.status_code, int(r.headers["x-pid"])

    with httpx.Client(transport=transport, timeout=5) as client, ThreadPoolExecutor(4) as pool:
        for _ in range(MAX_ROUNDS):
            for fut in [pool.submit(one, client) for _ in range(BATCH)]:
                total += 1
                try:
                    status, pid = fut.result()
                except Exception as exc:  # noqa: BLE001 - recorded, asserted by the test
                    failures.append(repr(exc))
                    continue
                if status == 200:
                    served[pid] = served.get(pid, 0) + 1
                else:
                    failures.append(f"status {status} from {pid}")
            if len(served) >= 2 or POLICY == "rr":
                break
    loop.call_soon_threadsafe(finish, {"served": served, "failures": failures, "total": total})


def finish(outcome):
    """On the primary's loop: report what the client saw, then disconnect everyone."""
    report(**outcome)
    cluster.disconnect()


if cluster.is_primary:
    import threading

    deadline(30)
    addresses = {}

    def on_listening(worker, address):
        addresses[worker.id] = [address.address, address.port, address.address_type]
        if len(addresses) == 1:
            # The second worker starts once the socket file exists, as a
            # replacement worker would (no race between the two binds).
            cluster.fork()
        elif len(addresses) == 2:
            report(worker_pids=[w.pid for w in cluster.workers.values()])
            threading.Thread(target=client_thread, args=(cluster._engine.loop,), daemon=True).start()

    cluster.on("listening", on_listening)
    cluster.on("exit", lambda worker, code, sig: report(exit=[worker.id, code, sig]))
    cluster.fork()
    rc = cluster.run()
    report(addresses=addresses, path_left=os.path.exists(PATH))
    sys.exit(rc)
else:
    worker_main()
'''

UDP_SCRIPT = r'''
import os
import sys

import pycluster as cluster
from harness import report, deadline

SERVER = os.environ["SERVER"]
BATCH, ROUNDS_FOR = 20, 10.0  # rounds until both workers answered, for at most ROUNDS_FOR seconds


def worker_main():
    pid = b"%d " % os.getpid()
    if SERVER == "udp_socket":
        import socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(pid + data, peer)
    else:
        import asyncio

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, peer):
                self.transport.sendto(pid + data, peer)

        async def main():
            loop = asyncio.get_running_loop()
            await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
            await asyncio.Event().wait()

        asyncio.run(main())


def client_thread(port, loop):
    """Rounds of BATCH datagrams, alternately one at a time (ping-pong: the
    kernel wakes the blocked readers in turn) and as a burst (both epoll-based
    readers wake), until both workers have answered. 'listening' comes at the
    bind, before a worker's loop reads: on a loaded machine one worker can take
    every datagram of the first rounds, so the rounds go on for a while."""
    import socket
    import time

    served, failures, total = {}, [], 0

    def collect(sock, sent):
        while sent:
            try:
                data, _ = sock.recvfrom(2048)
            except OSError as exc:
                failures.append(f"no echo for {sorted(sent)}: {exc!r}")
                return
            pid, _, echoed = data.partition(b" ")
            if echoed not in sent:
                failures.append(f"unexpected echo {data!r}")
                continue
            sent.discard(echoed)
            served[int(pid)] = served.get(int(pid), 0) + 1

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        until = time.monotonic() + ROUNDS_FOR
        round_no = -1
        while time.monotonic() < until:
            round_no += 1
            burst = round_no % 2 == 1
            sent = set()
            for _ in range(BATCH):
                total += 1
                msg = b"ping %d" % total
                sock.sendto(msg, ("127.0.0.1", port))
                sent.add(msg)
                if not burst:
                    collect(sock, sent)
            collect(sock, sent)
            if len(served) >= 2:
                break
    loop.call_soon_threadsafe(finish, {"served": served, "failures": failures, "total": total})


def finish(outcome):
    """On the primary's loop: report what the client saw, then disconnect everyone."""
    report(**outcome)
    cluster.disconnect()


if cluster.is_primary:
    import threading

    deadline(30)
    addresses = {}

    def on_listening(worker, address):
        addresses[worker.id] = [address.address, address.port, address.address_type]
        if len(addresses) == 2:
            report(worker_pids=[w.pid for w in cluster.workers.values()])
            threading.Thread(target=client_thread, args=(address.port, cluster._engine.loop),
                             daemon=True).start()

    cluster.on("listening", on_listening)
    cluster.on("exit", lambda worker, code, sig: report(exit=[worker.id, code, sig]))
    cluster.fork()
    cluster.fork()
    rc = cluster.run()
    report(addresses=addresses)
    sys.exit(rc)
else:
    worker_main()
'''


UNIX_ADDRESS_SCRIPT = r'''
import os
import socket
import sys

import pycluster as cluster
from harness import report, deadline

PATH = os.environ["SOCK_PATH"]

if cluster.is_primary:
    deadline(15)
    addresses = {}

    def on_listening(worker, address):
        addresses[worker.id] = address.address
        if len(addresses) == 2:
            cluster.disconnect()

    cluster.on("listening", on_listening)
    cluster.on("exit", lambda worker, code, sig: report(exit=[worker.id, code, sig]))
    cluster.fork()
    cluster.fork()
    rc = cluster.run()
    report(addresses=addresses)
    sys.exit(rc)
else:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(PATH)
    report(sockname=sock.getsockname())
    sock.listen()
'''


def _check_served(res, where: str) -> None:
    served = {int(pid): n for pid, n in res.report("served").items()}
    assert res.report("failures") == [], where
    assert sum(served.values()) == res.report("total") >= 20, where
    assert set(served) <= set(res.report("worker_pids")), where
    assert len(served) == 2, f"expected both workers to answer, got {served}\n{where}"
    assert sorted(res.all("exit")) == [[1, 0, None], [2, 0, None]], where
    assert res.returncode == 0, where


@pytest.mark.parametrize("server", ["asyncio_unix", "socketserver_unix"])
def test_unix_http_server_shared(run_script, tmp_path, server, policy):
    path = str(tmp_path / "http.sock")
    res = run_script(UNIX_SCRIPT, env={"SERVER": server, "PYCLUSTER_SCHED_POLICY": policy,
                                       "SOCK_PATH": path}, timeout=45)
    where = describe(res)
    assert_finished(res)
    addresses = res.report("addresses")
    assert sorted(addresses) == ["1", "2"], where
    for address, port, atype in addresses.values():
        assert (port, atype) == (None, -1), where
    _check_served(res, where)
    # The primary created the socket file; it closes and unlinks it when the last worker leaves.
    assert res.report("path_left") is False, where


@pytest.mark.parametrize("server", ["udp_socket", "asyncio_datagram"])
def test_udp_echo_shared(run_script, server, policy):
    res = run_script(UDP_SCRIPT, env={"SERVER": server, "PYCLUSTER_SCHED_POLICY": policy}, timeout=45)
    where = describe(res)
    assert_finished(res)
    addresses = res.report("addresses")
    assert sorted(addresses) == ["1", "2"], where
    ports = {port for _, port, _ in addresses.values()}
    assert len(ports) == 1 and ports.pop() > 0, f"workers got different UDP ports: {addresses}\n{where}"
    assert {atype for _, _, atype in addresses.values()} == {"udp4"}, where
    _check_served(res, where)


def test_unix_address_is_the_bound_path(run_script, tmp_path, policy):
    """The 'listening' address and the worker's getsockname() name the path the
    worker bound (as a plain bind and Node's pipe servers do), not a path
    relative to the primary's working directory."""
    path = str(tmp_path / "bound.sock")
    res = run_script(UNIX_ADDRESS_SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy, "SOCK_PATH": path},
                     timeout=30)
    where = describe(res)
    assert_finished(res)
    assert res.returncode == 0, where
    assert res.report("addresses") == {"1": path, "2": path}, where
    assert res.all("sockname") == [path, path], where
