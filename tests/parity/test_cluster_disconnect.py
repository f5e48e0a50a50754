"""Port of Node's test/parallel/test-cluster-disconnect.js.

8 workers each run two TCP servers on 127.0.0.1 port 0 that answer 'echo'
and close. The primary waits for the 16 'listening' events (two per worker),
connects once to each distinct port and expects 'echo', then calls
``cluster.disconnect(cb)``; in ``cb`` it runs the whole round again to
confirm the cleanup, and after the second ``cb`` the primary ends.

Python translation: as NODE_PARITY rule 7 says, the 16 'listening' events
carry exactly 2 distinct ports (every worker's first ``listen(0)`` shares one
port, every second one another). Beyond Node the test checks, in each
``cb``: ``cluster.workers`` is empty, every worker exited ``(0, None)`` and
the round's ports are released (they can be bound again in the primary).
The servers are asyncio ``start_server``; the clients run in a thread of the
primary, never on its loop.
"""

from __future__ import annotations

SCRIPT = r"""
import asyncio
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

WORKERS = 8
SERVERS = 2


def fetch(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        data = b""
        while chunk := conn.recv(64):
            data += chunk
    return data.decode()


def bindable(port):
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", port))
        probe.listen()
        return True
    except OSError:
        return False
    finally:
        probe.close()


if cluster.is_primary:
    deadline(25)
    exits = []
    cluster.on("exit", lambda w, code, sig: exits.append([code, sig]))

    def start_round(number, again):
        ports = []
        listening = [0]

        def on_listening(address):
            ports.append(address.port)
            listening[0] += 1
            if listening[0] == WORKERS * SERVERS:
                threading.Thread(target=test_ports, args=(sorted(set(ports)),)).start()

        def test_ports(distinct):
            answers = {port: fetch(port) for port in distinct}
            cluster._engine.loop.call_soon_threadsafe(disconnect, answers)

        def disconnect(answers):
            report(round={"number": number, "listening": len(ports), "distinct_ports": len(set(ports)),
                          "answers": sorted(answers.values())})
            cluster.disconnect(must_call(on_disconnected, 1, name=f"disconnect cb {number}"))

        def on_disconnected():
            report(cleanup={"number": number, "workers": len(cluster.workers), "exits": exits[:],
                            "released": all(bindable(p) for p in set(ports))})
            exits.clear()
            if again:
                start_round(number + 1, False)

        for _ in range(WORKERS):
            worker = cluster.fork()
            worker.on("listening", must_call(on_listening, SERVERS, name=f"listening {worker.id}"))

    start_round(1, True)
    report(rc=cluster.run())
else:
    async def echo(reader, writer):
        writer.write(b"echo")
        await writer.drain()
        writer.close()

    async def main():
        servers = [await asyncio.start_server(echo, "127.0.0.1", 0) for _ in range(SERVERS)]
        await asyncio.Event().wait()

    asyncio.run(main())
"""


def test_cluster_disconnect(run_script):
    res = run_script(SCRIPT, timeout=40)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    expected_round = {"listening": 16, "distinct_ports": 2, "answers": ["echo", "echo"]}
    assert res.all("round") == [{"number": 1, **expected_round}, {"number": 2, **expected_round}]
    expected_cleanup = {"workers": 0, "exits": [[0, None]] * 8, "released": True}
    assert res.all("cleanup") == [{"number": 1, **expected_cleanup}, {"number": 2, **expected_cleanup}]
    assert res.report("rc") == 0
