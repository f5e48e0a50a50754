"""N independent SO_REUSEPORT processes serving pycluster's demo HelloServer.

The baseline for "pycluster adds nothing after accept" (SPEC section 7): no
pycluster primary, no channel, no bind interception. This launcher starts N
plain ``python`` children; each creates its own listener exactly as a
pycluster worker's intercepted bind does under SCHED_REUSEPORT (proto
IPPROTO_TCP, SO_REUSEADDR, SO_REUSEPORT, TCP_NODELAY, backlog 2048) and serves
``pycluster.examples.hello.HelloServer`` on it.

The children run with every PYCLUSTER_* variable removed, so importing
pycluster there makes a (never used) primary, never a worker.

    python tests/bench/bench_reuseport_pair.py --workers 2 --port 8000

Prints ``worker N (pid P) listening on HOST:PORT`` per child (the line the
demo's primary prints). SIGTERM/SIGINT to the launcher is passed on to the
children (each drains like a demo worker); the launcher exits when they have.
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import socket
import subprocess
import sys

BACKLOG = 2048


class _Listener(socket.socket):
    """asyncio's create_server(sock=...) calls listen(100); keep the 2048 backlog."""

    def listen(self, backlog: int = BACKLOG) -> None:
        super().listen(max(backlog, BACKLOG))


def child(worker_id: int, host: str, port: int) -> int:
    import asyncio

    from pycluster.examples.hello import HelloServer

    sock = _Listener(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    print(f"worker {worker_id} (pid {os.getpid()}) listening on {host}:{port}", flush=True)
    server = HelloServer(worker_id)
    # serve(sock=...) in older demos, serve(socks=[...]) since it serves several listeners
    params = inspect.signature(server.serve).parameters
    asyncio.run(server.serve(socks=[sock]) if "socks" in params else server.serve(sock=sock))
    return 0


def launcher(workers: int, host: str, port: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCLUSTER_")}
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", str(i + 1),
                               "--host", host, "--port", str(port)], env=env)
             for i in range(workers)]

    def forward(signum: int, _frame) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max(codes) if any(codes) else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.host, a.port)
    return launcher(a.workers, a.host, a.port)


if __name__ == "__main__":
    sys.exit(main())
