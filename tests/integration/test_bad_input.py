"""Bad input to a running master and to ``pycluster run`` (SPEC sections 3 and 5, RELIABILITY 2.12/2.17).

Control socket, one master (demo app, 2 workers) for the whole module: every malformed request of
a catalogue (truncated JSON, a 10 MB line over the 1 MiB cap, wrong types for every field of every
verb, unknown verbs, JSON that is not an object, 100000 nested lists, invalid UTF-8, NUL bytes,
clients that hang up) gets one error reply within 1 s, or a clean close where no reply is possible,
while another client is served meanwhile; the requests SPEC names (too large, bad JSON, unknown
command) also close the connection. A slow writer (one byte per 100 ms) blocks nobody and is cut
off by the read timeout; more idle connections than the client bound get a clear refusal and
never a hang. Afterwards the master answers status with nothing changed (same workers, wanted
count, generation), serves HTTP, and holds as many file descriptors as before.

Config: for every setting in ``pycluster.master.config.SETTINGS``, a ``pycluster.toml`` with a
wrong-typed value, and one with an out-of-range value where the setting has a range, makes
``pycluster run`` exit 2, before starting any worker, with a message naming the file and the key.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli_support import Cluster, exchange, http_get, pid_gone, pyc, wait_until  # noqa: F401  (pyc: fixture)
from pycluster.control import commands
from pycluster.control.server import MAX_CLIENTS, READ_TIMEOUT
from pycluster.master import config

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"
REPLY_WITHIN = 1.0  # seconds a bad request may take to get its error reply
STATUS = b'{"cmd": "status"}\n'


# -- helpers ------------------------------------------------------------------------------------------

def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_listing(pid: int) -> str:
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return "\n".join(out)


def open_control_connections(pid: int, path: Path) -> int:
    """Accepted (not listening) sockets on the control path that process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    with open("/proc/net/unix") as fh:
        next(fh)
        rows = [parts for parts in (line.split() for line in fh) if len(parts) >= 8 and parts[6] in inodes]
    # The control socket is bound under a private name in the same directory
    # and renamed over the public one: accepted sockets carry the bound name.
    names = {parts[7] for parts in rows if parts[3] == "00010000"
             and (parts[7] == str(path) or os.path.dirname(parts[7]) == str(path.parent))}
    return sum(1 for parts in rows if parts[7] in names and parts[3] != "00010000")


