"""Port of Node's test/parallel/test-cluster-worker-wait-server-close.js.

The worker's shared TCP server holds a live connection from the primary
(the worker wrote '.' on it). The primary calls ``worker.disconnect()`` and
then ends its socket. Node asserts, in the worker, that the IPC
'disconnect' comes only after the server's 'close': a worker disconnect
closes the worker's servers first and lets their live connections finish.

Python translation: pycluster does not own the app's server object, so it
cannot wait for the app's server to close. SPEC section 2 instead says
that the worker stops accepting on every shared listener, then 'disconnect'
is emitted in the worker so the app can finish in-flight work, and then the
app is sent SIGTERM (its own handler shuts it down its way). So the test
checks:
- at the worker's 'disconnect' the shared listener no longer accepts (a
  connection to its port is refused): the listening part of Node's
  "server closed before disconnect";
- 'disconnect' reaches the worker before SIGTERM does;
- the live connection is allowed to finish: after the primary has seen
  'disconnect' it still gets its data echoed on that connection, then ends
  it; the worker's SIGTERM handler (asyncio ``add_signal_handler``) closes
  the server, waits for the connection to end and only then exits, with
  ``(0, None)``.
The client runs in a thread of the primary, never on its loop.
"""

from __future__ import annotations

SCRIPT = r"""
import asyncio
import signal
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    disconnected = threading.Event()

    def recv_exactly(sock, n):
        data = b""
        while len(data) < n and (chunk := sock.recv(n - len(data))):
            data += chunk
        return data

    def client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            first = recv_exactly(sock, 1)
            cluster._engine.loop.call_soon_threadsafe(worker.disconnect)
            report(primary_saw_disconnect=disconnected.wait(10))
            sock.sendall(b"ping")
            echo = recv_exactly(sock, 4)
            sock.shutdown(socket.SHUT_WR)
            rest = recv_exactly(sock, 1)
        report(client={"first": first.decode(), "echo": echo.decode(), "rest": rest.decode()})

    def on_listening(address):
        threading.Thread(target=client, args=(address.port,)).start()

    worker.on("listening", must_call(on_listening, 1))
    worker.on("disconnect", must_call(disconnected.set, 1))
    worker.on("exit", must_call(lambda code, sig: report(exit=[code, sig]), 1))
    report(rc=cluster.run())
else:
    port = []

    def on_disconnect():
        try:
            socket.create_connection(("127.0.0.1", port[0]), timeout=5).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        report(worker_event="disconnect", listener_refused_at_disconnect=refused)

    cluster.worker.on("disconnect", must_call(on_disconnect, 1))

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        finished = asyncio.Event()

        async def handle(reader, writer):
            writer.write(b".")
            await writer.drain()
            while data := await reader.read(64):
                writer.write(data)
                await writer.drain()
            writer.close()
            report(worker_event="connection finished")
            finished.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        await stop.wait()
        report(worker_event="sigterm")
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(finished.wait(), 10)
        report(worker_event="server closed")

    asyncio.run(main())
"""


def test_cluster_worker_wait_server_close(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("listener_refused_at_disconnect") is True
    events = res.all("worker_event")
    assert sorted(events) == ["connection finished", "disconnect", "server closed", "sigterm"]
    assert events.index("disconnect") < events.index("sigterm")
    assert events[-1] == "server closed"
    assert res.report("primary_saw_disconnect") is True
    assert res.report("client") == {"first": ".", "echo": "ping", "rest": ""}
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
