"""Unit tests of the control verbs (pycluster.control.commands): each verb's request
validation, its client side (request building, rendering), the click help coming from
the verb's module, and the catch-all that turns a bug in a command into an ``internal``
reply with the traceback in the master's log. No processes: the control server runs on
a loop in this process, over a unix socket in a temporary directory."""

from __future__ import annotations

import asyncio
import json
import socket
import types
from typing import Any

import pytest

from pycluster import errors
from pycluster.control import commands, protocol
from pycluster.control.commands import logs, reload, reopen, scale, status, stop
from pycluster.control.protocol import RequestError
from pycluster.errors import ControlError

pytestmark = pytest.mark.timeout(60)


# -- validation (master side) -----------------------------------------------------------

@pytest.mark.parametrize("request_, params", [
    ({"cmd": "status"}, {}),
    ({"cmd": "reopen", "x": 1}, {}),
    ({"cmd": "stop"}, {"now": False}),
    ({"cmd": "stop", "now": True}, {"now": True}),
    ({"cmd": "reload"}, {"wait": False}),
    ({"cmd": "reload", "wait": True}, {"wait": True}),
    ({"cmd": "logs"}, {"lines": 100, "follow": False}),
    ({"cmd": "logs", "lines": 0, "follow": True}, {"lines": 0, "follow": True}),
    ({"cmd": "logs", "lines": 100_000}, {"lines": 100_000, "follow": False}),
    ({"cmd": "scale", "workers": 0}, {"workers": 0, "delta": None}),
    ({"cmd": "scale", "workers": 4096}, {"workers": 4096, "delta": None}),
    ({"cmd": "scale", "delta": -4096}, {"workers": None, "delta": -4096}),
])
def test_valid_requests_give_their_parameters(request_, params):
    module, got = commands.check(request_)
    assert module.NAME == request_["cmd"]
    assert got == params


@pytest.mark.parametrize("request_, words", [
    ({"cmd": "stop", "now": "yes"}, "'now'"),
    ({"cmd": "stop", "now": 1}, "'now'"),
    ({"cmd": "reload", "wait": None}, "'wait'"),
    ({"cmd": "logs", "lines": -1}, "'lines'"),
    ({"cmd": "logs", "lines": 100_001}, "'lines'"),
    ({"cmd": "logs", "lines": True}, "'lines'"),
    ({"cmd": "logs", "lines": 1.0}, "'lines'"),
    ({"cmd": "logs", "follow": 0}, "'follow'"),
    ({"cmd": "scale"}, "exactly one"),
    ({"cmd": "scale", "workers": 1, "delta": 1}, "exactly one"),
    ({"cmd": "scale", "workers": True}, "not an integer"),
    ({"cmd": "scale", "delta": "1"}, "not an integer"),
    ({"cmd": "scale", "workers": 4097}, "0-4096"),
    ({"cmd": "scale", "workers": -1}, "0-4096"),
    ({"cmd": "scale", "delta": 4097}, "+-4096"),
])
def test_invalid_requests_are_bad_request_errors_naming_the_field(request_, words):
    with pytest.raises(RequestError) as info:
        commands.check(request_)
    assert info.value.code == "bad_request" and words in info.value.message


@pytest.mark.parametrize("cmd", ["dance", "", "__class__", None, 5, ["status"]])
def test_unknown_commands_are_named_with_the_list_of_commands(cmd):
    with pytest.raises(RequestError) as info:
        commands.check({"cmd": cmd})
    assert info.value.code == "unknown_command"
    assert all(name in info.value.message for name in commands.COMMANDS)


def test_every_verb_module_has_the_same_shape():
    for name, module in commands.COMMANDS.items():
        assert module.NAME == name
        assert callable(module.validate) and asyncio.iscoroutinefunction(module.run)
    assert commands._check is commands.check  # the fuzz tests' name


# -- client side ------------------------------------------------------------------------

class Echo:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    def __call__(self, message: str, *, err: bool = False) -> None:
        (self.err if err else self.out).append(message)


