"""A worker is untrusted (issue 12, items 1 and 2; README "Threat model").

- ``cluster.listen(fd=N)`` sends the worker's own descriptor N with the
  request; the primary never resolves a worker's number in its own fd table.
  A worker running as nobody that asks for every number 3..63 only ever gets
  back its own sockets, never the root master's control socket or listeners;
  the master still answers ``status`` and ``stop`` itself. A worker that makes
  its listeners blocking cannot freeze the master (rr and none).
- A worker with fewer privileges than the master may share the master's
  listeners but does not get a new address bound for it: a port below 1024
  and a unix socket in /etc are refused with EACCES and a message naming
  ``--bind``, and nothing is bound or created.
- A unix socket the primary bound for a worker is removed through the
  directory it was created in: a directory swapped for a symlink between bind
  and close does not make the primary delete a file elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import textwrap

import pytest

import cli_support
from cli_support import http_get, pyc  # noqa: F401  (pyc: fixture)
from test_privileges import NOBODY, NOBODY_GROUP, nobody_runtime  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(60)

UNTRUSTED_APP = """
    import asyncio
    import errno
    import json
    import os
    import socket

    import pycluster as cluster

    ETC_SOCKET = "/etc/pycluster-untrusted-test.sock"


    def probe():
        out = {"taken": [], "mismatch": [], "binds": {}}
        for n in range(3, 64):
            try:
                mine = os.fstat(n)
            except OSError:
                mine = None
            try:
                sock = cluster.listen(fd=n)
            except OSError:
                continue
            got = os.fstat(sock.fileno())
            out["taken"].append(n)
            if mine is None or (got.st_dev, got.st_ino) != (mine.st_dev, mine.st_ino):
                out["mismatch"].append(n)
            sock.detach()  # not ours to close: it is fd n's open file
        for name, family, address in (("low_port", socket.AF_INET, ("127.0.0.1", 444)),
                                      ("etc_unix", socket.AF_UNIX, ETC_SOCKET)):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.bind(address)
                sock.listen(8)
                out["binds"][name] = ["bound", ""]
            except OSError as exc:
                out["binds"][name] = [errno.errorcode.get(exc.errno, str(exc.errno)), str(exc)]
            finally:
                sock.close()
        return out


    RESULT = probe()


    async def handle(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        body = json.dumps(RESULT).encode()
        writer.write(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body)
                     + body)
        await writer.drain()
        writer.close()


    async def serve():
        socks = cluster.listeners()
        for s in socks:
            s.setblocking(True)  # hostile: the same open file as the master's, if it were shared
        servers = [await asyncio.start_server(handle, sock=s) for s in socks]
        await asyncio.Event().wait()


    def main():
        asyncio.run(serve())
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_an_unprivileged_worker_reaches_nothing_of_the_masters(pyc, free_port, nobody_runtime, monkeypatch,
                                                                 policy):
    rt = nobody_runtime
    app = rt.home / "untrusted.py"
    app.write_text(textwrap.dedent(UNTRUSTED_APP))
    app.chmod(0o644)
    etc_socket = "/etc/pycluster-untrusted-test.sock"
    monkeypatch.setattr(cli_support, "CLI", [rt.python, "-m", "pycluster.cli"])
    master = pyc.start("untrusted:main", "-w", "1", "-b", f"127.0.0.1:{free_port}", "--policy", policy,
                       "--user", NOBODY.pw_name, "--group", NOBODY_GROUP, name=f"untrusted-{policy}",
                       cwd=rt.home, env=rt.env())
    try:
        assert master.wait_ready(20) == 1
        code, _headers, body = http_get(free_port)
        assert code == 200, body
        result = json.loads(body)
        assert result["mismatch"] == [], f"the worker got descriptors that were not its own: {result}"
        low, etc = result["binds"]["low_port"], result["binds"]["etc_unix"]
        assert low[0] == "EACCES" and "--bind" in low[1], low
        assert etc[0] == "EACCES" and "--bind" in etc[1], etc
        assert not os.path.lexists(etc_socket), "a root-owned socket was created in /etc for a nobody worker"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", 444)) == errno.ECONNREFUSED, "port 444 was bound for the worker"
        # The master still answers for itself, and serves, with the worker's listener made blocking.
        status = master.status()
        assert status["pid"] == master.pid and status["state"] == "running", status
        for _ in range(5):
            assert http_get(free_port)[0] == 200
        reply = master.request({"cmd": "stop"})
        assert reply.get("ok") is True, reply
        assert master.wait_exit(15) == 0, master.output()
    finally:
        if os.path.lexists(etc_socket):
            os.unlink(etc_socket)


