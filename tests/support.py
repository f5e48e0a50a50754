"""Helpers shared by the tests (importable as ``support``; conftest.py uses them too)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
FIXTURES = ROOT / "tests" / "fixtures"
REPORT_PREFIX = "@@ "


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(FIXTURES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYCLUSTER_WORKER_ID", None)
    env.pop("PYCLUSTER_SCHED_POLICY", None)
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    reports: list = field(default_factory=list)

    def report(self, key: str):
        """The value of the last report that has ``key``."""
        for rep in reversed(self.reports):
            if key in rep:
                return rep[key]
        raise KeyError(f"no report with {key!r}; stdout:\n{self.stdout}\nstderr:\n{self.stderr}")

    def all(self, key: str) -> list:
        return [rep[key] for rep in self.reports if key in rep]


def parse_reports(stdout: str) -> list:
    out = []
    for line in stdout.splitlines():
        if line.startswith(REPORT_PREFIX):
            out.append(json.loads(line[len(REPORT_PREFIX):]))
    return out


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


