"""Port of Node's test-net-listen-handle-in-cluster-1.js.

Python translation: the primary listens on 127.0.0.1:0 and sends the
listening socket to the worker as a handle with ``worker.send(None,
handle)`` - a plain ``socket.socket``, and (second case) an asyncio
``Server`` from ``asyncio.start_server`` (created with start_serving=False
so that the primary does not take the worker's test connection) under
``await cluster.serve()``.
The worker's 'message' handler receives (None, handle): the handle is a
``socket.socket`` on the same port, already listening; the worker calls
``listen()`` on it (Node creates a server on the handle), and a connection
to the port is accepted on it. None of this queries the primary
(``pycluster.child.intercept.listen_requests == 0``, no 'listening' event). The worker
then disconnects and exits (0, None).
"""

from __future__ import annotations

import pytest

SCRIPT = """
import asyncio
import socket
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)

    def start(worker, handle, port):
        worker.on("online", must_call(lambda: report(send_returned=worker.send(None, handle)), 1))
        worker.on("message", must_call(lambda message: report(worker_saw=message, primary_port=port), 1))
        worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
        cluster.on("listening", lambda w, address: report(unexpected_listening=address.to_dict()))

    if KIND == "socket":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        start(cluster.fork(), sock, sock.getsockname()[1])
        report(primary_rc=cluster.run())
    else:
        async def main():
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            # start_serving=False: the primary must not race the worker for
            # the connection the worker makes to the shared socket.
            server = await asyncio.start_server(lambda r, w: w.close(), sock=sock, start_serving=False)
            start(cluster.fork(), server, server.sockets[0].getsockname()[1])
            return await cluster.serve()

        report(primary_rc=asyncio.run(main()))
else:
    from pycluster.child import intercept as net

    def on_message(message, handle):
        info = {"message": message, "type": type(handle).__name__}
        if isinstance(handle, socket.socket):
            info["accepting"] = bool(handle.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            handle.listen()
            port = handle.getsockname()[1]
            info["port"] = port
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            handle.settimeout(5)
            conn, _ = handle.accept()
            info["accepted"] = conn.getsockname()[1] == port
            conn.close()
            client.close()
        info["listen_requests"] = net.listen_requests
        cluster.worker.send(info)
        cluster.worker.disconnect()

    cluster.worker.on("message", on_message)
"""


@pytest.mark.parametrize("kind", ["socket", "asyncio-server"])
def test_listening_socket_sent_as_handle_is_usable(run_script, kind):
    res = run_script(f"KIND = {kind!r}\n" + SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.report("send_returned") is True
    saw = res.report("worker_saw")
    assert saw == {"message": None, "type": "socket", "accepting": True, "port": res.report("primary_port"),
                   "accepted": True, "listen_requests": 0}
    assert res.all("unexpected_listening") == []
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
