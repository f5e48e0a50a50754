"""Real servers in workers share one port under every scheduling policy.

Ports the behaviour of Node's test-cluster-basic / test-cluster-net-listen /
test-cluster-listening-port (workers' servers share one port, port 0 included)
and test-cluster-disconnect (cluster.disconnect() ends every worker with code 0)
to the Python servers SPEC section 2 names: asyncio
(start_server and create_server), http.server.ThreadingHTTPServer, a raw
socketserver.TCPServer echo, a plain blocking ``accept()`` loop, uvicorn and aiohttp
(web.run_app, which serves through AppRunner + TCPSite).

Each scenario: a primary forks 2 workers that build the server and bind either
port 0 (the primary picks one port for all) or a port the test picked; once both
are listening the primary's client thread makes connection-per-request calls on
127.0.0.1; then ``cluster.disconnect()`` and every worker must exit 0 (uvicorn and
aiohttp shut down through their own SIGTERM handling) and the primary 0.
"""

from __future__ import annotations

import pytest

from server_support import assert_finished, describe

pytestmark = pytest.mark.timeout(60)

# Which servers bind port 0 and which bind a port chosen by the test.
SERVERS = {
    "asyncio_start_server": 0,
    "asyncio_create_server": 0,
    "threading_http_server": "free",
    "socketserver_echo": 0,
    "blocking_accept_loop": 0,
    "uvicorn": "free",
    "aiohttp_run_app": "free",
}

SCRIPT = r'''
import os
import sys

import pycluster as cluster
from harness import report, deadline

SERVER = os.environ["SERVER"]
POLICY = os.environ["PYCLUSTER_SCHED_POLICY"]
PORT = int(os.environ["PORT"])
BATCH = 20          # requests per round
MAX_ROUNDS = 10     # SCHED_NONE: the kernel picks the worker; retry until both served


def worker_main():
    pid = os.getpid()
    body = str(pid).encode()
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pid: %d\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (pid, len(body), body))

    if SERVER == "asyncio_start_server":
        import asyncio

        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", PORT)
            async with server:
                await server.serve_forever()

        asyncio.run(main())

    elif SERVER == "asyncio_create_server":
        import asyncio

        class Http(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport, self.buf = transport, b""

            def data_received(self, data):
                self.buf += data
                if b"\r\n\r\n" in self.buf:
                    self.transport.write(response)
                    self.transport.close()

        async def main():
            loop = asyncio.get_running_loop()
            server = await loop.create_server(Http, "127.0.0.1", PORT)
            await server.serve_forever()

        asyncio.run(main())

    elif SERVER == "threading_http_server":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("X-Pid", str(pid))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()

    elif SERVER == "socketserver_echo":
        import socketserver

        class Echo(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"%d " % pid + self.rfile.readline())

        socketserver.TCPServer(("127.0.0.1", PORT), Echo).serve_forever()

    elif SERVER == "blocking_accept_loop":
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", PORT))
        sock.listen(128)
        while True:  # the simplest server there is: blocking accept in the main thread
            conn, _ = sock.accept()
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                conn.sendall(response)

    elif SERVER == "uvicorn":
        import uvicorn

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        report(graceful=pid)  # uvicorn's own SIGTERM handling ran
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"x-pid", body), (b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})

        config = uvicorn.Config(app, host="127.0.0.1", port=PORT, loop="asyncio", http="h11",
                                lifespan="on", log_level="warning", access_log=False)
        uvicorn.Server(config).run()

    elif SERVER == "aiohttp_run_app":
        from aiohttp import web

        async def hello(request):
            return web.Response(body=body, headers={"X-Pid": str(pid)})

        async def on_cleanup(app):
            report(graceful=pid)  # aiohttp's own shutdown sequence ran

        app = web.Application()
        app.router.add_get("/", hello)
        app.on_cleanup.append(on_cleanup)
        web.run_app(app, host="127.0.0.1", port=PORT, print=None, access_log=None)
    else:
        raise SystemExit(f"unknown server {SERVER}")


def one_request(client, port):
    """(ok, pid) for one connection-per-request call."""
    if SERVER == "socketserver_echo":
        import socket
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"ping\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(100)
                if not chunk:
                    break
                data += chunk
        pid, _, rest = data.partition(b" ")
        return rest == b"ping\n", int(pid)
    r = client.get(f"http://127.0.0.1:{port}/")
    pid = int(r.headers["x-pid"])
    return r.status_code == 200 and r.text == str(pid), pid


def client_thread(port, loop):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    served, failures, total = {}, [], 0
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
    with httpx.Client(limits=limits, timeout=5) as client, ThreadPoolExecutor(4) as pool:
        for _ in range(MAX_ROUNDS):
            for fut in [pool.submit(one_request, client, port) for _ in range(BATCH)]:
                total += 1
                try:
                    ok, pid = fut.result()
                except Exception as exc:  # noqa: BLE001 - recorded, asserted by the test
                    failures.append(repr(exc))
                    continue
                if ok:
                    served[pid] = served.get(pid, 0) + 1
                else:
                    failures.append(f"bad answer from {pid}")
            if len(served) >= 2 or POLICY != "none":
                break
    loop.call_soon_threadsafe(finish, {"served": served, "failures": failures, "total": total})


def finish(outcome):
    """On the primary's loop: report what the client saw, then disconnect everyone."""
    report(**outcome)
    cluster.disconnect(all_gone)


def all_gone():
    """cluster.disconnect()'s callback: runs once every worker has left."""
    report(workers_at_callback=len(cluster.workers))


if cluster.is_primary:
    import threading

    deadline(15)
    ports = {}

    def on_listening(worker, address):
        ports[worker.id] = address.port
        if len(ports) == 2:
            report(ports=ports, worker_pids=[w.pid for w in cluster.workers.values()])
            loop = cluster._engine.loop
            threading.Thread(target=client_thread, args=(address.port, loop), daemon=True).start()

    cluster.on("listening", on_listening)
    cluster.on("exit", lambda worker, code, sig: report(
        exit=[worker.id, code, sig, worker.exited_after_disconnect]))
    for _ in range(2):
        cluster.fork()
    rc = cluster.run()
    report(workers_left=len(cluster.workers))
    sys.exit(rc)
else:
    worker_main()
'''


