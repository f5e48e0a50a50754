"""What the README's install command promises, tested on a real install: the
checkout is installed into a fresh venv (``pip install --no-deps
--no-build-isolation``: no download), then ``man`` finds both pages from the
venv's bin/ on PATH, and the shipped and the generated systemd units pass
``systemd-analyze verify`` against that install."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[2]
MAN = shutil.which("man")
ANALYZE = shutil.which("systemd-analyze")
SHIPPED_EXE = "/usr/local/bin/pycluster"

# setuptools builds wheels itself from 70.1; before that it needs the wheel package (the test extra).
_CAN_BUILD = importlib.util.find_spec("wheel") is not None or \
    tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit()) >= (70, 1)
pytestmark = pytest.mark.skipif(not _CAN_BUILD, reason="no wheel package for setuptools < 70.1 (the test extra)")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv (system site packages: no download) with the checkout installed by pip."""
    base = tmp_path_factory.mktemp("install")
    src = base / "checkout"  # a copy: an in-tree build would leave build/ and *.egg-info in the worktree
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    shutil.copytree(ROOT / "man", src / "man", ignore=ignore)
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env_dir)],
                   check=True, timeout=60)
    proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index", str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (env_dir / "bin" / "pycluster").exists()
    return env_dir


def _env(venv: Path) -> dict[str, str]:
    """The environment of a shell with the venv activated: its bin/ first on PATH, no MANPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return env


@pytest.mark.skipif(MAN is None, reason="man is not installed (man-db)")
def test_man_finds_both_pages_after_pip_install(venv):
    env = _env(venv)
    for args, page in ((["pycluster"], "man1/pycluster.1"), (["5", "pycluster.toml"], "man5/pycluster.toml.5")):
        proc = subprocess.run([MAN, "-w", *args], env=env, capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, f"man -w {' '.join(args)}: {proc.stderr}"
        found = Path(proc.stdout.strip())
        assert found == venv / "share" / "man" / page
        assert found.read_bytes() == (ROOT / "man" / Path(page).name).read_bytes()


@pytest.mark.skipif(MAN is None, reason="man is not installed (man-db)")
def test_man_searches_usr_local_share_man_for_usr_local_bin():
    """`sudo pip install .` puts the pages in /usr/local/share/man (the prefix's share/man, as in the venv)."""
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    proc = subprocess.run([shutil.which("manpath") or "manpath"], env=env, capture_output=True, text=True,
                          timeout=10)
    assert "/usr/local/share/man" in proc.stdout.strip().split(":")


def _verify(venv: Path, *units: Path) -> None:
    cmd = [ANALYZE, "verify", *(str(u) for u in units)]
    if MAN is None:  # the Documentation=man: references are checked by running man
        cmd.insert(2, "--man=no")
    proc = subprocess.run(cmd, env=_env(venv), capture_output=True, text=True, timeout=30, cwd=units[0].parent)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stdout + proc.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (systemd)")
def test_shipped_units_pass_systemd_analyze_verify(venv, tmp_path):
    """The shipped units, with only the install location of pycluster changed
    (/usr/local/bin is where a root `pip install .` puts it on Debian)."""
    service = (ROOT / "configs" / "pycluster.service").read_text()
    directives = [line for line in service.splitlines() if SHIPPED_EXE in line and not line.startswith("#")]
    assert directives and all(line.startswith("ExecStart=") for line in directives)
    (tmp_path / "pycluster.service").write_text(service.replace(SHIPPED_EXE, str(venv / "bin" / "pycluster")))
    shutil.copy2(ROOT / "configs" / "pycluster.socket", tmp_path / "pycluster.socket")
    _verify(venv, tmp_path / "pycluster.service", tmp_path / "pycluster.socket")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (systemd)")
def test_generated_unit_passes_systemd_analyze_verify(venv, tmp_path):
    unit = tmp_path / "pycluster-app.service"
    proc = subprocess.run([str(venv / "bin" / "pycluster"), "startup", "-o", str(unit), "--",
                           "-b", "127.0.0.1:8000", "app:main", "--graceful-timeout", "120", "--env", "RATIO=50%"],
                          env=_env(venv), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = unit.read_text()
    assert f"ExecStart={venv / 'bin' / 'pycluster'} run -b 127.0.0.1:8000 app:main" in text
    assert "Description=pycluster app (app:main)\n" in text
    assert "TimeoutStopSec=125\n" in text and "TimeoutStartSec=40\n" in text
    assert "RestartPreventExitStatus=2\n" in text
    _verify(venv, unit)
