"""Port of Node's test/parallel/test-cluster-ipc-throw.js.

Node (SCHED_RR): the primary itself listens on port P and forks a worker told
to listen on P. The worker's server emits 'error'; its handler calls
``cluster.worker.disconnect()`` and then rethrows; a ``process.on
('uncaughtException')`` handler catches it. Asserts the error handler and the
uncaught-exception handler each run once, and the primary's 'exit' fires (then
it closes its server): disconnecting while handling the error does not throw
in the IPC layer.

Python translation: the worker's ``socket.create_server(("", P))`` raises
``OSError(EADDRINUSE)``; the ``except`` block (the error handler) calls
``cluster.worker.disconnect()`` and re-raises. Two flavours:

* ``thread``: the listen runs in a thread, like a Node callback; the app's
  ``threading.excepthook`` is the uncaught-exception handler and swallows the
  error, so (as in Node) the disconnect completes and the worker exits
  ``(0, None)``;
* ``main``: the listen runs in the main program; an uncaught exception there is
  fatal in Python. Two outcomes are correct, depending on which comes first:
  the exception reaches the app's ``sys.excepthook`` and the worker exits
  ``(1, None)``, or the disconnect completes first and its SIGTERM
  (``SystemExit(0)``, SPEC section 2) ends the worker ``(0, None)`` before
  the re-raise reaches the top. Never a signal death, never a hang.

In both, the primary gets 'exit', its own server still accepts a connection,
and it exits 0.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import errno
import os
import socket
import sys
import threading

import pycluster as cluster
from harness import deadline, must_call, report

cluster.scheduling_policy = cluster.SCHED_RR
FLAVOUR = os.environ["FLAVOUR"]

if cluster.is_primary:
    deadline(20)
    server = socket.create_server(("", 0))
    port = server.getsockname()[1]
    worker = cluster.fork({"PORT": port})

    def on_exit(code, signal):
        report(exit=[code, signal])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            server.accept()[0].close()
        report(primary_server_alive=True)
        server.close()

    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
    report(primary_done=True)
else:
    def listen():
        try:
            socket.create_server(("", int(os.environ["PORT"])))
        except OSError as exc:
            report(error_handler=errno.errorcode.get(exc.errno, exc.errno))
            cluster.worker.disconnect()
            raise

    def uncaught(name, exc):
        report(uncaught=[name, type(exc).__name__, getattr(exc, "errno", None) == errno.EADDRINUSE])

    if FLAVOUR == "thread":
        threading.excepthook = lambda args: uncaught("threading.excepthook", args.exc_value)
        threading.Thread(target=listen).start()
    else:
        previous = sys.excepthook

        def hook(exc_type, exc, tb):
            uncaught("sys.excepthook", exc)
            previous(exc_type, exc, tb)

        sys.excepthook = hook
        listen()
"""


@pytest.mark.parametrize("flavour", ["thread", "main"])
def test_cluster_ipc_throw(run_script, flavour):
    result = run_script(SCRIPT, env={"FLAVOUR": flavour}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.all("error_handler") == ["EADDRINUSE"]
    exit_status = result.report("exit")
    if flavour == "thread":
        assert result.all("uncaught") == [["threading.excepthook", "OSError", True]]
        assert exit_status == [0, None]
    elif result.all("uncaught"):
        assert result.all("uncaught") == [["sys.excepthook", "OSError", True]]
        assert exit_status == [1, None]
    else:
        assert exit_status == [0, None], "neither the exception nor the disconnect ended the worker"
    assert result.report("primary_server_alive") is True
    assert result.report("primary_done") is True