@pytest.mark.parametrize("server", list(SERVERS))
def test_server_shares_port(run_script, server, policy, free_port):
    port = free_port if SERVERS[server] == "free" else 0
    res = run_script(SCRIPT, env={"SERVER": server, "PYCLUSTER_SCHED_POLICY": policy, "PORT": port},
                     timeout=45)
    where = describe(res)
    assert_finished(res)
    ports = res.report("ports")
    assert len(ports) == 2, where
    assert len(set(ports.values())) == 1, f"workers listen on different ports: {ports}\n{where}"
    if port:
        assert set(ports.values()) == {port}, where
    else:
        assert list(ports.values())[0] > 0, where

    served = {int(pid): n for pid, n in res.report("served").items()}
    failures = res.report("failures")
    total = res.report("total")
    assert failures == [], where
    assert sum(served.values()) == total >= 20, where
    assert set(served) <= set(res.report("worker_pids")), f"answers from unknown pids: {served}\n{where}"
    if policy in ("rr", "none"):
        assert len(served) == 2, f"{policy}: expected both workers to answer, got {served}\n{where}"
    else:
        assert len(served) >= 1, where

    exits = sorted(res.all("exit"))
    assert [e[0] for e in exits] == [1, 2], where
    for wid, code, sig, after_disconnect in exits:
        assert (code, sig) == (0, None), f"worker {wid} exited with code={code} signal={sig}\n{where}"
        assert after_disconnect is True, where
    assert res.report("workers_at_callback") == 0, where
    assert res.report("workers_left") == 0, where
    if server.startswith(("uvicorn", "aiohttp")):
        assert sorted(res.all("graceful")) == sorted(res.report("worker_pids")), \
            f"{server} did not shut down through its own SIGTERM handling\n{where}"
    assert res.returncode == 0, where
