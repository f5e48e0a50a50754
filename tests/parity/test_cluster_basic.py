"""Port of Node's test/parallel/test-cluster-basic.js.

One worker runs an HTTP server on 127.0.0.1 port 0; the primary kills it on
cluster 'listening'. Checked: the worker-id variable is gone from the
worker's environment and a plain child of a worker is not a worker; fork()
returns a ``cluster.Worker`` with id 1 (already in ``cluster.workers``);
cluster fork/online/listening/exit fire once each with the same Worker, which
is in state none/online/listening/dead at those moments; Worker online gets no
argument, listening exactly one ``Address``, exit exactly ``(code, signal)``
equal to ``worker.exit_code`` / ``worker.signal_code``. Also checked (NODE_PARITY
0.1 rule 1, derived from Node's implementation): each Worker event is
emitted before the matching cluster event.

Python translation:
- Node's "an env key inherited through the prototype is not a worker" has no
  Python equivalent (os.environ has no prototype); the nearest check is that a
  plain subprocess started by a worker (whose env was cleaned at start-up) is
  a primary.
- Node's 4-key address object is the frozen ``Address`` dataclass with exactly
  the fields address, port, address_type (4) and fd (None).
- ``worker.kill()`` follows SPEC section 2, not Node >= 15: it disconnects
  first, then sends SIGTERM, which a plain worker turns into exit code 0; so
  exit is ``(0, None)`` and ``exited_after_disconnect`` is True.
"""

from __future__ import annotations

PRIMARY = r"""
import http.server
import os
import subprocess
import sys

import pycluster as cluster
from harness import deadline, must_call, report


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if cluster.is_primary:
    deadline(20)
    report(primary_env_has_id="PYCLUSTER_WORKER_ID" in os.environ)
    states = {}
    cluster_args = {}
    worker_args = {}
    order = []

    def cluster_event(name):
        def handler(w, *args):
            order.append(f"cluster {name}")
            states[name] = str(w.state)
            cluster_args[name] = (w is worker, len(args))
            if name == "listening":
                w.kill()
            if name == "exit":
                report(states=states, cluster_args=cluster_args, order=order)
        return must_call(handler, 1, name=f"cluster {name}")

    for name in ("fork", "online", "listening", "exit"):
        cluster.on(name, cluster_event(name))

    worker = cluster.fork()
    report(is_worker_instance=isinstance(worker, cluster.Worker), id=worker.id,
           in_workers=cluster.workers.get(1) is worker, state_after_fork=str(worker.state))

    def on_online(*args):
        order.append("worker online")
        worker_args["online"] = len(args)

    def on_listening(*args):
        order.append("worker listening")
        addr = args[0]
        worker_args["listening"] = len(args)
        report(address_fields=sorted(k for k in ("address", "address_type", "fd", "port") if hasattr(addr, k)),
               address=addr.address, address_type=addr.address_type, fd=addr.fd,
               port=addr.port, port_is_int=type(addr.port) is int)

    def on_exit(*args):
        order.append("worker exit")
        worker_args["exit"] = len(args)
        report(worker_args=worker_args, exit_args=list(args),
               exit_attrs=[worker.exit_code, worker.signal_code],
               exited_after_disconnect=worker.exited_after_disconnect,
               pid_alive=alive(worker.pid))

    worker.on("online", must_call(on_online, 1, name="worker online"))
    worker.on("listening", must_call(on_listening, 1, name="worker listening"))
    worker.on("exit", must_call(on_exit, 1, name="worker exit"))
    report(rc=cluster.run())
else:
    report(worker_env_has_id="PYCLUSTER_WORKER_ID" in os.environ)
    child = subprocess.run([sys.executable, "-c",
                            "import pycluster; print(pycluster.is_primary, pycluster.is_worker)"],
                           capture_output=True, text=True, timeout=10)
    report(grandchild=child.stdout.split(), grandchild_rc=child.returncode)
    http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler).serve_forever()
"""


def test_cluster_basic(run_script):
    res = run_script(PRIMARY, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("rc") == 0
    assert res.report("primary_env_has_id") is False
    assert res.report("worker_env_has_id") is False
    assert res.report("grandchild") == ["True", "False"]
    assert res.report("grandchild_rc") == 0
    assert res.report("is_worker_instance") is True
    assert res.report("id") == 1
    assert res.report("in_workers") is True
    assert res.report("state_after_fork") == "none"
    assert res.report("states") == {"fork": "none", "online": "online",
                                    "listening": "listening", "exit": "dead"}
    # every cluster event got the forked Worker object; exit carried (code, signal)
    assert res.report("cluster_args") == {"fork": [True, 0], "online": [True, 0],
                                          "listening": [True, 1], "exit": [True, 2]}
    assert res.report("worker_args") == {"online": 0, "listening": 1, "exit": 2}
    # NODE_PARITY 0.1 rule 1 (implementation-derived): the Worker event comes first
    assert res.report("order") == ["cluster fork", "worker online", "cluster online",
                                   "worker listening", "cluster listening",
                                   "worker exit", "cluster exit"]
    assert res.report("address_fields") == ["address", "address_type", "fd", "port"]
    assert res.report("address") == "127.0.0.1"
    assert res.report("address_type") == 4
    assert res.report("fd") is None
    assert res.report("port_is_int") is True
    assert 1 <= res.report("port") <= 65535
    assert res.report("exit_args") == res.report("exit_attrs") == [0, None]
    assert res.report("exited_after_disconnect") is True
    assert res.report("pid_alive") is False
