"""Port of Node's test-net-listen-shared-ports.js (sequential).

Python translation: the primary picks a free pair of ports PORT, PORT+1 and
forks two workers one after the other. Each worker binds a plain socket to
127.0.0.1:PORT (shared through the primary) and then binds 127.0.0.1:PORT+1
inside ``with cluster.exclusive():``. Worker 1: both binds succeed.
Worker 2 (while worker 1 still holds its listeners): the shared bind
succeeds, the exclusive one fails with the OSError a plain bind raises,
errno EADDRINUSE. Each worker sent exactly one query (the shared bind).
"""

from __future__ import annotations

SCRIPT = """
import errno
import random
import socket
import pycluster as cluster
from harness import deadline, must_call, report


def free_pair():
    # Below the ephemeral range: a client socket of another test must not
    # take PORT+1 between this probe and the workers' binds.
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(200):
        port = random.randint(10000, max(10001, ephemeral_low - 2))
        held = []
        try:
            for p in (port, port + 1):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port pair")


if cluster.is_primary:
    deadline(20)
    port = free_pair()
    results = {}

    def on_message(worker, message):
        results[worker.id] = message
        if worker.id == 1:
            cluster.fork({"SHARED_PORT": port})
        else:
            report(results=results)
            cluster.disconnect()

    cluster.on("message", must_call(on_message, 2))
    cluster.on("exit", must_call(lambda worker, code, signal: report(exit=[worker.id, code, signal]), 2))
    cluster.fork({"SHARED_PORT": port})
    report(port=port, primary_rc=cluster.run())
else:
    import os
    from pycluster.child import intercept as net

    port = int(os.environ["SHARED_PORT"])
    result = {}
    shared = socket.socket()
    try:
        shared.bind(("127.0.0.1", port))
        shared.listen()
        result["shared"] = "ok"
    except OSError as exc:
        result["shared"] = errno.errorcode.get(exc.errno, str(exc.errno))
    own = socket.socket()
    try:
        with cluster.exclusive():
            own.bind(("127.0.0.1", port + 1))
        own.listen()
        result["exclusive"] = "ok"
    except OSError as exc:
        result["exclusive"] = errno.errorcode.get(exc.errno, str(exc.errno))
        result["exclusive_type"] = type(exc).__name__
    result["listen_requests"] = net.listen_requests
    cluster.worker.send(result)
"""


def test_shared_binds_coexist_exclusive_binds_conflict(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    results = res.report("results")
    assert results["1"] == {"shared": "ok", "exclusive": "ok", "listen_requests": 1}
    assert results["2"] == {"shared": "ok", "exclusive": "EADDRINUSE", "exclusive_type": "OSError",
                            "listen_requests": 1}
    assert sorted(res.all("exit")) == [[1, 0, None], [2, 0, None]]
    assert res.report("primary_rc") == 0
