"""Node's "count requests in the primary" example: workers tell the primary
about each request with a message; the primary keeps the total.

    python -m pycluster.examples.classic_count [PORT]
"""

import http.server
import os
import sys

import pycluster as cluster

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
WORKERS = int(os.environ.get("WORKERS", 2))

if cluster.is_primary:
    requests = 0

    def count(worker, message):
        global requests
        if message.get("cmd") == "notifyRequest":
            requests += 1
            print(f"requests = {requests}", flush=True)

    cluster.on("message", count)
    for _ in range(WORKERS):
        cluster.fork()
    cluster.run()
else:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            cluster.worker.send({"cmd": "notifyRequest"})
            body = b"hello world\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", PORT), Hello).serve_forever()