def connect(path: Path, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(os.fspath(path))
    return sock


def send_bad(path: Path, payload: bytes, *, shut_write: bool = False, hang_up: bool = False,
             timeout: float = 5.0) -> tuple[list[dict], float | None, bool]:
    """Send ``payload``; return (reply lines, seconds until the first reply or the close, closed?).

    ``hang_up``: close at once after sending, reading nothing (no reply possible)."""
    sock = connect(path, timeout)
    start = time.monotonic()
    try:
        try:
            sock.sendall(payload)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the master answered an oversized request and hung up before we finished
        if hang_up:
            return [], None, True
        data, took, closed = b"", None, False
        end = start + timeout
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                break
            if took is None:
                took = time.monotonic() - start
            if not chunk:
                closed = True
                break
            data += chunk
            if b"\n" in data:
                sock.settimeout(2.0)  # did the master close the connection after its reply?
    finally:
        sock.close()
    return [json.loads(raw) for raw in data.splitlines() if raw.strip()], took, closed


class Bystander:
    """Another client asking for status in a loop while a bad request is in flight."""

    def __init__(self, master):
        self.master = master
        self.results: list[tuple[float, list[dict]]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                replies, _ = exchange(self.master.control, STATUS, timeout=5)
            except OSError as exc:
                self.errors.append(exc)
                return
            self.results.append((time.monotonic() - start, replies))

    def __enter__(self) -> Bystander:
        self._thread.start()
        wait_until(lambda: self.results or self.errors, 5, "the bystander's first status reply")
        return self

    def __exit__(self, *exc_info) -> None:
        seen = len(self.results)
        try:
            if exc_info[0] is None:  # one more answer after the bad request: served alongside it
                wait_until(lambda: len(self.results) > seen or self.errors, 5, "a status reply to the bystander")
        finally:
            self._stop.set()
            self._thread.join(10)
        if exc_info[0] is None:
            assert not self.errors, f"the bystander failed: {self.errors}"
            for took, replies in self.results:
                assert replies and replies[0].get("ok") is True, f"bystander got {replies}"
                assert took < 3.0, f"a status request took {took:.2f}s while a bad request was served"


def assert_error_reply(replies: list[dict], what: str) -> dict:
    assert len(replies) == 1, f"{what}: expected one error reply, got {replies}"
    reply = replies[0]
    assert reply.get("ok") is False, f"{what}: {reply}"
    error = reply.get("error")
    assert isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"], f"{what}: {reply}"
    assert isinstance(error.get("message"), str) and error["message"], f"{what}: {reply}"
    return error


# -- the catalogue ------------------------------------------------------------------------------------

def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


# Wrong values for every field of every verb that has fields (valid ones are never sent here).
WRONG_FIELDS = {
    "stop": {"now": ["yes", 1, 0, None, 1.0, [], {}, "true"]},
    "reload": {"wait": ["yes", 1, 0, None, [], {}, "false"]},
    "logs": {"lines": [-1, "10", 1.5, True, 100_001, None, [], {}, float("inf"), 10**30],
             "follow": ["yes", 1, None, [], {}]},
    "scale": {"workers": ["x", 1.5, True, False, -1, 4097, [], {}, "3", float("nan"), 10**30],
              "delta": [1.5, "x", True, 4097, -4097, [], {}, "+1", float("-inf")]},
}
FIELDLESS = {"status", "reopen"}

# name: (payload, half-close after sending, SPEC requires the connection closed after the reply)
CATALOGUE: dict[str, tuple[bytes, bool, bool]] = {
    "truncated-json": (b'{"cmd": "sta\n', False, True),
    "truncated-object": (b'{"cmd": "status", "x": [1, 2\n', False, True),
    "truncated-at-eof": (b'{"cmd": "sta', True, True),
    "empty-line": (b"\n", False, True),
    "ten-mb-line": (b'{"cmd": "status", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}\n', False, True),
    "ten-mb-no-newline": (b"[" + b"1," * (5 * 1024 * 1024), False, True),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000 + b"\n", False, True),
    "deep-objects": (b'{"a":' * 100_000 + b"\n", False, True),
    "deep-inside-a-request": (b'{"cmd": "status", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n", False, True),
    "invalid-utf8": (b'{"cmd": "st\xffatus"}\n', False, True),
    "invalid-utf8-bom": (b'\xff\xfe{"cmd": "status"}\n', False, True),
    "lone-surrogate-bytes": (b'{"cmd": "\xed\xa0\x80"}\n', False, True),
    "nul-in-string": (b'{"cmd": "status\x00"}\n', False, True),
    "nul-after-object": (b'{"cmd": "status"}\x00\n', False, True),
    "only-nuls": (b"\x00" * 100 + b"\n", False, True),
    "huge-integer": (b'{"cmd": "scale", "workers": ' + b"9" * 5000 + b"}\n", False, True),
    "nan-count": (b'{"cmd": "scale", "delta": NaN}\n', False, False),
    "unknown-verb": (line({"cmd": "dance"}), False, True),
    "unknown-verb-dunder": (line({"cmd": "__class__"}), False, True),
    "unknown-verb-case": (line({"cmd": "STATUS"}), False, True),
    "unknown-verb-space": (line({"cmd": "status "}), False, True),
    "unknown-verb-empty": (line({"cmd": ""}), False, True),
    "unknown-verb-path": (line({"cmd": "../stop"}), False, True),
    "unknown-verb-escaped-nul": (line({"cmd": "stop\x00"}), False, True),
    "no-cmd": (line({"command": "status"}), False, False),
    "list": (b'["status"]\n', False, False),
    "number": (b"42\n", False, False),
    "string": (b'"status"\n', False, False),
    "null": (b"null\n", False, False),
    "true": (b"true\n", False, False),
    "scale-both-forms": (line({"cmd": "scale", "workers": 2, "delta": 1}), False, False),
    "scale-neither-form": (line({"cmd": "scale"}), False, False),
    "scale-both-null": (line({"cmd": "scale", "workers": None, "delta": None}), False, False),
}
for _value in (5, None, [], {}, True, 1.5, ["status"], {"cmd": "status"}):
    CATALOGUE[f"cmd-{json.dumps(_value)}"] = (line({"cmd": _value}), False, False)
for _verb, _fields in WRONG_FIELDS.items():
    for _field, _values in _fields.items():
        for _value in _values:
            CATALOGUE[f"{_verb}-{_field}-{json.dumps(_value)}"] = (line({"cmd": _verb, _field: _value}), False, False)

# Clients that vanish: no reply is possible; the master must shrug.
HANG_UPS = {
    "connect-and-close": b"",
    "half-a-request-then-close": b'{"cmd": "sta',
    "request-then-close-before-the-reply": line({"cmd": "logs", "lines": 100_000}),
    "status-then-close-before-the-reply": STATUS,
}


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    runtime_dir = Path(tempfile.mkdtemp(prefix="pyc-rt-", dir="/tmp")) / "run"
    cluster = Cluster(tmp_path_factory.mktemp("badinput"), runtime_dir)
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        m = cluster.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{port}", name="bad")
        assert m.wait_ready() == 2
        m.port = port
        first = m.status()
        m.worker_pids = sorted(w["pid"] for w in first["workers"])
        wait_until(lambda: open_control_connections(m.pid, m.control) == 0, 5, "no open control connection")
        m.fd_baseline = fd_count(m.pid)
        yield m
    finally:
        cluster.cleanup()
        shutil.rmtree(runtime_dir.parent, ignore_errors=True)


def test_the_catalogue_covers_every_verb():
    assert set(WRONG_FIELDS) | FIELDLESS == set(commands.COMMANDS), \
        "a control verb without wrong-type cases: add its fields to WRONG_FIELDS (or FIELDLESS)"


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_malformed_request_gets_an_error_reply_while_another_client_is_served(master, case):
    payload, shut_write, must_close = CATALOGUE[case]
    with Bystander(master):
        replies, took, closed = send_bad(master.control, payload, shut_write=shut_write)
    error = assert_error_reply(replies, case)
    assert took is not None and took < REPLY_WITHIN, f"{case}: the error reply took {took}s"
    if must_close:
        assert closed, f"{case}: the master kept the connection open after {error}"
    assert master.proc.poll() is None, master.output()


@pytest.mark.parametrize("case", list(HANG_UPS))
def test_a_client_that_hangs_up_leaves_the_master_serving(master, case):
    with Bystander(master):
        send_bad(master.control, HANG_UPS[case], hang_up=True)
    assert master.status()["state"] == "running"


def status_ok(master) -> bool:
    replies, _ = exchange(master.control, STATUS, timeout=5)
    return bool(replies) and replies[0].get("ok") is True


def test_a_slow_writer_blocks_nobody_and_is_cut_off_by_the_read_timeout(master):
    """One byte every 100 ms of a request that never ends, and more idle clients than the bound."""
    outcome: dict = {}
    done = threading.Event()

    def slow_writer() -> None:
        sock = connect(master.control)
        start = time.monotonic()
        try:
            payload = b'{"cmd": "status", "pad": "' + b"x" * 10_000
            for i in range(len(payload)):
                if time.monotonic() - start > READ_TIMEOUT + 10:
                    outcome["result"] = "never cut off"
                    return
                try:
                    sock.send(payload[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    outcome["result"] = "closed"
                    break
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable:
                    try:
                        data = sock.recv(65536)
                    except ConnectionResetError:
                        data = b""
                    outcome["result"] = data
                    break
            outcome["after"] = time.monotonic() - start
        finally:
            sock.close()
            done.set()

    writer = threading.Thread(target=slow_writer, daemon=True)
    writer.start()
    idle: list[socket.socket] = []
    try:
        # Others are served while the slow writer dribbles.
        with Bystander(master) as bystander:
            wait_until(lambda: len(bystander.results) >= 5, 5, "five status replies during the slow write")

        # More idle connections than the bound: the extra ones get a clear refusal, nothing hangs.
        extra = 8
        idle += [connect(master.control) for _ in range(MAX_CLIENTS + extra)]
        refused: dict[int, dict] = {}

        def count_refusals() -> bool:
            readable, _, _ = select.select([s for i, s in enumerate(idle) if i not in refused], [], [], 0)
            for sock in readable:
                data = sock.recv(65536)
                replies = [json.loads(x) for x in data.splitlines() if x.strip()]
                refused[idle.index(sock)] = replies[0] if replies else {"closed": True}
            return len(refused) >= extra

        wait_until(count_refusals, 5, f"at least {extra} of {len(idle)} idle clients refused",
                   lambda: f"refused: {refused}")
        for index, reply in refused.items():
            assert_error_reply([reply], f"idle client {index} over the bound")
        replies, took, _ = send_bad(master.control, STATUS)
        assert took is not None and took < REPLY_WITHIN, f"a client beyond the bound waited {took}s"
        assert len(replies) == 1, replies
        if replies[0].get("ok") is not True:
            assert_error_reply(replies, "a client beyond the bound")
        for sock in idle[1:]:
            sock.close()
        # The bound freed: served again (one idle connection is left to time out).
        wait_until(lambda: status_ok(master), 5, "status served again once the idle clients left")

        assert done.wait(READ_TIMEOUT + 15), "the slow writer is still connected"
        result = outcome.get("result")
        assert result not in (None, "never cut off"), f"the slow writer was not cut off: {outcome}"
        assert READ_TIMEOUT - 1 <= outcome["after"] <= READ_TIMEOUT + 5, \
            f"cut off after {outcome['after']:.1f}s, the read timeout is {READ_TIMEOUT}s"
        if isinstance(result, bytes) and result:
            assert_error_reply([json.loads(x) for x in result.splitlines() if x.strip()], "slow writer")
        # The idle connection left open is cut off by the same timeout.
        idle[0].settimeout(READ_TIMEOUT + 5)
        try:
            data = idle[0].recv(65536)
        except ConnectionResetError:
            data = b""
        if data:
            assert_error_reply([json.loads(x) for x in data.splitlines() if x.strip()], "idle client")
    finally:
        for sock in idle:
            sock.close()
        writer.join(READ_TIMEOUT + 15)


def test_after_the_catalogue_the_master_is_unharmed(master):
    status = master.status()
    assert status["state"] == "running"
    assert status["generation"] == 1, "a bad request started a reload"
    assert status["workers_wanted"] == 2, "a bad request scaled the cluster"
    assert sorted(w["pid"] for w in status["workers"]) == master.worker_pids, "workers were replaced"
    assert all(w["restarts"] == 0 and not pid_gone(w["pid"]) for w in status["workers"]), status
    assert http_get(master.port)[0] == 200
    wait_until(lambda: open_control_connections(master.pid, master.control) == 0, 10,
               "the master to close every control connection", lambda: fd_listing(master.pid))
    wait_until(lambda: fd_count(master.pid) == master.fd_baseline, 5,
               f"the master's fd count back to {master.fd_baseline}",
               lambda: f"now {fd_count(master.pid)}:\n{fd_listing(master.pid)}")
    assert master.proc.poll() is None


# -- config fuzzing -------------------------------------------------------------------------------------

# A wrong-typed value (TOML syntax) for every setting.
WRONG_TYPE = {
    "app": "5", "workers": "2.5", "bind": "8080", "policy": "1", "name": "5", "env": '"API=1"',
    "chdir": "5", "preload": '"maybe"', "graceful_timeout": "[30]", "boot_timeout": '"soon"', "reload_batch": "2.5",
    "timeout": "true", "max_memory": "true", "restart_delay": "{}", "max_restart_delay": '"later"',
    "min_uptime": "[1]", "user": "1.5", "group": "[]", "daemon": "1", "pidfile": "5", "log_file": "true",
    "control": "[]", "interface": "1", "factory": '"maybe"', "threads": "2.5", "keep_alive": '"long"',
    "access_log": "1", "proxy_headers": '"yes please"', "forwarded_allow_ips": "5", "root_path": "[]",
    "log_format": "1", "metrics": "9100",
}
# Out-of-range values (TOML syntax), for the settings that have a range or a closed set of values.
OUT_OF_RANGE = {
    "workers": ["0", "4097", "-3"], "bind": ['"127.0.0.1:70000"', '"nowhere"'], "policy": ['"fifo"'],
    "name": ['""', '".hidden"', f'"{"x" * 65}"', '"a/b"'], "env": ["{ A = [1] }"], "app": ['""'],
    "graceful_timeout": ["-1", "1e12"], "boot_timeout": ["0", "-5"], "reload_batch": ["0", "4097", '"all"'], "timeout": ["-1", "nan"],
    "max_memory": ["0", "-1", '"0.1"', '"12Q"'], "restart_delay": ["-0.5", "inf"], "max_restart_delay": ["-1"],
    "min_uptime": ["-1"], "user": ["-1", '"no-such-user-pyc"', "4294967296"],
    "group": ["-1", '"no-such-group-pyc"', "4294967296"], "chdir": ['"/nonexistent/pycluster-test"'],
    "interface": ['"asgi2"'], "threads": ["0", "1025"], "keep_alive": ["0", "-1"],
    "forwarded_allow_ips": ['"10.0.0.300"', '""'], "root_path": ['"api"'], "log_format": ['"xml"'],
    "metrics": ['"127.0.0.1:70000"', '"unix:/tmp/m.sock"', '"nowhere"'],
}
BASE = {"app": '"no_such_module_pyc:main"', "workers": "1", "name": '"cfgfuzz"'}


def test_every_setting_rejects_bad_values_with_exit_2_naming_the_key(pyc):
    names = [s.name for s in config.SETTINGS]
    missing = [n for n in names if n not in WRONG_TYPE]
    assert not missing, f"settings without a wrong-typed case: {missing} (add them to WRONG_TYPE)"
    cases = [(n, WRONG_TYPE[n]) for n in names] + [(n, v) for n in names for v in OUT_OF_RANGE.get(n, ())]

    def run_case(index_case):
        index, (key, value) = index_case
        workdir = pyc.dir / f"case{index}"
        workdir.mkdir()
        settings = dict(BASE, **{key: value})
        (workdir / "pycluster.toml").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        # The app cannot be imported: a bad value let through ends in exit 3 quickly, not a hang.
        done = pyc.cli("run", cwd=workdir, timeout=20)
        return key, value, done

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run_case, enumerate(cases)))
    failures = []
    for key, value, done in results:
        problems = []
        if done.returncode != 2:
            problems.append(f"exit {done.returncode}, not 2")
        if not re.search(rf"(?<![A-Za-z_]){re.escape(key)}(?![A-Za-z_])", done.stderr):
            problems.append("the message does not name the key")
        if "pycluster.toml" not in done.stderr:
            problems.append("the message does not name the file")
        if "Traceback" in done.stderr:
            problems.append("a traceback")
        if re.search(r"pid \d+", done.stdout + done.stderr):
            problems.append("a worker was started")
        if problems:
            failures.append(f"{key} = {value}: {'; '.join(problems)}\n    stderr: {done.stderr.strip()[-300:]}")
    leftovers = list(pyc.runtime_dir.glob("*.sock")) if pyc.runtime_dir.exists() else []
    assert not leftovers, f"control sockets left behind: {leftovers}"
    assert not failures, f"{len(failures)} of {len(results)} bad config values mishandled:\n" + "\n".join(failures)
