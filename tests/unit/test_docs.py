"""The documentation stays true to the code.

* the man pages' generated blocks (run options, environment, TOML keys,
  signals) match what ``pycluster.master.config.SETTINGS`` and the master's signal
  table generate (``python man/generate.py --check``), and drift is
  detected and repaired by ``--check`` / ``--write``;
* groff renders both pages without a warning;
* every long option of every verb's ``--help`` is in pycluster(1);
* ``configs/pycluster.toml`` loads with ``pycluster.master.config.load`` and sets
  every key, each with a comment;
* the systemd units and the logrotate file agree with each other and with
  the defaults they depend on;
* the README's first two lines are the demo command and the test command
  that ``.ci/run`` runs.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pycluster.master import config

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "man" / "generate.py"  # a development tool: not in the wheel
_spec = importlib.util.spec_from_file_location("pycluster_man_generate", GENERATOR)
_manpage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_manpage)
MAN1 = ROOT / "man" / "pycluster.1"
MAN5 = ROOT / "man" / "pycluster.toml.5"
TOML = ROOT / "configs" / "pycluster.toml"
SERVICE = ROOT / "configs" / "pycluster.service"
SOCKET = ROOT / "configs" / "pycluster.socket"
LOGROTATE = ROOT / "configs" / "logrotate.pycluster"
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYCLUSTER_WORKER_ID", None)
    return env


def _py(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _man_text(path: Path) -> str:
    """The page's source with roff's escaped minus signs turned back into '-'."""
    return path.read_text(encoding="utf-8").replace("\\-", "-")


# -- generated blocks -------------------------------------------------------------
def test_man_pages_generated_blocks_match_settings():
    result = _py(str(GENERATOR), "--check", str(MAN1), str(MAN5))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path, blocks", [(MAN1, {"options", "environment", "signals"}), (MAN5, {"keys"})],
                         ids=["pycluster.1", "pycluster.toml.5"])
def test_man_pages_have_their_generated_blocks(path, blocks):
    assert set(_manpage.blocks_in(path.read_text(encoding="utf-8"))) == blocks


def test_generated_blocks_name_every_setting():
    options, keys, environment = _manpage.render_options(), _manpage.render_keys(), _manpage.render_environment()
    for s in config.SETTINGS:
        assert f"\\fB{s.name}\\fR" in keys, s.name
        assert f"\\fB{s.env}\\fR" in environment, s.env
        for flag in s.flags:
            assert "\\fB" + flag.replace("-", "\\-") + "\\fR" in options, flag


def test_generated_signals_follow_the_masters_table():
    from pycluster.master.arbiter import _SIGNALS
    block = _manpage.render_signals()
    for signum in _SIGNALS:
        assert f"\\fB{signum.name}\\fR" in block


def test_check_detects_drift_and_write_repairs_it(tmp_path):
    page = tmp_path / "pycluster.1"
    text = MAN1.read_text(encoding="utf-8")
    assert "Number of workers" in text
    page.write_text(text.replace("Number of workers", "Count of workers", 1), encoding="utf-8")
    stale = _py(str(GENERATOR), "--check", str(page))
    assert stale.returncode == 1
    assert "Count of workers" in stale.stderr  # the diff shows what differs
    written = _py(str(GENERATOR), "--write", str(page))
    assert written.returncode == 0, written.stderr
    assert page.read_text(encoding="utf-8") == text
    assert _py(str(GENERATOR), "--check", str(page)).returncode == 0


def test_check_refuses_a_page_without_markers(tmp_path):
    page = tmp_path / "plain.1"
    page.write_text('.TH PLAIN 1\n.SH NAME\nplain \\- nothing generated\n', encoding="utf-8")
    assert _py(str(GENERATOR), "--check", str(page)).returncode == 2
    assert _py(str(GENERATOR), "--check", str(tmp_path / "missing.1")).returncode == 2


# -- groff ------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [MAN1, MAN5], ids=lambda p: p.name)
def test_groff_renders_without_warnings(page):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    result = subprocess.run(["groff", "-man", "-ww", "-Tutf8", str(page)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "NAME" in result.stdout


# -- options in the man page -----------------------------------------------------
def test_every_long_option_of_run_help_is_in_the_man_page():
    result = _py("-c", "from pycluster.cli import main; main()", "run", "--help")
    assert result.returncode == 0, result.stderr
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", result.stdout))
    assert {"--workers", "--bind", "--config", "--help"} <= options
    page = _man_text(MAN1)
    missing = sorted(o for o in options if o not in page)
    assert not missing, f"pycluster(1) lacks {missing}"


def test_every_option_of_every_verb_is_in_the_man_page():
    from pycluster.cli import main
    page = _man_text(MAN1)
    for name, command in main.commands.items():
        assert re.search(rf"^\.BR {name}\b", page, re.M), f"no COMMANDS entry for {name}"
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--"):
                    assert opt in page, f"pycluster(1) lacks {name} {opt}"


# -- configs/pycluster.toml ---------------------------------------------------------
def test_example_config_loads_and_sets_every_key():
    cfg = config.load({}, config_path=str(TOML), environ={})
    assert cfg.file == str(TOML)
    unset = [s.name for s in config.SETTINGS if cfg.sources[s.name] != str(TOML)]
    assert not unset, f"configs/pycluster.toml does not set {unset}"
    assert cfg.app == "pycluster.examples.hello:main"
    assert cfg.bind, "the example binds an address"


def test_example_config_comments_every_key():
    lines = TOML.read_text(encoding="utf-8").splitlines()
    for s in config.SETTINGS:
        index = next(i for i, line in enumerate(lines) if re.match(rf"{s.name}\s*=", line))
        above = index - 1
        while above >= 0 and re.match(r"\w+\s*=", lines[above]):  # a group of keys under one comment
            above -= 1
        assert above >= 0 and lines[above].startswith("#"), f"{s.name} has no comment above it"


# -- systemd units and logrotate -----------------------------------------------------------
def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return parser


def _exec_start() -> list[str]:
    return shlex.split(_unit(SERVICE)["Service"]["ExecStart"])


def test_service_unit_settings():
    service = _unit(SERVICE)["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    argv = _exec_start()
    assert argv[:2] == ["/usr/local/bin/pycluster", "run"]
    graceful = float(argv[argv.index("--graceful-timeout") + 1]) if "--graceful-timeout" in argv \
        else config.BY_NAME["graceful_timeout"].default
    assert graceful < float(service["TimeoutStopSec"]) <= graceful + 15
    # The command line itself is valid for `pycluster run`.
    flags = {"app": argv[2]}
    i = 3
    while i < len(argv):
        setting = next(s for s in config.SETTINGS if argv[i] in s.flags)
        if setting.is_flag:
            flags[setting.name] = True
            i += 1
        else:
            flags[setting.name] = (argv[i + 1],) if setting.multiple else argv[i + 1]
            i += 2
    config.load(flags, config_path=str(TOML), environ={})


def test_socket_unit_feeds_the_service():
    socket_unit = _unit(SOCKET)
    assert socket_unit["Socket"]["ListenStream"] == "8000"
    assert socket_unit["Socket"].get("Accept", "no") == "no"
    assert "pycluster.socket" in _unit(SERVICE)["Unit"]["Requires"].split()
    # The service takes its port from the socket unit, so it binds nothing itself.
    assert "--bind" not in _exec_start() and "-b" not in _exec_start()


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's binary exists: point it at one that does.
    text = SERVICE.read_text(encoding="utf-8").replace("/usr/local/bin/pycluster", shutil.which("true") or "/bin/true")
    (tmp_path / "pycluster.service").write_text(text, encoding="utf-8")
    shutil.copy(SOCKET, tmp_path / "pycluster.socket")
    result = subprocess.run([analyze, "verify", "--man=no", "./pycluster.socket", "./pycluster.service"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_logrotate_signals_the_master_from_its_pidfile():
    import signal

    from pycluster.master.arbiter import _SIGNALS
    assert _SIGNALS[signal.SIGUSR1] == {"cmd": "reopen"}
    text = LOGROTATE.read_text(encoding="utf-8")
    argv = _exec_start()
    pidfile, log_file = argv[argv.index("--pidfile") + 1], argv[argv.index("--log-file") + 1]
    postrotate = text.split("postrotate", 1)[1].split("endscript", 1)[0]
    assert re.search(rf"kill -USR1 \"\$\(cat {re.escape(pidfile)}\)\"", postrotate), postrotate
    assert text.count("{") == text.count("}")
    assert re.search(rf"^{re.escape(log_file)}\s*\{{", text, re.M), "rotates the service's log file"
    cfg = config.load({}, config_path=str(TOML), environ={})
    assert (cfg.pidfile, cfg.log_file) == (pidfile, log_file)


# -- README ---------------------------------------------------------------------------------
def _ci_test_command() -> str:
    lines = CI.read_text(encoding="utf-8").splitlines()
    marker = next(i for i, line in enumerate(lines) if "README's second command" in line)
    return lines[marker + 1].strip()


def test_readme_starts_with_the_demo_and_the_ci_test_command():
    first, second = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()[:2]]
    assert first.endswith("pycluster run pycluster.examples.hello:main -w 4 --bind 127.0.0.1:8000")
    assert re.match(r"(python3? -m )?pip install \. && ", first), first
    assert second == _ci_test_command()
    assert "pip install" in second and "-e '.[test]'" in second and second.endswith("-m pytest")
