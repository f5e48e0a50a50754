"""Port of Node's test/parallel/test-cluster-bind-twice.js.

Node: a supervisor starts two *independent* cluster primaries, A ('one') and
B ('two'), each with one worker; messages are relayed supervisor <-> primary
<-> worker. A's worker listens on the port and says READY; the supervisor tells
B to START; B's worker listens on the same port and its server gets 'error'
with code EADDRINUSE, which is relayed up to the supervisor. The supervisor
sends QUIT to both; each worker exits, each primary exits with its worker's
code, and both must be 0.

Python translation: the script run by ``run_script`` is the supervisor; it
starts the same file twice as two primaries (``one``/``two``) and relays JSON
lines over their stdin/stdout (each primary reads stdin in a thread once its
worker is online and hands lines to its loop). A's worker runs
``http.server.HTTPServer(("", 0))`` and reports its port; B's worker's
``HTTPServer(("", port))`` must raise ``OSError(EADDRINUSE)``, relayed up as
'EADDRINUSE'. On QUIT each worker ``sys.exit(0)``s; each primary then exits with
its worker's exit code. Asserts both trees exit 0 and nothing crashed.
"""

from __future__ import annotations

SCRIPT = r"""
import errno
import http.server
import json
import subprocess
import sys
import threading

import pycluster as cluster
from harness import deadline, must_call, report

ROLE = sys.argv[1] if len(sys.argv) > 1 else "supervisor"


def supervise():
    deadline(25)
    primaries = {name: subprocess.Popen([sys.executable, __file__, name], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
                 for name in ("one", "two")}
    events = []
    lock = threading.Lock()

    def send(name, msg):
        with lock:
            primaries[name].stdin.write(json.dumps(msg) + "\n")
            primaries[name].stdin.flush()

    def pump(name):
        for line in primaries[name].stdout:
            if line.startswith("@@ "):
                sys.stdout.write(line)  # a report from that tree: pass it on
                sys.stdout.flush()
                continue
            msg = json.loads(line)
            events.append([name, msg])
            if name == "one" and isinstance(msg, dict) and "ready" in msg:
                send("two", {"start": msg["ready"]})
            elif name == "two" and msg == "EADDRINUSE":
                send("one", "QUIT")
                send("two", "QUIT")

    threads = [threading.Thread(target=pump, args=(n,), daemon=True) for n in primaries]
    for t in threads:
        t.start()
    codes = {name: p.wait(timeout=20) for name, p in primaries.items()}
    for t in threads:
        t.join(timeout=5)
    report(events=events, primary_codes=codes)


def primary():
    deadline(20)
    worker = cluster.fork()

    def relay_stdin():
        for line in sys.stdin:
            cluster._engine.loop.call_soon_threadsafe(worker.send, json.loads(line))

    def on_online():
        threading.Thread(target=relay_stdin, daemon=True).start()

    def on_message(message):
        print(json.dumps(message), flush=True)

    worker.on("online", must_call(on_online, 1, "online"))
    worker.on("message", must_call(on_message, 1, "message"))
    worker.on("exit", must_call(lambda code, signal: report(**{f"{ROLE}_worker_exit": [code, signal]}),
                                1, "exit"))
    cluster.run()
    sys.exit(worker.exit_code)


class Handler(http.server.BaseHTTPRequestHandler):
    pass


def worker_one():
    def on_message(message):
        if message == "QUIT":
            sys.exit(0)

    cluster.worker.on("message", on_message)
    server = http.server.HTTPServer(("", 0), Handler)
    cluster.worker.send({"ready": server.server_address[1]})
    server.serve_forever()


def worker_two():
    def on_message(message):
        if message == "QUIT":
            sys.exit(0)
        try:
            http.server.HTTPServer(("", message["start"]), Handler)
        except OSError as exc:
            report(two_error=errno.errorcode.get(exc.errno, exc.errno))
            cluster.worker.send(errno.errorcode.get(exc.errno, str(exc.errno)))
        else:
            report(two_error=None)
            cluster.worker.send("LISTENING")

    cluster.worker.on("message", on_message)


if ROLE == "supervisor":
    supervise()
elif cluster.is_primary:
    primary()
elif ROLE == "one":
    worker_one()
else:
    worker_two()
"""


def test_cluster_bind_twice(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("two_error") == "EADDRINUSE"
    events = result.report("events")
    assert [name for name, _ in events] == ["one", "two"]
    assert events[0][1]["ready"] > 0
    assert events[1][1] == "EADDRINUSE"
    assert result.report("one_worker_exit") == [0, None]
    assert result.report("two_worker_exit") == [0, None]
    assert result.report("primary_codes") == {"one": 0, "two": 0}
