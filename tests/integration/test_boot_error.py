"""A worker that exits with WORKER_BOOT_ERROR (70: pycluster's own bootstrap
failed in it, e.g. no channel) halts the master instead of being respawned
forever (SPEC 4, STYLE habit 7; gunicorn's WORKER_BOOT_ERROR), also once the
cluster is running: ``pycluster run`` exits 3 naming the worker and the code."""

from __future__ import annotations

import os
import signal

import pytest

from cli_support import pyc  # noqa: F401  (fixture)
from pycluster.errors import EXIT_BOOT, WORKER_BOOT_ERROR

pytestmark = pytest.mark.timeout(60)

APP = """
    import os
    import threading

    def main():
        if os.path.exists(os.environ["BOOT_BROKEN"]):
            os._exit(70)  # what the worker runtime does when its bootstrap fails
        import pycluster
        pycluster.listeners()
        threading.Event().wait()
"""


def test_a_worker_boot_error_halts_the_running_master(pyc, free_port, tmp_path):
    pyc.write("bootapp.py", APP)
    broken = tmp_path / "broken"
    master = pyc.start("bootapp:main", "-w", "1", "-b", f"127.0.0.1:{free_port}",
                       "--env", f"BOOT_BROKEN={broken}", name="boot")
    assert master.wait_ready(20) == 1
    (worker,) = master.status()["workers"]
    broken.touch()
    os.kill(worker["pid"], signal.SIGKILL)
    assert master.wait_exit(15) == EXIT_BOOT, master.output()
    err = "\n".join(master.stderr)
    assert "a worker failed to boot" in err and f"code {WORKER_BOOT_ERROR}" in err, master.output()
    assert master.find_line(r"replacing it") is not None, master.output()  # the SIGKILL was replaced once
