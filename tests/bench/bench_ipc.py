"""IPC and fork latency of the pycluster engine (sections 1 and 2 of bench_engine.py).

Run by bench_engine.py as ``python tests/bench/bench_ipc.py [--quick]`` with
PYTHONPATH=src; prints one JSON line ``IPC_RESULT {...}``. The same file runs
as the primary and as its workers (Node style); a worker's role comes from
the BENCH_ROLE variable that fork(env=...) sets:

* ``echo``: sends every message back (round trips), counts ``{"op": "m"}``
  messages and answers ``{"op": "count?"}`` with the count (one-way
  primary -> worker), and on ``{"op": "blast", "n": N}`` sends N messages then
  ``{"op": "done"}`` (one-way worker -> primary).
* ``fork``: binds and listens on a plain TCP socket (127.0.0.1, port 0,
  shared through the primary), so 'listening' follows 'online'.

All waits are bounded; a stuck run exits 98 (``--deadline``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

import pycluster as cluster

if cluster.is_primary:
    # Only the primary: the fork -> online figure is the library's own boot,
    # not the cost of importing asyncio in the worker.
    import asyncio

SMALL = {"op": "ping", "i": 0, "pad": "0123456789abcdef"}


# -- worker side ------------------------------------------------------------------
def run_echo_worker() -> None:
    me = cluster.worker
    state = {"count": 0}

    def on_message(msg):
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "m":
            state["count"] += 1
        elif op == "count?":
            me.send({"op": "count", "n": state["count"]})
            state["count"] = 0
        elif op == "blast":
            out = {"op": "b", "i": 0, "pad": "0123456789abcdef"}
            for i in range(int(msg["n"])):
                out["i"] = i
                me.send(out)
            me.send({"op": "done"})
        else:
            me.send(msg)

    me.on("message", on_message)


def run_fork_worker() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    # The main program ends here; a connected worker stays until disconnected.


# -- primary side -----------------------------------------------------------------
class Waiter:
    """A future the cluster's message handler resolves (same loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.fut: asyncio.Future | None = None

    def arm(self) -> asyncio.Future:
        self.fut = self.loop.create_future()
        return self.fut

    def set(self, value) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(value)


async def bounded(aw, seconds: float, what: str):
    try:
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:
        raise SystemExit(f"bench_ipc: timed out waiting for {what} ({seconds} s)") from None


