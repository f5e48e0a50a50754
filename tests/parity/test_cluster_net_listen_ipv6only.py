"""Port of Node's test/parallel/test-cluster-net-listen-ipv6only-false.js,
test/sequential/test-cluster-net-listen-ipv6only-rr.js and
test/sequential/test-cluster-net-listen-ipv6only-none.js (one file).

Node:
* *false*: three workers listen on host ``'::'`` port 0 without ``ipv6Only``;
  all 'listening' events have the same addressType and port, and a connection
  to ``0.0.0.0:port`` succeeds (dual stack);
* *rr* / *none*: three workers listen on ``'::'`` at a fixed port with
  ``ipv6Only: true``; all three address objects are deep-equal (addressType 6,
  address '::', the fixed port) and the primary itself can then listen on
  ``0.0.0.0:port``, which proves the shared socket really is v6-only.
All workers are then disconnected and exit 0.

Python translation: the worker creates an AF_INET6 socket, sets
``IPV6_V6ONLY`` to 0 or 1 *before* ``bind(("::", port))`` (the flag must reach
the primary's listener) and listens. The three 'listening' Address objects
must be equal (``address '::'``, ``address_type 6``, a real port, fd None).
Dual stack: an IPv4 client connects to 127.0.0.1:port. v6-only: the primary
binds and listens on 0.0.0.0:port itself. Each variant runs under both
policies; the v6-only one uses a fixed free port chosen by the primary.
"""

from __future__ import annotations

import socket

import pytest

SCRIPT = r"""
import os
import socket

import pycluster as cluster
from harness import deadline, must_call, report

V6ONLY = os.environ["V6ONLY"] == "1"
WORKERS = 3

if cluster.is_primary:
    deadline(20)
    port = 0
    if V6ONLY:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::", 0))
        port = probe.getsockname()[1]
        probe.close()
    workers = [cluster.fork({"PORT": port}) for _ in range(WORKERS)]
    addresses = []

    def on_listening(w, address):
        addresses.append(address)
        if len(addresses) < WORKERS:
            return
        report(addresses=[a.to_dict() for a in addresses],
               all_equal=all(a == addresses[0] for a in addresses), fixed_port=port)
        real = addresses[0].port
        if V6ONLY:
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                v4.bind(("0.0.0.0", real))
                v4.listen()
                report(v4_listen="ok")
            except OSError as exc:
                report(v4_listen=exc.errno)
            finally:
                v4.close()
        else:
            try:
                socket.create_connection(("127.0.0.1", real), timeout=5).close()
                report(v4_connect="ok")
            except OSError as exc:
                report(v4_connect=exc.errno)
        for w in workers:
            w.disconnect()

    cluster.on("listening", must_call(on_listening, WORKERS, "listening"))
    cluster.on("exit", must_call(lambda w, code, signal: report(exit=[code, signal]), WORKERS, "exit"))
    cluster.run()
else:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if V6ONLY else 0)
    sock.bind(("::", int(os.environ["PORT"])))
    sock.listen()
"""


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 support")
@pytest.mark.parametrize("policy", ["rr", "none"])
@pytest.mark.parametrize("v6only", [False, True], ids=["ipv6only-false", "ipv6only-true"])
def test_cluster_net_listen_ipv6only(run_script, policy, v6only):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy, "V6ONLY": int(v6only)},
                        timeout=30)
    assert result.returncode == 0, result.stderr
    addresses = result.report("addresses")
    assert result.report("all_equal") is True, addresses
    first = addresses[0]
    assert first["address"] == "::"
    assert first["address_type"] == 6
    assert first["fd"] is None
    assert first["port"] > 0
    if v6only:
        assert first["port"] == result.report("fixed_port")
        assert result.report("v4_listen") == "ok", "the shared [::] socket is not v6-only"
    else:
        assert result.report("v4_connect") == "ok", "the shared [::] socket is not dual-stack"
    assert result.all("exit") == [[0, None]] * 3
