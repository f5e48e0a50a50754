"""Operating a ``pycluster run`` master (SPEC section 4), with real processes.

Rolling reload under keep-alive load (rr and none) loses no request; a reload
whose new code cannot boot keeps the old generation; a second concurrent
reload is refused; ``--timeout`` aborts a worker whose asyncio loop is blocked
(faulthandler stack in ``pycluster logs``) and replaces it; ``--max-memory``
replaces a bloated worker without failing requests; a stop while a replacement
boots (reload or ``--max-memory``) finishes, a replacement whose slot was
scaled away is stopped, and a ``--max-memory`` below the app's footprint is
warned about once and stops replacing; sd_notify messages
(READY / RELOADING / STOPPING / WATCHDOG) reach a real NOTIFY_SOCKET; socket
activation through the real ``systemd-socket-activate``; ``--daemon`` with
``--pidfile``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import time

import pytest

from cli_support import CLI, ThreadedLoad, group_pids, http_get, pid_gone, pyc, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"

# An asyncio HTTP app on the master's first listener. GET /hang blocks the loop
# in serve_client; GET /grow keeps 200 MB. Every answer is JSON naming the pid
# and the LISTEN_FDS the worker sees. On SIGTERM it stops accepting and lets the
# requests in flight finish.
OPS_APP = """
    import asyncio
    import json
    import os
    import signal
    import time

    import pycluster as cluster

    HOARD = []

    async def serve_client(reader, writer):
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\\r\\n", b"\\n", b""):
                pass
            parts = line.split()
            path = parts[1].decode() if len(parts) > 1 else "/"
            if path == "/hang":
                time.sleep(3600)  # blocks the event loop: no heartbeat any more
            if path == "/grow":
                HOARD.append(b"\\x01" * (200 * 2**20))
            body = json.dumps({"pid": os.getpid(), "listen_fds": os.environ.get("LISTEN_FDS"),
                               "path": path}).encode()
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
            await writer.drain()
        finally:
            writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        inflight = set()

        def track(reader, writer):
            task = asyncio.ensure_future(serve_client(reader, writer))
            inflight.add(task)
            task.add_done_callback(inflight.discard)

        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        servers = [await asyncio.start_server(track, sock=s) for s in cluster.listeners()]
        print("ops worker up", flush=True)
        await stop.wait()
        for server in servers:
            server.close()
        if inflight:
            await asyncio.wait(set(inflight), timeout=5)
