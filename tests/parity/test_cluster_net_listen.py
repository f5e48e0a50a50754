"""Port of Node's test/parallel/test-cluster-net-listen.js.

Node: the worker calls ``net.createServer().listen()`` with no port at all; the
listen must succeed and the worker exits with code 0 from the listening
callback (``process.exit(0)``).

Python translation: "no port" is port 0 with no host, spelled three ways a
Python app would spell it: a plain ``socket.bind(("", 0))`` + ``listen()``,
``pycluster.listen(":0")`` and ``asyncio.start_server(cb, port=0)`` (host None).
Each must succeed through the primary, the primary's 'listening' event carries a
real port (never 0) for IPv4, and the worker's ``sys.exit(0)`` right after
listening gives 'exit' ``(0, None)``.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import asyncio
import os
import socket
import sys

import pycluster as cluster
from harness import deadline, must_call, report

FORM = os.environ["FORM"]

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()

    def on_listening(w, address):
        report(address=[address.address, address.port, address.address_type])

    def on_exit(w, code, signal):
        report(exit=[code, signal])

    cluster.on("listening", must_call(on_listening, 1, "listening"))
    cluster.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    if FORM == "socket":
        sock = socket.socket()
        sock.bind(("", 0))
        sock.listen()
        port = sock.getsockname()[1]
    elif FORM == "cluster_listen":
        sock = cluster.listen(":0")
        port = sock.getsockname()[1]
    else:
        async def main():
            server = await asyncio.start_server(lambda r, w: None, port=0, family=socket.AF_INET)
            return server.sockets[0].getsockname()[1]
        port = asyncio.run(main())
    report(worker_port=port)
    sys.exit(0)
"""


@pytest.mark.parametrize("form", ["socket", "cluster_listen", "asyncio"])
def test_cluster_net_listen(run_script, form):
    result = run_script(SCRIPT, env={"FORM": form}, timeout=30)
    assert result.returncode == 0, result.stderr
    address, port, address_type = result.report("address")
    assert address == "0.0.0.0"
    assert address_type == 4
    assert port > 0
    assert result.report("worker_port") == port
    assert result.report("exit") == [0, None]
