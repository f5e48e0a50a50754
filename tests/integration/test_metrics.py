"""``--metrics ADDR``: /healthz, /readyz and /metrics served by the master.

The done-when of issue 15: a FastAPI app counting its requests with
``prometheus_client``, run with four workers, shows one exact total on
/metrics after 1,000 requests, three ``kill -9`` of workers and a reload;
the text is parsed with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_support import http_get, pyc, unused_port, wait_until  # noqa: F401

parser = pytest.importorskip("prometheus_client.parser")

COUNTING_APP = """
    import os
    from fastapi import FastAPI
    from prometheus_client import Counter, Gauge, Histogram

    REQUESTS = Counter("app_requests", "Requests served.", ["path"])
    LATENCY = Histogram("app_latency_seconds", "Request time.", buckets=(0.5, 1.0))
    PID = Gauge("app_pid", "This worker's pid.")
    PID.set(os.getpid())
    app = FastAPI()

    @app.get("/")
    def root():
        REQUESTS.labels(path="/").inc()
        LATENCY.observe(0.25)
        return {"pid": os.getpid()}
"""


def scrape(port: int) -> dict:
    """{family name: family} of /metrics, parsed by prometheus_client."""
    status, headers, body = http_get(port, path="/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in parser.text_string_to_metric_families(body.decode())}


def value(families: dict, family: str, sample: str, **labels: str) -> float | None:
    for s in families[family].samples if family in families else ():
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def hammer(port: int, n: int) -> None:
    def one(_i: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(n))) == {200}


OK_APP = "from fastapi import FastAPI\napp = FastAPI()\n"


def start_with_metrics(pyc, target: str, workers: int, *args: str, metrics_host: str = "127.0.0.1"):
    """``pycluster run target`` on a free port with ``--metrics`` on another: (master, port, metrics port)."""
    port, mport = unused_port(), unused_port()
    where = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
    master = pyc.start(target, "-w", str(workers), "-b", f"127.0.0.1:{port}", "--metrics", f"{where}:{mport}", *args)
    return master, port, mport


def test_a_counter_stays_exact_across_kills_and_a_reload(pyc):
    pyc.write("countapp.py", COUNTING_APP)
    master, port, mport = start_with_metrics(pyc, "countapp:app", 4)
    assert master.wait_ready(timeout=30) == 4
    seen: list[float] = []

    def total_is(expected: int):
        def check():
            families = scrape(mport)
            total = value(families, "app_requests", "app_requests_total", path="/")
            if total is not None:
                assert not seen or total >= seen[-1], f"the counter went backwards: {seen[-1]} -> {total}"
                seen.append(total)
            return families if total == expected else None
        return wait_until(check, 10, f"app_requests_total == {expected}", lambda: f"seen {seen[-5:]}")

    hammer(port, 1000)
    expected = 1000
    families = total_is(expected)
    assert value(families, "app_latency_seconds", "app_latency_seconds_count") == expected
    assert value(families, "app_latency_seconds", "app_latency_seconds_bucket", le="0.5") == expected
    workers = {s.labels["worker"] for s in families["app_pid"].samples}
    assert len(workers) == 4, families["app_pid"].samples  # a gauge per worker
    assert {s.labels["worker"] for s in families["process_resident_memory_bytes"].samples} == workers
    for _kill in range(3):
        victim = master.status()["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        master.wait_status(lambda st, pid=victim["pid"]: all(w["ready"] and w["pid"] != pid for w in st["workers"])
                           and len(st["workers"]) == 4, 15, "the killed worker replaced")
        total_is(expected)  # the dead worker's count is kept
        hammer(port, 50)
        expected += 50
        total_is(expected)
    result = pyc.cli("reload", "-n", "app", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    total_is(expected)
    hammer(port, 100)
    expected += 100
    families = total_is(expected)
    assert value(families, "app_latency_seconds", "app_latency_seconds_count") == expected
    assert value(families, "pycluster_worker_restarts", "pycluster_worker_restarts_total", cause="crash") == 3
    assert value(families, "pycluster_worker_restarts", "pycluster_worker_restarts_total", cause="reload") == 4
    assert value(families, "pycluster_reloads", "pycluster_reloads_total", outcome="ok") == 1
    assert value(families, "pycluster_workers", "pycluster_workers", state="listening") == 4
    assert value(families, "pycluster_workers_wanted", "pycluster_workers_wanted") == 4
    assert len(families["pycluster_worker_rss_bytes"].samples) == 4
    live = {str(w["id"]) for w in master.status()["workers"]}
    # The old generation's gauges go once its workers have left (they drain first).
    wait_until(lambda: {s.labels["worker"] for s in scrape(mport)["app_pid"].samples} == live, 10,
               f"app_pid only for the live workers {live}")
    assert value(scrape(mport), "app_requests", "app_requests_total", path="/") == expected


SLOW_SECOND = """
    import time
    import pycluster
    from fastapi import FastAPI

    if pycluster.worker.id == 2:
        time.sleep(60)  # never ready while the test runs
    app = FastAPI()