"""


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (json.loads(body) if resp.getheader("content-type") == "application/json" else {})
    finally:
        conn.close()


class KeepAliveLoad(ThreadedLoad):
    """``n`` threads, each keeping one HTTP/1.1 keep-alive connection busy; failures counted by kind.

    A response carrying ``Connection: close`` (a draining worker) ends that connection normally; the
    thread opens a new one. Anything else that loses a request is a failure."""

    KINDS = ("refused", "reset", "eof", "timeout", "non200", "other")

    def __init__(self, port: int, n: int = 8):
        self.port = port
        self.ok = 0
        self.failures = {kind: 0 for kind in self.KINDS}
        self.examples: list[str] = []
        super().__init__(n)

    def _fail(self, kind: str, detail: str) -> None:
        with self.lock:
            self.failures[kind] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {detail}")

    def _run(self) -> None:
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    self._fail("non200", str(resp.status))
                else:
                    with self.lock:
                        self.ok += 1
                if resp.will_close:
                    conn.close()
                    conn = None
                continue
            except ConnectionRefusedError as exc:
                self._fail("refused", repr(exc))
            except (http.client.RemoteDisconnected, http.client.IncompleteRead, http.client.BadStatusLine) as exc:
                self._fail("eof", repr(exc))
            except (ConnectionResetError, BrokenPipeError) as exc:
                self._fail("reset", repr(exc))
            except TimeoutError as exc:
                self._fail("timeout", repr(exc))
            except Exception as exc:  # noqa: BLE001 - every lost request counts
                self._fail("other", repr(exc))
            conn.close()
            conn = None
        if conn is not None:
            conn.close()

    def requests_done(self) -> int:
        with self.lock:
            return self.ok + sum(self.failures.values())


# -- 1. rolling reload under load ------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["rr", "none"])
def test_rolling_reload_under_keepalive_load_loses_nothing(pyc, free_port, policy):
    master = pyc.start(HELLO, "-w", "4", "-b", f"127.0.0.1:{free_port}", "--policy", policy)
    assert master.wait_ready() == 4
    before = master.status()
    old_pids = {w["pid"] for w in before["workers"]}
    assert before["generation"] == 1 and len(old_pids) == 4, before

    with KeepAliveLoad(free_port, 8) as load:
        wait_until(lambda: load.ok >= 200, 10, "traffic flowing before the reload",
                   lambda: f"{load.ok} ok, {load.failures} {load.examples}")
        reload = pyc.cli("reload", "-n", "app", "--wait", timeout=30)
        at_reload_end = load.requests_done()
        wait_until(lambda: load.requests_done() >= at_reload_end + 200, 10, "traffic after the reload",
                   lambda: f"{load.ok} ok, {load.failures} {load.examples}")

    assert reload.returncode == 0, f"reload failed\n{reload.stdout}\n{reload.stderr}\n{master.output()}"
    after = master.status()
    new_pids = {w["pid"] for w in after["workers"]}
    assert after["generation"] == 2, after
    assert len(after["workers"]) == 4 and all(w["generation"] == 2 for w in after["workers"]), after
    assert len(new_pids) == 4 and not (new_pids & old_pids), (old_pids, after)
    wait_until(lambda: all(pid_gone(pid) for pid in old_pids), 10, "the old workers gone")
    assert load.failures == {kind: 0 for kind in KeepAliveLoad.KINDS}, \
        f"{load.failures} of {load.requests_done()} requests; e.g. {load.examples}"
    assert load.ok > 400


# -- 2. broken code keeps the old generation -------------------------------------------------------

def test_reload_with_broken_code_keeps_the_old_generation(pyc, free_port):
    app = pyc.write("reapp.py", "from pycluster.examples.hello import main\n")
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    master = pyc.start("reapp:main", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--boot-timeout", "10", env=env)
    master.wait_ready()
    before = master.status()
    pids = sorted(w["pid"] for w in before["workers"])

    app.write_text('raise RuntimeError("broken")\n')
    reload = pyc.cli("reload", "-n", "app", "--wait", env=env, timeout=20)
    assert reload.returncode != 0, f"{reload.stdout}\n{reload.stderr}"
    assert "broken" in reload.stderr, f"stdout:\n{reload.stdout}\nstderr:\n{reload.stderr}"

    after = master.wait_status(lambda st: st["state"] == "running", 5, "the master back to running")
    assert after["generation"] == 1, after
    assert sorted(w["pid"] for w in after["workers"]) == pids, (pids, after)
    assert all(w["generation"] == 1 and w["state"] == "listening" for w in after["workers"]), after
    for _ in range(10):
        code, headers, _body = http_get(free_port)
        assert code == 200 and int(headers["x-pid"]) in pids, headers


# -- 3. one reload at a time -----------------------------------------------------------------------

def test_a_second_concurrent_reload_is_refused(pyc, free_port):
    pyc.write("slowapp.py", """
        import time
        time.sleep(1)  # a slow import: every new worker takes >= 1 s to boot
        from pycluster.examples.hello import main
    """)
    master = pyc.start("slowapp:main", "-w", "1", "-b", f"127.0.0.1:{free_port}")
    master.wait_ready()

    first = pyc.cli("reload", "-n", "app", "--no-wait", timeout=10)
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr}"
    second = pyc.cli("reload", "-n", "app", "--no-wait", timeout=10)
    assert second.returncode != 0, f"second reload accepted:\n{second.stdout}\n{second.stderr}"
    assert "already" in (second.stderr + second.stdout).lower(), f"{second.stdout}\n{second.stderr}"

    # The first one still completes.
    master.wait_status(lambda st: st["generation"] == 2 and st["state"] == "running", 15, "generation 2")


# -- 4. heartbeat timeout --------------------------------------------------------------------------

def test_worker_blocking_its_loop_is_aborted_with_a_stack_and_replaced(pyc, free_port):
    pyc.write("opsapp.py", OPS_APP)
    master = pyc.start("opsapp:main", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--timeout", "1")
    master.wait_ready()
    old_pids = {w["pid"] for w in master.status()["workers"]}

    # The answer to GET /hang never comes: the worker that took it blocks its loop for an hour.
    hang = socket.create_connection(("127.0.0.1", free_port), timeout=5)
    hang.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")

    def replaced():
        st = master.status()
        new = [w for w in st["workers"] if w["pid"] not in old_pids]
        if len(st["workers"]) == 2 and new and new[0]["restarts"] >= 1 and new[0]["state"] == "listening":
            return st, new[0]
        return None

    try:
        st, slot = wait_until(replaced, 15, "the hung worker replaced", master.output)
    finally:
        hang.close()
    assert slot["restarts"] == 1, slot
    assert isinstance(slot["last_exit"], dict) and slot["last_exit"].get("signal") == "SIGABRT", slot
    kept = [w for w in st["workers"] if w["pid"] in old_pids]
    assert len(kept) == 1 and kept[0]["restarts"] == 0, st
    (hung_pid,) = old_pids - {kept[0]["pid"]}
    assert pid_gone(hung_pid)

    def stack_in_logs():
        out = pyc.cli("logs", "-n", "app", "--lines", "500").stdout
        return out if "in serve_client" in out else None

    wait_until(stack_in_logs, 5, "the faulthandler stack (naming serve_client) in `pycluster logs`",
               lambda: pyc.cli("logs", "-n", "app", "--lines", "500").stdout)
    pids = {w["pid"] for w in st["workers"]}
    for _ in range(10):
        code, body = get(free_port)
        assert code == 200 and body["pid"] in pids, body


# -- 5. --max-memory -------------------------------------------------------------------------------

def test_worker_over_max_memory_is_replaced_without_failing_requests(pyc, free_port):
    pyc.write("opsapp.py", OPS_APP)
    master = pyc.start("opsapp:main", "-w", "1", "-b", f"127.0.0.1:{free_port}", "--max-memory", "100M")
    master.wait_ready()
    old = master.status()["workers"][0]

    code, body = get(free_port, "/grow")
    assert code == 200 and body["pid"] == old["pid"], body
    failures: list[str] = []
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            code, body = get(free_port)
            if code != 200:
                failures.append(f"status {code}")
        except OSError as exc:
            failures.append(repr(exc))
        st = master.status()
        w = st["workers"][0]
        if w["pid"] != old["pid"] and w["state"] == "listening" and pid_gone(old["pid"]):
            break
    else:
        pytest.fail(f"the bloated worker was not replaced within 15 s\n{master.output()}")
    assert w["restarts"] >= 1, st
    assert len(st["workers"]) == 1, st
    assert not failures, failures
    code, body = get(free_port)
    assert code == 200 and body["pid"] == w["pid"], body


# -- 6. sd_notify ----------------------------------------------------------------------------------

class NotifySocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict] = []

    def next(self, want: str, timeout: float = 10) -> dict:
        """Read datagrams until one has ``want`` (e.g. "READY=1"); return it as a dict."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {want} within {timeout}s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)
            key, value = want.split("=", 1)
            if fields.get(key) == value:
                return fields

    def close(self):
        self.sock.close()


