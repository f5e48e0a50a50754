"""Port of Node's test/parallel/test-dgram-exclusive-implicit-bind.js.

Node: the primary binds a target UDP socket (``exclusive: true``) and forks
four workers. Two workers ``send()`` without binding first (an implicit bind
gives each a unique ephemeral port: not clustered); two workers ``bind(0)``
first (clustered: they share one port). Asserts the target sees 4 datagrams
from exactly **3** distinct source ports; then ``cluster.disconnect()``.

Python translation: the primary's own UDP socket is the target (read in a
thread). Workers with ``BOUND=y`` call ``sock.bind(("", 0))`` (shared through
the primary) before ``sendto``; the others just ``sendto`` (the kernel's
implicit bind is never intercepted). Asserts 4 datagrams from 3 distinct
source ports: the two bound workers share the one port that appears in their
'listening' events (the only 'listening' events: implicitly bound sockets do
not query the primary), and each unbound worker has its own port. Then
``cluster.disconnect()`` ends every worker with ``(0, None)``.
"""

from __future__ import annotations

SCRIPT = r"""
import os
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    target.settimeout(10)
    port = target.getsockname()[1]
    listening_ports = []

    def receiver():
        sources = []
        try:
            while len(sources) < 4:
                data, (host, source_port) = target.recvfrom(64)
                sources.append([data.decode(), source_port])
        except OSError as exc:
            report(receive_error=repr(exc))
        cluster._engine.loop.call_soon_threadsafe(done, sources)

    def done(sources):
        target.close()
        bound = sorted({p for d, p in sources if d == "bound"})
        unbound = sorted(p for d, p in sources if d == "unbound")
        report(datagrams=len(sources), distinct=len({p for _, p in sources}), bound_ports=bound,
               unbound_ports=unbound, listening_ports=sorted(set(listening_ports)))
        cluster.disconnect()

    threading.Thread(target=receiver, daemon=True).start()
    cluster.fork({"PORT": port})
    cluster.fork({"PORT": port})
    cluster.fork({"PORT": port, "BOUND": "y"})
    cluster.fork({"PORT": port, "BOUND": "y"})
    cluster.on("listening", must_call(lambda w, a: listening_ports.append(a.port), 2, "listening"))
    cluster.on("exit", must_call(lambda w, code, signal: report(exit=[code, signal]), 4, "exit"))
    cluster.run()
else:
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound = os.environ.get("BOUND") == "y"
    if bound:
        source.bind(("", 0))
    source.sendto(b"bound" if bound else b"unbound", ("127.0.0.1", int(os.environ["PORT"])))
"""


def test_dgram_exclusive_implicit_bind(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("datagrams") == 4
    assert result.report("distinct") == 3
    bound = result.report("bound_ports")
    assert len(bound) == 1, "the two bind(0) workers must share one port"
    assert result.report("listening_ports") == bound
    unbound = result.report("unbound_ports")
    assert len(set(unbound)) == 2 and bound[0] not in unbound
    assert result.all("exit") == [[0, None]] * 4