"""


def test_healthz_readyz_and_a_slow_client(pyc):
    pyc.write("slowapp.py", SLOW_SECOND)
    master, port, mport = start_with_metrics(pyc, "slowapp:app", 2)
    master.wait_line("worker 1 .* ready", timeout=20)
    assert http_get(mport, path="/healthz")[0] == 200
    status, _headers, body = http_get(mport, path="/readyz")
    assert status == 503 and b"not ready" in body, body
    # A client that connects and sends nothing, and one that sends an endless head, stall nobody.
    idle = socket.create_connection(("127.0.0.1", mport))
    flood = socket.create_connection(("127.0.0.1", mport))
    try:
        flood.sendall(b"GET /" + b"x" * 20000)
        started = time.monotonic()
        assert http_get(mport, path="/healthz")[0] == 200
        assert time.monotonic() - started < 1.0
        flood.settimeout(5)
        assert flood.recv(100).startswith(b"HTTP/1.1 413")
    finally:
        idle.close()
        flood.close()
    assert http_get(mport, path="/nope")[0] == 404
    families = scrape(mport)  # no app metrics (no prometheus_client in this app): the cluster's only
    assert value(families, "pycluster_workers_wanted", "pycluster_workers_wanted") == 2
    assert not [name for name in families if not name.startswith("pycluster_")]


def test_readyz_is_200_once_every_worker_is_ready(pyc):
    pyc.write("okapp.py", OK_APP)
    master, port, mport = start_with_metrics(pyc, "okapp:app", 2,
                                             metrics_host="::1" if socket.has_ipv6 and _v6() else "127.0.0.1")
    master.wait_ready(timeout=20)
    host = "::1" if socket.has_ipv6 and _v6() else "127.0.0.1"
    conn = http.client.HTTPConnection(host, mport, timeout=5)
    conn.request("GET", "/readyz")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"app: 2 of 2 workers ready\n")


def _v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_a_busy_metrics_address_fails_run_with_exit_1(pyc):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        mport = busy.getsockname()[1]
        master = pyc.run_to_end("okapp:app", "-w", "1", "--metrics", f"127.0.0.1:{mport}", timeout=15)
    assert master.proc.returncode == 1
    assert f"--metrics 127.0.0.1:{mport}" in master.output(), master.output()


def test_a_worker_silenced_by_sigstop_counts_as_a_heartbeat_restart(pyc):
    pyc.write("okapp.py", OK_APP)
    master, port, mport = start_with_metrics(pyc, "okapp:app", 2, "--timeout", "1")
    master.wait_ready(timeout=20)
    victim = master.status()["workers"][0]["pid"]
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_until(lambda: value(scrape(mport), "pycluster_worker_restarts", "pycluster_worker_restarts_total",
                                 cause="heartbeat") == 1, 15, "a heartbeat restart counted", master.output)
    finally:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    families = scrape(mport)
    assert value(families, "pycluster_worker_restarts", "pycluster_worker_restarts_total", cause="crash") == 0


DRAINING_APP = """
    import asyncio
    import pycluster
    from fastapi import FastAPI
    from prometheus_client import Counter, Gauge

    REQUESTS = Counter("app_requests", "Requests answered.")
    WAITING = Gauge("app_waiting", "Slow requests waiting for this worker's disconnect.")
    app = FastAPI()

    @app.get("/")
    def root():
        REQUESTS.inc()
        return {}

    @app.get("/slow")
    async def slow():
        WAITING.inc()
        for _ in range(300):  # answered once the worker left the cluster (a reload), 15 s at most
            if not pycluster.worker.is_connected():
                break
            await asyncio.sleep(0.05)
        REQUESTS.inc()  # counted after the worker's channel closed, while it drains
        return {"connected": pycluster.worker.is_connected()}
