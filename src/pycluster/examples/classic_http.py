"""Node's classic cluster example, in Python: fork one worker per CPU, each
runs ``http.server`` on the same port; a dead worker is replaced.

    python -m pycluster.examples.classic_http [PORT]
"""

import http.server
import os
import sys

import pycluster as cluster

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
WORKERS = int(os.environ.get("WORKERS", os.cpu_count() or 2))


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello world from worker {cluster.worker.id}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if cluster.is_primary:
    print(f"Primary {os.getpid()} is running", flush=True)
    for _ in range(WORKERS):
        cluster.fork()

    def on_exit(worker, code, signal):
        if worker.exited_after_disconnect:
            return  # we asked it to leave (Ctrl-C, SIGTERM): nothing to replace
        print(f"worker {worker.pid} died ({signal or code}); restarting", flush=True)
        cluster.fork()

    cluster.on("exit", on_exit)
    cluster.run()
else:
    print(f"Worker {os.getpid()} started", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Hello).serve_forever()
