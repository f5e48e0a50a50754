"""Port of Node's test/sequential/test-cluster-send-handle-large-payload.js.

Node: the primary sends ``{payload: 'a'.repeat(800004)}`` together with a
connected socket; the worker checks both and sends both back (with a send
callback). Asserts the payload is intact both ways, the handle arrives as a
socket both ways, and the primary's server saw exactly one connection.

Python translation: the same 800,004-character message plus a connected socket
in one ``send``, in both directions; the worker's send callback reports
``None``. To check that each fd stays matched with *its* frame when frames span
many reads, the primary sends three messages back to back: big + socket A,
small without a handle, big (different payload) + socket B; each echo must carry
the right payload and a socket for the right connection (same local address as
the client socket the primary sent), and the message without a handle must come
back without one. The primary's server accepts exactly two connections.
"""

from __future__ import annotations

SCRIPT = r"""
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

SIZE = 800004

if cluster.is_primary:
    deadline(25)
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def acceptor():
        for _ in range(2):
            accepted.append(server.accept()[0])

    threading.Thread(target=acceptor, daemon=True).start()
    clients = [socket.create_connection(server.getsockname(), timeout=10) for _ in range(2)]
    expected = {
        0: ("a" * SIZE, clients[0].getsockname()),
        1: ("small", None),
        2: ("b" * SIZE, clients[1].getsockname()),
    }
    worker = cluster.fork()
    results = {}

    def on_online():
        worker.send({"id": 0, "payload": expected[0][0]}, clients[0])
        worker.send({"id": 1, "payload": expected[1][0]})
        worker.send({"id": 2, "payload": expected[2][0]}, clients[1])

    def on_message(message, handle):
        if "worker_callback" in message:
            report(worker_callbacks=message["worker_callback"])
            return
        payload, name = expected[message["id"]]
        local = None  # the echoed handle is a copy of the client socket we sent
        if isinstance(handle, socket.socket):
            local = handle.getsockname()
            handle.close()
        results[message["id"]] = {
            "payload_ok": message["payload"] == payload,
            "payload_len": len(message["payload"]),
            "is_socket": isinstance(handle, socket.socket) if name is not None else handle is None,
            "same_connection": local == name,
        }
        if len(results) == 3:
            report(results={str(k): v for k, v in sorted(results.items())})
            worker.disconnect()

    def on_exit(code, signal):
        server.setblocking(False)
        try:
            server.accept()
            extra = True
        except BlockingIOError:
            extra = False
        report(exit=[code, signal], accepted=len(accepted), extra_connection=extra)
        server.close()

    worker.on("online", must_call(on_online, 1, "online"))
    worker.on("message", must_call(on_message, 4, "message"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    callbacks = []
    lock = threading.Lock()

    def sent(err):
        with lock:
            callbacks.append(repr(err) if err is not None else None)
            if len(callbacks) == 3:
                cluster.worker.send({"worker_callback": callbacks})

    def on_message(message, handle):
        size = len(message["payload"])
        ok = message["payload"] in ("a" * SIZE, "small", "b" * SIZE)
        kind = type(handle).__name__
        report(**{f"worker_saw_{message['id']}": [size, ok, kind]})
        cluster.worker.send(message, handle, sent)
        if handle is not None:
            handle.close()

    cluster.worker.on("message", on_message)
"""


def test_cluster_send_handle_large_payload(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("worker_saw_0") == [800004, True, "socket"]
    assert result.report("worker_saw_1") == [5, True, "NoneType"]
    assert result.report("worker_saw_2") == [800004, True, "socket"]
    assert result.report("worker_callbacks") == [None, None, None]
    results = result.report("results")
    for key, length in (("0", 800004), ("1", 5), ("2", 800004)):
        assert results[key] == {"payload_ok": True, "payload_len": length, "is_socket": True,
                                "same_connection": True}, (key, results[key])
    assert result.report("exit") == [0, None]
    assert result.report("accepted") == 2
    assert result.report("extra_connection") is False