"""


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_requests_answered_while_draining_are_counted(pyc, preload):
    """A reload disconnects the old workers, which then answer their accepted
    requests: the counts made then reach the master (the metrics socket
    outlives the channel; the last samples are written at exit)."""
    pyc.write("drainapp.py", DRAINING_APP)
    master, port, mport = start_with_metrics(pyc, "drainapp:app", 2, *(["--preload"] if preload else []))
    assert master.wait_ready(timeout=30) == 2
    hammer(port, 20)
    slow = 6

    def get_slow(_i: int) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/slow", headers={"Connection": "close"})
            resp = conn.getresponse()
            assert resp.status == 200
            return resp.read()
        finally:
            conn.close()

    with ThreadPoolExecutor(slow) as pool:
        answers = pool.map(get_slow, range(slow))
        wait_until(lambda: sum(s.value for s in scrape(mport)["app_waiting"].samples) == slow, 10,
                   f"{slow} slow requests in the workers")
        result = pyc.cli("reload", "-n", "app", timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert set(answers) == {b'{"connected":false}'}  # every one answered after its worker's disconnect
    expected = 20 + slow
    wait_until(lambda: value(scrape(mport), "app_requests", "app_requests_total") == expected, 10,
               f"app_requests_total == {expected}",
               lambda: str(value(scrape(mport), "app_requests", "app_requests_total")))
    master.wait_status(lambda st: len(st["workers"]) == 2 and all(w["ready"] for w in st["workers"]), 15,
                       "the new generation alone")
    assert value(scrape(mport), "app_requests", "app_requests_total") == expected


def test_handoffs_are_counted_per_policy(pyc):
    pyc.write("okapp.py", OK_APP)
    master, port, mport = start_with_metrics(pyc, "okapp:app", 2, "--policy", "rr")
    master.wait_ready(timeout=20)
    before = scrape(mport)
    handed = value(before, "pycluster_handoffs", "pycluster_handoffs_total", policy="rr")
    assert handed is not None
    assert value(before, "pycluster_handoffs_reclaimed", "pycluster_handoffs_reclaimed_total",
                 policy="rr", reason="stalled") == 0
    for _ in range(30):  # one connection each
        assert http_get(port, path="/nope")[0] == 404
    after = scrape(mport)
    assert value(after, "pycluster_handoffs", "pycluster_handoffs_total", policy="rr") == handed + 30


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_worker_connections_counts_the_open_ones(pyc, policy):
    """pycluster_worker_connections is what each worker holds open now (every policy);
    pycluster_worker_handoffs_total (rr) only grows."""
    import http.client
    pyc.write("okapp.py", OK_APP)
    master, port, mport = start_with_metrics(pyc, "okapp:app", 2, "--policy", policy, "--keep-alive", "30")
    master.wait_ready(timeout=20)

    def open_total() -> float:
        fams = scrape(mport)
        return sum(s.value for s in fams["pycluster_worker_connections"].samples)

    held = []
    try:
        for _ in range(3):  # kept alive: each stays open after its answer
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/nope")
            assert conn.getresponse().read() is not None
            held.append(conn)
        wait_until(lambda: open_total() == 3, 10, "3 open connections on /metrics", lambda: str(open_total()))
    finally:
        for conn in held:
            conn.close()
    wait_until(lambda: open_total() == 0, 10, "no open connection left", lambda: str(open_total()))
    if policy == "rr":
        handed = sum(s.value for s in scrape(mport)["pycluster_worker_handoffs"].samples)
        assert handed >= 3
