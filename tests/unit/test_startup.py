"""`pycluster startup` writes a systemd unit for a run command line; Address
objects print as the --bind syntax."""

from __future__ import annotations

from click.testing import CliRunner

from pycluster.cli import main
from pycluster.core.worker import Address


def test_startup_writes_a_notify_unit_for_the_run_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "-w", "4", "app:main", "-b", ":8000"])
    assert result.exit_code == 0, result.output
    unit = result.output
    assert "Type=notify" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "TimeoutStopSec=35" in unit  # graceful_timeout 30 + margin
    assert "Description=pycluster app (app:main)\n" in unit  # named after the target, not after "4"
    assert "TimeoutStartSec=40" in unit  # boot_timeout 30 + margin
    assert "RestartPreventExitStatus=2" in unit  # a usage or config error: no restart loop
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("run -w 4 app:main -b :8000")


def test_startup_writes_a_user_unit_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "unit.service"
    result = CliRunner().invoke(main, ["startup", "--user", "-o", str(out), "--", "app:main"])
    assert result.exit_code == 0, result.output
    assert "WantedBy=default.target" in out.read_text()
    assert "systemctl --user enable --now unit.service" in result.output


def test_startup_rejects_a_bad_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pycluster.toml").write_text("wokers = 3\n")
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "app:main"])
    assert result.exit_code == 2
    assert "did you mean 'workers'" in result.output


def test_startup_reads_the_target_after_options_with_the_run_parser(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "-b", "127.0.0.1:8000", "app:main"])
    assert result.exit_code == 0, result.output
    assert "Description=pycluster app (app:main)\n" in result.output  # not "127" (an address is no target)
    exec_start = next(line for line in result.output.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("run -b 127.0.0.1:8000 app:main")


def test_startup_takes_name_timeout_and_config_file_from_the_run_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.toml").write_text('app = "pkg.web:main"\ngraceful_timeout = 12\n')
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "-c", "other.toml", "--policy", "none"])
    assert result.exit_code == 0, result.output
    assert "Description=pycluster web (pkg.web:main)\n" in result.output and "TimeoutStopSec=17" in result.output
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "--graceful-timeout", "20", "-n", "api",
                                       "srv.py"])
    assert result.exit_code == 0, result.output
    assert "Description=pycluster api (srv.py)\n" in result.output and "TimeoutStopSec=25" in result.output


def test_startup_derives_both_timeouts_from_the_run_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "app:main", "--graceful-timeout", "120",
                                       "--boot-timeout", "60.5"])
    assert result.exit_code == 0, result.output
    assert "TimeoutStopSec=125\n" in result.output and "TimeoutStartSec=71\n" in result.output
    # --preload: the fork server, then the workers, each have boot_timeout to get ready
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "app:main", "--preload", "--boot-timeout", "20"])
    assert result.exit_code == 0, result.output
    assert "TimeoutStartSec=50\n" in result.output and "TimeoutStopSec=35\n" in result.output


def test_startup_escapes_systemd_specifiers_and_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "app:main", "--env", "A=50%$HOME\\n"])
    assert result.exit_code == 0, result.output
    exec_start = next(line for line in result.output.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("run app:main --env 'A=50%%$$HOME\\\\n'")


def test_startup_refuses_run_arguments_that_run_would_refuse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "--bogus", "app:main"])
    assert result.exit_code == 2
    assert "No such option" in result.output and "--bogus" in result.output
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "-w", "many", "app:main"])
    assert result.exit_code == 2 and "bad value for 'workers'" in result.output
    result = CliRunner().invoke(main, ["startup", "-o", "-", "--", "-w", "2"])
    assert result.exit_code == 2 and "no app to run" in result.output


def test_address_prints_as_bind_syntax():
    assert str(Address("127.0.0.1", 8000, 4)) == "127.0.0.1:8000"
    assert str(Address("::", 8000, 6)) == "[::]:8000"
    assert str(Address("/run/app.sock", None, -1)) == "unix:/run/app.sock"
    assert str(Address("0.0.0.0", 53, "udp4")) == "udp://0.0.0.0:53"
