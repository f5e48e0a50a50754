"""Unit tests of primary/settings.py: setup_primary()'s validation and
defaults, the scheduling-policy check and the env-only hand-off tuning
(PYCLUSTER_RR_WINDOW / PYCLUSTER_HANDOFF_TIMEOUT). No process is started."""

from __future__ import annotations

import pytest

from pycluster import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR
from pycluster.errors import SettingsError
from pycluster.primary.settings import (
    DEFAULT_TUNING,
    ENV_HANDOFF_TIMEOUT,
    ENV_RR_WINDOW,
    SETTING_KEYS,
    Tuning,
    check_policy,
    check_port,
    env_tuning,
    inspect_port,
    interpreter_options,
    validate_settings,
)

GOOD = {
    "exec": "/srv/app.py", "args": ["--port", "1"], "exec_argv": ("-X", "dev"), "silent": True,
    "stdio": ["pipe", "inherit", "ignore", "ipc", None, 7], "uid": "nobody", "gid": 65534,
    "cwd": None, "inspect_port": 9229, "serialization": "json",
}


def test_every_setting_has_a_good_value_here():
    assert set(GOOD) == set(SETTING_KEYS)
    validate_settings(GOOD)
    validate_settings({})
    validate_settings({"inspect_port": lambda: 1})


@pytest.mark.parametrize("key,value,words", [
    ("args", "--port 1", "list of strings"),
    ("args", ["a", 1], "list of strings"),
    ("exec_argv", None, "list of strings"),
    ("exec", 42, "must be a path"),
    ("cwd", ["/"], "must be a path"),
    ("silent", 1, "True or False"),
    ("uid", 1.5, "a number or a name"),
    ("gid", ["wheel"], "a number or a name"),
    ("serialization", "advanced", "never unpickles"),
    ("stdio", "pipe", "must be a list"),
    ("stdio", ["pipe", "socket"], "bad stdio entry 'socket'"),
    ("stdio", [True], "bad stdio entry True"),
    ("stdio", [-1], "bad stdio entry -1"),
    ("inspect_port", 65536, "0-65535"),
    ("inspect_port", True, "0-65535"),
    ("inspect_port", "9229", "0-65535"),
])
def test_a_bad_value_is_refused_naming_it(key, value, words):
    with pytest.raises(SettingsError, match=words) as info:
        validate_settings({**GOOD, key: value})
    assert key in str(info.value) or "stdio entry" in words or key == "inspect_port"


def test_an_unknown_setting_lists_the_known_ones():
    with pytest.raises(SettingsError, match="unknown setting 'execArgv'; known settings: exec, args"):
        validate_settings({"execArgv": []})


def test_a_settings_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_settings({"silent": "yes"})


@pytest.mark.parametrize("orig,argv,expected", [
    (["python3", "app.py", "a"], ["app.py", "a"], []),
    (["python3", "-X", "dev", "-O", "app.py"], ["app.py"], ["-X", "dev", "-O"]),
    (["python3", "-O", "-m", "pkg.main", "x"], ["/srv/pkg/main.py", "x"], ["-O"]),
    (["python3", "-u", "-mpkg", "x"], ["/srv/pkg/__main__.py", "x"], ["-u"]),
    (["python3", "-c", "pass"], ["-c"], []),
    (["python3", "-B", "-cpass"], ["-c"], ["-B"]),
    (["python3", "--check-hash-based-pycs", "never", "app.py"], ["app.py"], ["--check-hash-based-pycs", "never"]),
    ([], ["app.py"], []),
])
def test_interpreter_options_are_what_stands_before_the_script(orig, argv, expected):
    assert interpreter_options(orig, argv) == expected


def test_inspect_port():
    check_port(None)
    check_port(0)
    check_port(lambda: 5)
    assert inspect_port({}) is None
    assert inspect_port({"inspect_port": 9230}) == 9230
    ports = iter([9231, 9232])
    assert [inspect_port({"inspect_port": lambda: next(ports)}) for _ in range(2)] == [9231, 9232]
    with pytest.raises(SettingsError, match="function returned 70000"):
        inspect_port({"inspect_port": lambda: 70000})
    with pytest.raises(SettingsError, match="function returned False"):
        inspect_port({"inspect_port": lambda: False})


def test_check_policy():
    for policy in (SCHED_RR, SCHED_NONE, SCHED_REUSEPORT):
        assert check_policy(policy) == policy
    for bad in (0, 4, "rr", None):
        with pytest.raises(SettingsError, match="scheduling_policy must be SCHED_RR, SCHED_NONE or SCHED_REUSEPORT"):
            check_policy(bad)


# -- env tuning -----------------------------------------------------------------

def test_tuning_defaults_when_unset_or_blank():
    assert env_tuning(ENV_RR_WINDOW, {}) == 64
    assert env_tuning(ENV_HANDOFF_TIMEOUT, {ENV_HANDOFF_TIMEOUT: "  "}) == 5.0
    assert Tuning.from_env({}) == DEFAULT_TUNING == Tuning(window=64, handoff_timeout=5.0)


def test_tuning_values_are_parsed():
    env = {ENV_RR_WINDOW: " 1 ", ENV_HANDOFF_TIMEOUT: "0.25"}
    tuning = Tuning.from_env(env)
    assert (tuning.window, tuning.handoff_timeout) == (1, 0.25)
    assert isinstance(tuning.window, int)
    assert env_tuning(ENV_RR_WINDOW, {ENV_RR_WINDOW: "65536"}) == 65536
    assert env_tuning(ENV_HANDOFF_TIMEOUT, {ENV_HANDOFF_TIMEOUT: "86400"}) == 86400.0


@pytest.mark.parametrize("name,raw", [
    (ENV_RR_WINDOW, "abc"), (ENV_RR_WINDOW, "0"), (ENV_RR_WINDOW, "65537"), (ENV_RR_WINDOW, "1.5"),
    (ENV_RR_WINDOW, "-3"), (ENV_HANDOFF_TIMEOUT, "soon"), (ENV_HANDOFF_TIMEOUT, "nan"),
    (ENV_HANDOFF_TIMEOUT, "inf"), (ENV_HANDOFF_TIMEOUT, "-1"), (ENV_HANDOFF_TIMEOUT, "0"),
    (ENV_HANDOFF_TIMEOUT, "86401"),
])
def test_a_bad_tuning_value_is_a_settings_error_naming_the_variable(name, raw):
    with pytest.raises(SettingsError) as info:
        env_tuning(name, {name: raw})
    message = str(info.value)
    assert message.startswith(f"environment {name}={raw!r}: expected ")
    assert "(default " in message
    with pytest.raises(SettingsError):
        Tuning.from_env({name: raw})


def test_a_long_bad_tuning_value_is_cut_in_the_message():
    with pytest.raises(SettingsError) as info:
        env_tuning(ENV_RR_WINDOW, {ENV_RR_WINDOW: "x" * 500})
    assert "x" * 40 in str(info.value) and "x" * 41 not in str(info.value)


def test_tuning_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv(ENV_RR_WINDOW, "3")
    monkeypatch.delenv(ENV_HANDOFF_TIMEOUT, raising=False)
    assert Tuning.from_env() == Tuning(window=3, handoff_timeout=5.0)
