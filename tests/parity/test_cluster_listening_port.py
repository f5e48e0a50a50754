"""Port of Node's test/parallel/test-cluster-listening-port.js.

A worker listens on port 0 (here an asyncio server on 127.0.0.1); in cluster
'listening' the address's ``port`` is a real ``int`` > 0 (the bound port,
never 0), and the primary then kills the worker.

Python translation: ``worker.kill()`` follows SPEC section 2 (disconnect,
then SIGTERM; a plain worker exits 0), so exit is ``(0, None)``.
"""

from __future__ import annotations

SCRIPT = r"""
import asyncio

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)

    def on_listening(worker, address):
        report(port=address.port, port_type=type(address.port).__name__)
        worker.kill()

    cluster.on("listening", must_call(on_listening, 1))
    cluster.on("exit", must_call(lambda w, code, sig: report(exit=[code, sig]), 1))
    cluster.fork()
    report(rc=cluster.run())
else:
    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        await server.serve_forever()

    asyncio.run(main())
"""


def test_cluster_listening_port(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("port_type") == "int"
    assert 0 < res.report("port") <= 65535
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