def test_sd_notify_ready_reloading_stopping_and_watchdog(pyc, free_port):
    notify = NotifySocket(pyc.runtime_dir.parent / "notify.sock")
    try:
        master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}",
                           env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
        ready = notify.next("READY=1")
        st = master.status()
        assert sum(w["state"] == "listening" for w in st["workers"]) == 2, ("READY=1 before the workers", st)
        assert ready.get("MAINPID", str(master.pid)) == str(master.pid), ready

        # WATCHDOG=1, repeatedly, well within WATCHDOG_USEC.
        beats = []
        for _ in range(3):
            notify.next("WATCHDOG=1", timeout=2)
            beats.append(time.monotonic())
        assert beats[-1] - beats[0] < 1.0, beats

        reload = pyc.cli_start("reload", "-n", "app", "--wait")
        reloading = notify.next("RELOADING=1")
        usec = reloading.get("MONOTONIC_USEC", "")
        assert usec.isdigit(), reloading
        assert abs(int(usec) / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 10, reloading
        notify.next("READY=1")  # after RELOADING=1: the new generation is complete
        assert pyc.finish(reload, 20).returncode == 0
        assert master.status()["generation"] == 2

        stop = pyc.cli("stop", "-n", "app")
        assert stop.returncode == 0, stop.stderr
        notify.next("STOPPING=1")
        assert master.wait_exit(15) == 0
    finally:
        notify.close()


@pytest.mark.timeout(40)
def test_a_notify_socket_nobody_reads_never_blocks_the_master(pyc, free_port):
    """Issue 12 item 13: a NOTIFY_SOCKET whose reader stalls (its queue full)
    must not block the master in sendto: the notifications are dropped (and
    counted, logged once), status answers and HTTP is served."""
    notify = NotifySocket(pyc.runtime_dir.parent / "stalled.sock")
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    try:
        queued = 0
        while True:  # fill the reader's queue (net.unix.max_dgram_qlen datagrams): it never reads
            try:
                filler.sendto(b"FILLER=1", notify.path)
            except BlockingIOError:
                break
            queued += 1
            assert queued < 100000, "the notify socket's queue never filled"
        master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}",
                           env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "100000"})
        master.wait_ready()
        for _ in range(5):  # across several watchdog beats (every 50 ms), each one dropped
            started = time.monotonic()
            st = master.request({"cmd": "status"}, timeout=3)
            assert st.get("ok") is True, st
            assert time.monotonic() - started < 2.0
            code, _headers, body = http_get(free_port)
            assert code == 200, body
        master.wait_line(r"sd_notify: .*dropped", timeout=10)
        assert sum("sd_notify" in line for line in master.stdout) == 1, "the drops are logged once"
        stop = pyc.cli("stop", "-n", "app")
        assert stop.returncode == 0, stop.stderr
        assert master.wait_exit(15) == 0
        assert master.find_line(r"sd_notify: \d+ notifications dropped in all"), master.output()
    finally:
        filler.close()
        notify.close()


