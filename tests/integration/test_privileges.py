"""Privileges: dropping them for workers, refusing other users, keeping secrets (SPEC 3 and 5,
RELIABILITY 2.12 and 2.13).

- ``run --user nobody --group <nobody's group>`` as root: every worker's real, effective, saved
  and filesystem uid and gid are nobody's and its supplementary groups are exactly nobody's (root's
  are dropped); from inside, a worker cannot signal the master (EPERM for signal 0 and SIGUSR1) nor
  reach its control socket (EACCES); with the master SIGKILLed the unprivileged workers still die
  (PR_SET_PDEATHSIG is armed after the uid change).
- A non-root user other than the master's is refused by the control socket: by file mode (EACCES,
  with the directories as created, and with only the socket's own 0600 in the way); with the
  socket opened to everyone (chmod 0666 by the test), by SO_PEERCRED: its ``stop`` gets an error
  reply and the connection is closed, the refusal is logged, and the master is unharmed.
- Secrets given to workers (the master's environment, ``--env``) reach the workers but appear
  nowhere in ``status --json``, the status table, ``logs``, a reload's output, or the master's
  stdout/stderr; a config error does not echo them either.

Unprivileged processes run through ``setpriv`` (util-linux). The interpreter running the tests may
live where nobody cannot exec it (pyenv under /root, mode 0700): then the master runs under
/usr/bin/python3 with copies of its dependencies readable by everyone, and the tests skip, saying
why, when no interpreter is usable by nobody.
"""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import cli_support
from cli_support import IDLE_APP, SRC, http_get, pid_gone, pyc, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"
SETPRIV = shutil.which("setpriv")

try:
    NOBODY = pwd.getpwnam("nobody")
    NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name
except KeyError:
    NOBODY = NOBODY_GROUP = None

if os.geteuid() != 0:
    pytestmark = [pytestmark, pytest.mark.skip(reason="privilege tests need root (they switch to nobody)")]
elif SETPRIV is None:
    pytestmark = [pytestmark, pytest.mark.skip(reason="setpriv (util-linux) is not installed")]
elif NOBODY is None:
    pytestmark = [pytestmark, pytest.mark.skip(reason="there is no 'nobody' user")]