@pytest.mark.parametrize("count, request_", [
    ("3", {"cmd": "scale", "workers": 3}), (" 0 ", {"cmd": "scale", "workers": 0}),
    ("+2", {"cmd": "scale", "delta": 2}), ("-1", {"cmd": "scale", "delta": -1}),
])
def test_scale_builds_its_request_from_the_argument(count, request_):
    assert scale.request(count) == request_
    commands.check(scale.request(count))  # and the master accepts what the client builds


@pytest.mark.parametrize("count", ["abc", "", "1.5", "+", "two"])
def test_scale_refuses_a_count_that_is_not_a_number_as_a_usage_error(count):
    with pytest.raises(ControlError) as info:
        scale.request(count)
    assert info.value.exit_code == errors.EXIT_USAGE and repr(count) in str(info.value)


def test_every_client_request_is_one_the_master_accepts():
    for req in (status.request(), stop.request(), stop.request(now=True), reload.request(True),
                reload.request(False), logs.request(5), logs.request(5, follow=True)):
        module, _params = commands.check(json.loads(protocol.encode(req)))
        assert module.NAME == req["cmd"]


def test_scale_renders_before_and_after():
    assert scale.render({"was": 2, "workers_wanted": 5}) == "workers: 2 -> 5"


def test_logs_renders_entries_with_who_and_shown_control_characters():
    echo = Echo()
    logs.render({"ok": True, "result": {"lines": [
        {"worker": None, "line": "ready"}, {"worker": 3, "line": "a\x1b[2Jb"}, {"worker": True, "line": 1},
        "odd"], "omitted": 2}}, echo)
    assert echo.out == ["[pycluster] ready", "[worker 3] a\\x1b[2Jb", "[?] 1", '[?] "odd"']
    assert echo.err == ["pycluster: 2 earlier lines left out (the reply would have been too large)"]


def test_logs_error_reply_is_a_control_error_and_a_bad_shape_a_value_error():
    with pytest.raises(ControlError) as info:
        logs.render({"ok": False, "error": {"code": "busy", "message": "too\x07 many"}}, Echo())
    assert str(info.value) == "too\\x07 many (busy)" and info.value.exit_code == errors.EXIT_FAILED
    for reply in ([], {"ok": True}, {"ok": True, "result": {"lines": 5}}, {"ok": True, "result": []}):
        with pytest.raises(ValueError):
            logs.render(reply, Echo())


def test_reload_follow_reports_progress_then_the_outcome():
    seen: list[dict[str, Any]] = []
    progress = {"replaced": 1, "total": 2, "worker": 4, "pid": 99}
    code, message = reload.follow(iter([
        {"ok": True, "result": {"progress": progress}},
        {"ok": True, "result": {"generation": 2, "replaced": 2, "seconds": 0.5, "notes": ["n1"]}},
    ]), seen.append)
    assert seen == [progress]
    assert (code, message) == (errors.EXIT_OK, "reloaded: generation 2, 2 workers in 0.5s\nnote: n1")
    assert reload.progress_line(progress) == "replaced 1/2 (worker 4, pid 99)"


def test_reload_follow_fails_on_an_error_reply_or_a_cut_stream():
    code, message = reload.follow(iter([{"ok": False, "error": {"code": "x", "message": "boom"}}]), print)
    assert code == errors.EXIT_FAILED and "reload failed: boom" in message
    code, message = reload.follow(iter([]), print)
    assert code == errors.EXIT_FAILED and "closed the connection" in message