UNIX_SOCKET_APP = """
import os
import socket
import sys
import threading

import pycluster as cluster
from harness import deadline, must_call, report

BASE, MOVE = sys.argv[1], sys.argv[2]
PATH = os.path.join(BASE, "sub", "app.sock")

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()

    def on_listening(address):
        report(address=address.address)
        if MOVE == "swap-directory":
            # Swap the directory for a symlink to another one that holds a
            # file of the same name.
            os.rename(os.path.join(BASE, "sub"), os.path.join(BASE, "sub.old"))
            os.symlink(os.path.join(BASE, "victim"), os.path.join(BASE, "sub"))
        else:  # someone else's file now stands where our socket was
            os.unlink(PATH)
            with open(PATH, "w") as f:
                f.write("theirs")
        worker.disconnect()

    worker.on("listening", must_call(on_listening, 1))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
    cluster.run()
    report(**{name: sorted(os.listdir(os.path.join(BASE, name)))
              for name in ("victim", "sub.old", "sub") if os.path.isdir(os.path.join(BASE, name))})
else:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(PATH)
    sock.listen(8)
    threading.Event().wait()
"""


def test_the_primary_removes_a_unix_socket_only_where_it_made_it(run_script, tmp_path):
    (tmp_path / "sub").mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "app.sock").write_text("precious")
    res = run_script(UNIX_SOCKET_APP, timeout=30, args=(tmp_path, "swap-directory"))
    assert res.returncode == 0, res.stderr
    assert res.report("address") == str(tmp_path / "sub" / "app.sock")
    assert res.report("exit") == [0, None]
    assert res.report("victim") == ["app.sock"], "the primary followed the swapped directory and deleted a file"
    assert (victim / "app.sock").read_text() == "precious"
    assert res.report("sub.old") == [], "the primary's socket files were left behind"


def test_the_primary_never_removes_a_file_that_replaced_its_socket(run_script, tmp_path):
    (tmp_path / "sub").mkdir()
    res = run_script(UNIX_SOCKET_APP, timeout=30, args=(tmp_path, "replace-socket"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sub" / "app.sock").read_text() == "theirs"
    assert res.report("sub") == ["app.sock"], res.report("sub")


def test_listen_fd_of_a_number_the_worker_does_not_hold_is_ebadf(run_script):
    res = run_script("""
        import errno
        import pycluster as cluster
        from harness import deadline, must_call, report

        if cluster.is_primary:
            deadline(20)
            worker = cluster.fork()
            worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
            cluster.run()
        else:
            codes = set()
            for n in range(200, 260):
                try:
                    cluster.listen(fd=n)
                    codes.add("listened")
                except OSError as exc:
                    codes.add(errno.errorcode.get(exc.errno))
            report(codes=sorted(codes))
            cluster.worker.disconnect()
    """, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.report("codes") == ["EBADF"]
    assert res.report("exit") == [0, None]


# -- item 15: a user that cannot be, or cannot run, a worker ----------------------------------------

def test_a_numeric_user_without_a_group_is_a_config_error(pyc, free_port):
    unused = next(uid for uid in range(99999, 60000, -1) if _no_user(uid))
    master = pyc.run_to_end(HELLO, "-w", "1", "-b", f"127.0.0.1:{free_port}", "--user", str(unused), timeout=20)
    err = "\n".join(master.stderr)
    assert master.proc.returncode == 2, master.output()
    assert f"user {unused} is not in the user database" in err and "--group" in err, err
    assert "Traceback" not in master.output()


@pytest.mark.parametrize("preload", [False, True], ids=["spawn", "preload"])
def test_a_user_that_cannot_execute_the_interpreter_halts_with_exit_3(pyc, free_port, tmp_path, monkeypatch,
                                                                      preload):
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    python = hidden / "python3"
    python.symlink_to(os.path.realpath(__import__("sys").executable))
    monkeypatch.setattr(cli_support, "CLI", [str(python), "-m", "pycluster.cli"])
    master = pyc.run_to_end(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--user", NOBODY.pw_name,
                            "--group", NOBODY_GROUP, *(["--preload"] if preload else []), timeout=20)
    out = master.output()
    assert master.proc.returncode == 3, out
    assert "Traceback" not in out, out
    err = "\n".join(master.stderr)
    assert f"user {NOBODY.pw_name}" in err and f"cannot execute {python}" in err, err
    assert "only root may switch users" not in out


HELLO = "pycluster.examples.hello:main"


def _no_user(uid: int) -> bool:
    import pwd
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False