def as_nobody(argv: list[str], *, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run argv as nobody, with nobody's group only (no supplementary groups)."""
    cmd = [SETPRIV, f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", *argv]
    return subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=timeout)


def like_a_worker(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run argv the way the master starts a worker as nobody (Popen's user/group/extra_groups)."""
    groups = os.getgrouplist(NOBODY.pw_name, NOBODY.pw_gid)
    return subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=30,
                          user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=groups)


def _world_readable_copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for root, dirs, files in os.walk(dst):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644 if not name.endswith(".so") else 0o755)


class Runtime:
    """An interpreter and PYTHONPATH that work for the master (root) and for workers (nobody)."""

    def __init__(self, python: str, pythonpath: list[str], home: Path):
        self.python = python
        self.pythonpath = os.pathsep.join(pythonpath)
        self.home = home  # a 0755 directory for app files, cwd of the master

    def env(self, extra: dict | None = None) -> dict:
        env = {"PYTHONPATH": os.pathsep.join([str(self.home), self.pythonpath])}
        env.update(extra or {})
        return env


@pytest.fixture(scope="module")
def nobody_runtime():
    home = Path(tempfile.mkdtemp(prefix="pyc-priv-", dir="/tmp"))
    os.chmod(home, 0o755)
    try:
        yield _find_runtime(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _find_runtime(home: Path) -> Runtime:
    """Probe, as nobody, the interpreters that could run workers; skip (with why) if none can."""
    worker_probe = "import pycluster.child.entry, pycluster.examples.hello"
    master_probe = "import click, psutil, pycluster.cli, pycluster.master.arbiter"
    why = []
    try:
        ok = like_a_worker([sys.executable, "-c", worker_probe], {"PYTHONPATH": str(SRC)}).returncode == 0
    except PermissionError:  # the exec itself is refused
        ok = False
    if ok:
        return Runtime(sys.executable, [str(SRC)], home)
    why.append(f"{sys.executable} cannot be run by nobody (a 0700 directory on its path?)")

    # Fall back on the system interpreter, with world-readable copies of what the master imports.
    src = str(SRC)
    if as_nobody(["/bin/cat", str(SRC / "pycluster" / "__init__.py")]).returncode != 0:
        _world_readable_copy(SRC / "pycluster", home / "src" / "pycluster")
        src = str(home / "src")
    deps = home / "deps"
    deps.mkdir(mode=0o755)
    for name in ("click", "psutil", "tomli"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            _world_readable_copy(Path(list(spec.submodule_search_locations)[0]), deps / name)
    os.chmod(deps, 0o755)
    tried = {os.path.realpath(sys.executable)}
    for python in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if not os.path.exists(python) or os.path.realpath(python) in tried:
            continue
        tried.add(os.path.realpath(python))
        env = {"PYTHONPATH": os.pathsep.join([src, str(deps)])}
        as_root = subprocess.run([python, "-c", master_probe], env=env, capture_output=True, text=True, timeout=30)
        if as_root.returncode != 0:
            why.append(f"{python}: the master cannot import its dependencies: {as_root.stderr.strip()[-200:]}")
            continue
        try:
            probe = like_a_worker([python, "-c", worker_probe], env)
        except PermissionError as exc:
            why.append(f"{python} as nobody: {exc}")
            continue
        if probe.returncode != 0:
            why.append(f"{python} as nobody: {probe.stderr.strip()[-200:]}")
            continue
        return Runtime(python, [src, str(deps)], home)
    pytest.skip("no Python interpreter usable by nobody: " + "; ".join(why))


# -- (a) workers run as nobody ----------------------------------------------------------------------

PRIV_APP = """
    import asyncio
    import errno
    import json
    import os
    import signal
    import socket

    import pycluster as cluster


    def _errno_name(exc):
        return errno.errorcode.get(exc.errno, str(exc.errno))


    def probe():
        out = {"pid": os.getpid(), "ppid": os.getppid(), "resuid": os.getresuid(),
               "resgid": os.getresgid(), "groups": sorted(os.getgroups())}
        for name, sig in (("signal_0", 0), ("sigusr1", signal.SIGUSR1)):
            try:
                os.kill(os.getppid(), sig)
                out[name] = "allowed"
            except OSError as exc:
                out[name] = _errno_name(exc)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.environ["PRIV_CONTROL"])
            out["control"] = "connected"
        except OSError as exc:
            out["control"] = _errno_name(exc)
        finally:
            sock.close()
        return out


    async def handle(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        body = json.dumps(probe()).encode()
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n"
                     b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
        await writer.drain()
        writer.close()


    async def serve():
        servers = [await asyncio.start_server(handle, sock=s) for s in cluster.listeners()]
        await asyncio.Event().wait()


    def main():
        asyncio.run(serve())
"""


def proc_ids(pid: int) -> dict[str, list[int]]:
    ids = {}
    with open(f"/proc/{pid}/status") as fh:
        for text in fh:
            key, _, value = text.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = [int(v) for v in value.split()]
    return ids


def test_workers_run_as_nobody_and_cannot_touch_the_master(pyc, free_port, nobody_runtime, monkeypatch):
    rt = nobody_runtime
    app = rt.home / "privapp.py"
    app.write_text(textwrap.dedent(PRIV_APP))
    app.chmod(0o644)
    control = pyc.runtime_dir / "priv.sock"
    monkeypatch.setattr(cli_support, "CLI", [rt.python, "-m", "pycluster.cli"])
    master = pyc.start("privapp:main", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--user", NOBODY.pw_name,
                       "--group", NOBODY_GROUP, "--env", f"PRIV_CONTROL={control}", name="priv",
                       cwd=rt.home, env=rt.env())
    assert master.wait_ready(20) == 2
    status = master.status()
    assert proc_ids(master.pid)["Uid"] == [0, 0, 0, 0], "the master itself should stay root"

    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    groups = sorted(set(os.getgrouplist(NOBODY.pw_name, gid)))
    pids = [w["pid"] for w in status["workers"]]
    assert len(pids) == 2 and all(pids), status
    for pid in pids:
        ids = proc_ids(pid)
        assert ids["Uid"] == [uid] * 4, f"worker {pid}: real/effective/saved/fs uid {ids['Uid']}, want {uid}"
        assert ids["Gid"] == [gid] * 4, f"worker {pid}: real/effective/saved/fs gid {ids['Gid']}, want {gid}"
        assert sorted(set(ids["Groups"])) == groups, \
            f"worker {pid}: supplementary groups {ids['Groups']}, want nobody's {groups} (root's must go)"

    seen: dict[int, dict] = {}

    def ask() -> bool:
        code, _headers, body = http_get(free_port)
        assert code == 200, body
        report = json.loads(body)
        seen[report["pid"]] = report
        return set(pids) <= set(seen)

    wait_until(ask, 10, "an answer from each worker", lambda: f"seen: {seen}")
    for pid in pids:
        report = seen[pid]
        assert report["ppid"] == master.pid, report
        assert report["resuid"] == [uid] * 3 and report["resgid"] == [gid] * 3, report
        assert report["signal_0"] == "EPERM", f"worker {pid} may signal the master: {report}"
        assert report["sigusr1"] == "EPERM", f"worker {pid} may signal the master: {report}"
        assert report["control"] in ("EACCES", "EPERM"), f"worker {pid} reached the control socket: {report}"
    assert master.status()["state"] == "running"

    # The uid change clears PR_SET_PDEATHSIG: the workers must still die with the master.
    os.kill(master.pid, signal.SIGKILL)
    master.wait_exit(5)
    wait_until(lambda: all(pid_gone(p) for p in pids), 5, "the unprivileged workers to die with the master")


# -- (b) other users are refused ---------------------------------------------------------------------

CLIENT = """
import errno, json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": errno.errorcode.get(exc.errno, str(exc.errno))}))
    sys.exit(0)
data, closed = b"", False
try:
    sock.sendall(b'{"cmd": "stop", "now": true}\\n')
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            closed = True
            break
        data += chunk
except socket.timeout:
    pass
except OSError as exc:
    closed = exc.errno in (errno.ECONNRESET, errno.EPIPE)
print(json.dumps({"connect": "ok", "replies": [json.loads(x) for x in data.splitlines() if x.strip()],
                  "closed": closed}))
"""


@pytest.fixture(scope="module")
def client_python() -> str:
    """An interpreter nobody can run (the client needs only the standard library)."""
    for python in ("/usr/bin/python3", sys.executable, "/usr/local/bin/python3"):
        if os.path.exists(python) and as_nobody([python, "-c", "import json, socket"]).returncode == 0:
            return python
    pytest.skip("no Python interpreter that nobody can run")


def nobody_client(python: str, path: Path) -> dict:
    done = as_nobody([python, "-c", CLIENT, str(path)], env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_another_user_is_refused_by_file_mode_then_by_peer_credentials(pyc, client_python):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    before = master.status()
    sock_path = master.control

    # As created: 0600 socket in a 0700 directory.
    assert nobody_client(client_python, sock_path) == {"connect": "EACCES"}
    # Only the socket's own mode in the way.
    os.chmod(sock_path.parent.parent, 0o711)
    os.chmod(sock_path.parent, 0o711)
    assert nobody_client(client_python, sock_path) == {"connect": "EACCES"}, "the socket is not 0600"

    # Open to everyone: the master itself must refuse (SO_PEERCRED), and not stop.
    os.chmod(sock_path, 0o666)
    result = nobody_client(client_python, sock_path)
    assert result["connect"] == "ok", result
    assert len(result["replies"]) <= 1 and (result["replies"] or result["closed"]), result
    if result["replies"]:
        reply = result["replies"][0]
        assert reply.get("ok") is False and reply["error"]["code"], f"nobody's stop was accepted: {result}"
    assert result["closed"], f"the master kept nobody's connection open: {result}"

    after = master.status()
    assert after["state"] == "running" and master.proc.poll() is None
    assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in before["workers"]]
    assert after["workers_wanted"] == before["workers_wanted"]

    peer = re.compile(rf"(?i)(refus|forbid|denied|reject|not allowed|unauthori).*\b({NOBODY.pw_uid}|nobody)\b"
                      rf"|\b({NOBODY.pw_uid}|nobody)\b.*(refus|forbid|denied|reject|not allowed|unauthori)")

    def logged():
        lines = master.stdout + master.stderr
        return any(peer.search(text) for text in lines)

    wait_until(logged, 5, f"the master to log that it refused uid {NOBODY.pw_uid}", master.output)


# -- (c) secrets ---------------------------------------------------------------------------------------

SECRETS = {"DATABASE_PASSWORD": "s3cret-xyz", "API_TOKEN": "tok-abc"}


def assert_no_secret(where: str, text: str) -> None:
    for key, value in SECRETS.items():
        assert value not in text, f"{key}'s value leaks into {where}:\n{text[-2000:]}"


def test_secrets_in_the_environment_never_reach_status_or_logs(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--env",
                       f"API_TOKEN={SECRETS['API_TOKEN']}",
                       env={"DATABASE_PASSWORD": SECRETS["DATABASE_PASSWORD"]})
    assert master.wait_ready() == 2
    assert http_get(free_port)[0] == 200
    # The secrets did reach the workers (so not finding them below means something).
    pid = master.status()["workers"][0]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as fh:
        environ = fh.read().split(b"\0")
    for key, value in SECRETS.items():
        assert f"{key}={value}".encode() in environ, f"{key} did not reach the worker"

    outputs = {}
    for args in (["status", "--json"], ["status"], ["logs", "--lines", "10000"], ["reload", "--wait"],
                 ["scale", "+1"], ["logs", "--lines", "10000"]):
        done = pyc.cli(*args, "-n", "app", timeout=30)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        outputs[" ".join(args)] = done.stdout + done.stderr
    outputs["raw status"] = json.dumps(master.request({"cmd": "status"}))
    stopping = pyc.cli_start("stop", "-n", "app")
    assert master.wait_exit(30) == 0, master.output()
    done = pyc.finish(stopping, 10)
    outputs["stop"] = done.stdout + done.stderr
    outputs["the master's stdout and stderr"] = "\n".join(master.stdout + master.stderr)
    for where, text in outputs.items():
        assert_no_secret(where, text)


def test_a_config_error_does_not_echo_secrets(pyc):
    token = f"API_TOKEN={SECRETS['API_TOKEN']}"
    pyc.write("idle_app.py", IDLE_APP)
    pyc.write("bad.toml", f'env = {{ API_TOKEN = "{SECRETS["API_TOKEN"]}", BROKEN = [1] }}\n')
    runs = {
        "--env with a bad entry": pyc.cli("run", "idle_app:main", "-w", "1", "--env", token, "--env", "broken"),
        "PYCLUSTER_ENV with a bad entry": pyc.cli("run", "idle_app:main", "-w", "1",
                                                  env={"PYCLUSTER_ENV": f"{token},broken"}),
        "a config file env table with a bad entry": pyc.cli("run", "idle_app:main", "-w", "1", "-c",
                                                            str(pyc.dir / "bad.toml")),
    }
    leaks = []
    for what, done in runs.items():
        assert done.returncode == 2, (what, done.returncode, done.stderr)
        assert "env" in done.stderr, (what, done.stderr)
        if any(value in done.stdout + done.stderr for value in SECRETS.values()):
            leaks.append(f"{what}: {(done.stdout + done.stderr).strip()}")
    assert not leaks, "a config error echoes a secret (name the bad entry, not the others' values):\n" \
        + "\n".join(leaks)