def test_find_without_any_master_is_exit_3(tmp_path, monkeypatch):
    from pycluster.control import client
    monkeypatch.setenv("PYCLUSTER_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(ControlError) as info:
        client.find(None, None)
    assert info.value.exit_code == errors.EXIT_NO_MASTER
    with pytest.raises(ControlError) as info:
        client.call(str(tmp_path / "none.sock"), status.request())
    assert info.value.exit_code == errors.EXIT_NO_MASTER


def test_the_click_help_of_each_verb_is_its_modules_help():
    from pycluster.cli import main
    for module in (status, stop, scale, reload, logs):
        assert main.commands[module.NAME].help == module.HELP
    assert not hasattr(reopen, "HELP")  # no CLI verb: nothing would read it


def test_exit_codes_are_named_once():
    assert errors.EXIT_CODES["WORKER_BOOT_ERROR"] == 70
    assert errors.EXIT_NO_MASTER == errors.EXIT_BOOT == 3  # the numbers SPEC section 3 gives
    assert {errors.EXIT_OK, errors.EXIT_RUNTIME, errors.EXIT_USAGE} == {0, 1, 2}


# -- the catch-all: an internal error -----------------------------------------------------

class FakeArbiter:
    def __init__(self, log_file: str | None = None) -> None:
        from pycluster.master.logs import LogBook
        self.logs = LogBook(log_file)
        self.control = None
        self.state = "running"

    def status(self) -> dict[str, Any]:
        return {"name": "fake", "pid": 1, "state": self.state}


async def _broken_run(arbiter: Any, params: dict[str, Any], writer: Any) -> Any:
    raise KeyError("a bug in a command")


BROKEN = types.SimpleNamespace(NAME="broken", validate=lambda request: {}, run=_broken_run)


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.setitem(commands.COMMANDS, "broken", BROKEN)


def _ask(path: str, obj: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(protocol.encode(obj))
        return json.loads(s.makefile("rb").readline())


def test_a_command_that_raises_gets_internal_and_the_master_keeps_serving(broken, tmp_path):
    from pycluster.control.server import ControlServer
    log_file = tmp_path / "master.log"
    arbiter = FakeArbiter(str(log_file))
    path = str(tmp_path / "ctl" / "t.sock")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        server = ControlServer(arbiter, path)
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            failed = await loop.run_in_executor(None, _ask, path, {"cmd": "broken"})
            after = await loop.run_in_executor(None, _ask, path, {"cmd": "status"})
            return failed, after
        finally:
            await server.close()

    try:
        failed, after = asyncio.run(asyncio.wait_for(scenario(), 30))
        assert failed["ok"] is False and failed["error"]["code"] == "internal", failed
        message = failed["error"]["message"]
        assert "'broken'" in message and "KeyError" in message and "master's log" in message
        assert after == {"ok": True, "result": arbiter.status()}  # the master keeps serving
        (entry,) = [e for e in arbiter.logs.tail(100)[0] if "internal error" in e["line"]]
        assert "Traceback" in entry["line"] and "a bug in a command" in entry["line"]  # `pycluster logs`
        assert "_broken_run" in entry["line"]
        arbiter.logs.flush()
        assert "a bug in a command" in log_file.read_text()  # --log-file
    finally:
        arbiter.logs.close()


def test_a_signal_command_that_raises_is_logged_not_lost(broken):
    arbiter = FakeArbiter()
    try:
        assert asyncio.run(commands.execute(arbiter, {"cmd": "broken"})) is None
        lines = [e["line"] for e in arbiter.logs.tail(100)[0]]
        assert any("internal error in the 'broken' command" in line and "Traceback" in line for line in lines)
    finally:
        arbiter.logs.close()


class FakeWriter:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def test_a_result_that_is_not_json_is_an_internal_error_too(monkeypatch):
    async def unserialisable(arbiter: Any, params: dict[str, Any], writer: Any) -> Any:
        return {"x": object()}

    monkeypatch.setitem(commands.COMMANDS, "odd", types.SimpleNamespace(NAME="odd", validate=lambda r: {},
                                                                          run=unserialisable))
    arbiter, writer = FakeArbiter(), FakeWriter()
    try:
        keep_open = asyncio.run(commands.serve_request(arbiter, {"cmd": "odd"}, writer))  # type: ignore[arg-type]
        reply = json.loads(writer.data)
        assert keep_open is False and reply["error"]["code"] == "internal" and "TypeError" in reply["error"]["message"]
    finally:
        arbiter.logs.close()


def test_request_errors_are_still_their_own_codes():
    arbiter, writer = FakeArbiter(), FakeWriter()
    arbiter.state = "stopping"
    try:
        keep_open = asyncio.run(commands.serve_request(arbiter, {"cmd": "scale", "delta": 1}, writer))  # type: ignore[arg-type]
        assert keep_open is True and json.loads(writer.data)["error"]["code"] == "stopping"
    finally:
        arbiter.logs.close()