# -- 7. socket activation --------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="no systemd-socket-activate")
def test_socket_activation_with_systemd_socket_activate(pyc, free_port):
    pyc.write("opsapp.py", OPS_APP)
    env = pyc.env()
    setenv = []
    for key in ("PYCLUSTER_RUNTIME_DIR", "PYTHONPATH", "PYTHONUNBUFFERED", "PATH", "HOME"):
        if key in env:
            setenv += ["-E", f"{key}={env[key]}"]
    activator = pyc.cli_start("-l", f"127.0.0.1:{free_port}", *setenv, *CLI, "run", "opsapp:main", "-w", "2",
                              "-n", "app", command=[shutil.which("systemd-socket-activate")])
    # The socket is listening as soon as the activator runs; the first request starts the service.
    wait_until(lambda: activator.poll() is not None or _can_connect(free_port), 10, "the activation socket")
    code, body = get(free_port, timeout=20)
    assert code == 200, body
    assert body["listen_fds"] is None, f"a worker sees LISTEN_FDS={body['listen_fds']}"

    control = pyc.runtime_dir / "app.sock"
    wait_until(control.exists, 10, "the master's control socket")
    st = pyc.cli("status", "-n", "app", "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert any(l.get("port") == free_port for l in status["listeners"]), status
    assert status["pid"] == activator.pid, (status["pid"], activator.pid)
    for _ in range(6):
        code, body = get(free_port)
        assert code == 200 and body["listen_fds"] is None, body
    assert pyc.cli("stop", "-n", "app").returncode == 0
    assert pyc.finish(activator, 15).returncode == 0


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- 8. --daemon and --pidfile ---------------------------------------------------------------------

def test_daemon_returns_when_ready_and_pidfile_is_exclusive(pyc, free_port):
    pidfile = pyc.dir / "app.pid"
    daemon_pid = None
    try:
        run = pyc.cli("run", "-d", "--pidfile", pidfile, HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}",
                      "-n", "app", timeout=20)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        code, headers, _ = http_get(free_port)  # answers at once: run -d returned only once ready
        assert code == 200
        daemon_pid = int(pidfile.read_text().strip())
        status = json.loads(pyc.cli("status", "-n", "app", "--json").stdout)
        assert status["pid"] == daemon_pid, (status["pid"], daemon_pid)
        assert int(headers["x-pid"]) in {w["pid"] for w in status["workers"]}

        with socket.socket() as probe:  # another free port: only the pidfile is in the way
            probe.bind(("127.0.0.1", 0))
            other_port = probe.getsockname()[1]
        second = pyc.cli("run", "-d", "--pidfile", pidfile, HELLO, "-w", "1", "-b", f"127.0.0.1:{other_port}",
                         "-n", "other", timeout=20)
        assert second.returncode != 0, f"{second.stdout}\n{second.stderr}"
        assert str(pidfile) in second.stderr, second.stderr
        assert int(pidfile.read_text().strip()) == daemon_pid

        stop = pyc.cli("stop", "-n", "app", timeout=20)
        assert stop.returncode == 0, stop.stderr
        wait_until(lambda: pid_gone(daemon_pid), 10, "the daemon gone")
        assert not pidfile.exists()
    finally:
        if daemon_pid is not None and not pid_gone(daemon_pid):
            try:
                os.killpg(os.getpgid(daemon_pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# -- 8. stop, scale and --max-memory racing a booting replacement (issue 12, items 4, 6, 23) ---------

# OPS_APP whose import takes BOOT_DELAY seconds and does not heed SIGTERM meanwhile (a slow C
# extension, say): a replacement still booting when the cluster stops leaves after the old worker.
SLOW_OPS = """
    import os
    import signal
    import time

    _heed = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(float(os.environ.get("BOOT_DELAY", "0")))
    signal.signal(signal.SIGTERM, _heed)

    from opsapp import main
"""


def slow_ops_master(pyc, port: int, *args: str, delay: float = 1.5):
    pyc.write("opsapp.py", OPS_APP)
    pyc.write("slowops.py", SLOW_OPS)
    master = pyc.start("slowops:main", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", *args,
                       env={"BOOT_DELAY": delay})
    master.wait_ready(20)
    return master


def test_stop_during_a_reload_finishes_while_a_replacement_boots(pyc, free_port):
    master = slow_ops_master(pyc, free_port, "-w", "1")
    reply = master.request({"cmd": "reload", "wait": False})
    assert reply["ok"], reply
    assert master.status()["state"] == "reloading"
    reply = master.request({"cmd": "stop"})
    assert reply["ok"], reply
    # The replacement leaves once its boot is over (or is SIGKILLed after --graceful-timeout 2).
    assert master.wait_exit(10) == 0, master.output()
    assert not master.control.exists()


def test_stop_during_a_max_memory_replacement_finishes(pyc, free_port):
    master = slow_ops_master(pyc, free_port, "-w", "1", "--max-memory", "100M")
    code, _body = get(free_port, "/grow")
    assert code == 200
    master.wait_line(r"over --max-memory 100 MiB; replacing it", 10)
    reply = master.request({"cmd": "stop"})
    assert reply["ok"], reply
    assert master.wait_exit(10) == 0, master.output()


def test_max_memory_replacement_racing_a_scale_down_leaves_no_untracked_worker(pyc, free_port):
    master = slow_ops_master(pyc, free_port, "-w", "1", "--max-memory", "100M")
    code, _body = get(free_port, "/grow")
    assert code == 200
    master.wait_line(r"over --max-memory 100 MiB; replacing it", 10)
    reply = master.request({"cmd": "scale", "workers": 0})
    assert reply["ok"], reply
    # The replacement finishes booting into a slot that no longer exists: it must go too.
    wait_until(lambda: group_pids(master.pid) == [master.pid], 15, "no process but the master",
               lambda: f"processes {group_pids(master.pid)}, status {master.status()}\n{master.output()}")
    st = master.status()
    assert st["workers"] == [] and st["workers_wanted"] == 0, st
    master.wait_line(r"no longer wanted", 5)


def test_max_memory_below_the_apps_footprint_warns_and_stops_replacing(pyc, free_port):
    master = pyc.start(HELLO, "-w", "1", "-b", f"127.0.0.1:{free_port}", "--max-memory", "1M")
    master.wait_ready()
    line = master.wait_line(r"worker \d+ \(pid \d+\) uses (\d+) MiB at its start, over --max-memory 1 MiB", 15)
    assert int(line.group(1)) > 1, line.group(0)
    st = master.wait_status(lambda st: st["workers"][0]["warning"], 5, "the warning in the status")
    worker = st["workers"][0]
    assert "--max-memory" in worker["warning"] and worker["restarts"] <= 1, worker
    # No more replacements: the same worker keeps serving over a few checks (one a second).
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        now = master.status()["workers"][0]
        assert (now["pid"], now["restarts"]) == (worker["pid"], worker["restarts"]), (worker, now)
        time.sleep(0.1)
    assert sum("at its start, over --max-memory" in line for line in master.stdout) == 1, master.output()
    assert http_get(free_port)[0] == 200
