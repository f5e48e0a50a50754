"""Node's ``worker.disconnect()`` example: ask a worker to finish and leave,
and kill it if it has not exited within a timeout.

    python -m pycluster.examples.classic_disconnect [PORT]
"""

import asyncio
import os
import signal as signals
import socketserver
import sys
import threading

import pycluster as cluster

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
KILL_AFTER = float(os.environ.get("KILL_AFTER", 2.0))

if cluster.is_primary:
    worker = cluster.fork()

    def on_listening(address):
        worker.send("shutdown")
        worker.disconnect()
        # Node's setTimeout: handlers run on the primary's asyncio loop. A Python
        # worker leaves on the SIGTERM that follows its disconnect; one that
        # has not exited when the timer fires is killed.
        timer = asyncio.get_running_loop().call_later(KILL_AFTER, worker.kill, "SIGKILL")
        worker.on("exit", timer.cancel)

    worker.on("listening", on_listening)
    worker.on("exit", lambda code, sig: print(f"worker exited: code={code} signal={sig}"
                                              f" voluntary={worker.exited_after_disconnect}", flush=True))
    cluster.run()
else:
    class Echo(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    server = socketserver.TCPServer(("127.0.0.1", PORT), Echo)

    def on_message(msg):
        if msg == "shutdown":
            print("worker: shutting down gracefully", flush=True)

    cluster.worker.on("message", on_message)
    # The primary's SIGTERM (after the disconnect) ends serve_forever with SystemExit(0).
    signals.signal(signals.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()
