"""Shared fixtures: run a real primary script in its own process group and
always clean up every process it started, even when the test fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from support import FIXTURES, REPORT_PREFIX, ROOT, SRC, Result, child_env, kill_group, parse_reports  # noqa: F401


@pytest.fixture
def run_script(tmp_path):
    """run_script(code, env=..., timeout=..., args=..., cwd=...) -> Result.

    The code is written to a file and run as ``python file.py`` in a new
    session; on timeout (or test end) the whole process group is killed."""
    procs: list[subprocess.Popen] = []

    def run(code: str, *, env: dict | None = None, timeout: float = 30, args=(), cwd=None,
            name: str | None = None, pass_fds=()) -> Result:
        path = tmp_path / (name or f"script_{len(procs)}.py")
        path.write_text(textwrap.dedent(code))
        proc = subprocess.Popen([sys.executable, str(path), *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=child_env(env),
                                start_new_session=True, cwd=cwd or tmp_path, pass_fds=pass_fds)
        procs.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"{path.name} did not finish in {timeout}s\n--- stdout\n{out}\n--- stderr\n{err}")
        return Result(proc.returncode, out, err, parse_reports(out))

    yield run
    for proc in procs:
        kill_group(proc)


@pytest.fixture
def spawn_script(tmp_path):
    """spawn_script(code, ...) -> Popen (text pipes, new session); killed at test end."""
    procs: list[subprocess.Popen] = []

    def spawn(code: str, *, env: dict | None = None, args=(), cwd=None, name: str | None = None,
              pass_fds=()) -> subprocess.Popen:
        path = tmp_path / (name or f"spawned_{len(procs)}.py")
        path.write_text(textwrap.dedent(code))
        proc = subprocess.Popen([sys.executable, str(path), *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=child_env(env),
                                start_new_session=True, cwd=cwd or tmp_path, pass_fds=pass_fds)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        kill_group(proc)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