async def measure(args) -> dict:
    loop = asyncio.get_running_loop()
    echo = cluster.fork(env={"BENCH_ROLE": "echo"})
    serving = asyncio.ensure_future(cluster.serve())
    online = Waiter(loop)
    online.arm()
    echo.on("online", lambda: online.set(True))
    await bounded(online.fut, 30, "the echo worker's 'online'")

    inbox = Waiter(loop)
    rtt: list[int] = []
    ping = dict(SMALL)
    state = {"left": 0, "t0": 0, "received": 0}

    def on_message(msg):
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "ping":
            rtt.append(time.perf_counter_ns() - state["t0"])
            state["left"] -= 1
            if state["left"] <= 0:
                inbox.set(True)
                return
            ping["i"] += 1
            state["t0"] = time.perf_counter_ns()
            echo.send(ping)
        elif op == "b":
            state["received"] += 1
        else:
            inbox.set(msg)

    echo.on("message", on_message)
    result: dict = {}

    # 1a. small-message round trips (warm-up first, then the measured ones)
    for n, keep in ((200, False), (args.roundtrips, True)):
        rtt.clear()
        state["left"] = n
        fut = inbox.arm()
        state["t0"] = time.perf_counter_ns()
        echo.send(ping)
        await bounded(fut, 60, "round trips")
    rtt_us = sorted(x / 1000 for x in rtt)
    result["rtt_us_median"] = statistics.median(rtt_us)
    result["rtt_us_p90"] = rtt_us[int(len(rtt_us) * 0.9)]
    result["rtt_us_p99"] = rtt_us[int(len(rtt_us) * 0.99)]
    result["rtt_count"] = len(rtt_us)

    # 1b. one-way primary -> worker: send N, then ask for the count
    rates, sender_rates = [], []
    for _ in range(args.oneway_reps):
        msg = {"op": "m", "i": 0, "pad": "0123456789abcdef"}
        fut = inbox.arm()
        t0 = time.perf_counter()
        for i in range(args.oneway):
            msg["i"] = i
            echo.send(msg)
        t_sent = time.perf_counter()
        echo.send({"op": "count?"})
        reply = await bounded(fut, 60, "the worker's count")
        t1 = time.perf_counter()
        if reply.get("n") != args.oneway:
            raise SystemExit(f"bench_ipc: worker counted {reply.get('n')} of {args.oneway} messages")
        rates.append(args.oneway / (t1 - t0))
        sender_rates.append(args.oneway / (t_sent - t0))
    result["p2w_msgs_per_s"] = statistics.median(rates)
    result["p2w_msgs_per_s_runs"] = rates
    result["p2w_enqueue_msgs_per_s"] = statistics.median(sender_rates)
    result["oneway_n"] = args.oneway

    # 1c. one-way worker -> primary
    rates = []
    for _ in range(args.oneway_reps):
        state["received"] = 0
        fut = inbox.arm()
        t0 = time.perf_counter()
        echo.send({"op": "blast", "n": args.oneway})
        await bounded(fut, 60, "the worker's blast")
        t1 = time.perf_counter()
        if state["received"] != args.oneway:
            raise SystemExit(f"bench_ipc: received {state['received']} of {args.oneway} messages")
        rates.append(args.oneway / (t1 - t0))
    result["w2p_msgs_per_s"] = statistics.median(rates)
    result["w2p_msgs_per_s_runs"] = rates

    # 1d. 1 MiB message round trips
    big = {"op": "big", "data": "x" * (1 << 20)}
    big_ms = []
    for i in range(args.big_reps + 1):
        fut = inbox.arm()
        t0 = time.perf_counter()
        echo.send(big)
        reply = await bounded(fut, 60, "the 1 MiB echo")
        dt = (time.perf_counter() - t0) * 1000
        if len(reply.get("data", "")) != 1 << 20:
            raise SystemExit("bench_ipc: 1 MiB echo came back truncated")
        if i:  # the first one is a warm-up
            big_ms.append(dt)
    result["big_rtt_ms_median"] = statistics.median(big_ms)
    result["big_rtt_ms_runs"] = big_ms

    # 2. fork -> online -> listening, one worker at a time
    online_ms, listening_ms = [], []
    for _ in range(args.forks):
        got_online, got_listening, exited = loop.create_future(), loop.create_future(), loop.create_future()
        t0 = time.perf_counter()
        w = cluster.fork(env={"BENCH_ROLE": "fork"})
        w.on("online", lambda f=got_online: f.done() or f.set_result(time.perf_counter()))
        w.on("listening", lambda addr, f=got_listening: f.done() or f.set_result(time.perf_counter()))
        w.on("exit", lambda code, sig, f=exited: f.done() or f.set_result((code, sig)))
        t_online = await bounded(got_online, 30, "a forked worker's 'online'")
        t_listen = await bounded(got_listening, 30, "a forked worker's 'listening'")
        online_ms.append((t_online - t0) * 1000)
        listening_ms.append((t_listen - t0) * 1000)
        w.kill()
        await bounded(exited, 30, "a forked worker's exit")
    result["fork_online_ms_median"] = statistics.median(online_ms)
    result["fork_listening_ms_median"] = statistics.median(listening_ms)
    result["fork_online_ms_runs"] = online_ms
    result["fork_listening_ms_runs"] = listening_ms

    echo.disconnect()
    await bounded(serving, 30, "the cluster to stop")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roundtrips", type=int, default=2000)
    ap.add_argument("--oneway", type=int, default=20000, help="messages per one-way burst")
    ap.add_argument("--oneway-reps", type=int, default=3)
    ap.add_argument("--big-reps", type=int, default=10)
    ap.add_argument("--forks", type=int, default=20)
    ap.add_argument("--deadline", type=float, default=120.0, help="exit 98 if still running after this")
    args = ap.parse_args()
    timer = threading.Timer(args.deadline, lambda: os._exit(98))
    timer.daemon = True
    timer.start()
    result = asyncio.run(measure(args))
    result["policy"] = {1: "none", 2: "rr", 3: "reuseport"}.get(cluster.scheduling_policy)
    print("IPC_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if cluster.is_worker:
        # No sys.exit() here: a worker whose program ends stays until disconnected.
        {"echo": run_echo_worker, "fork": run_fork_worker}[os.environ.get("BENCH_ROLE", "")]()
    else:
        sys.exit(main())
