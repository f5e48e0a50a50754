"""Where ``pycluster run`` finds its settings (SPEC section 3, "Config").

``./pycluster.toml``, else ``[tool.pycluster]`` in ``./pyproject.toml``, or
``-c FILE``; ``PYCLUSTER_*`` environment variables; precedence
flag > env > file > default. Checked on a real master through
``pycluster status --json`` (``workers_wanted``, ``policy``, ``name``, ``target``).
"""

from __future__ import annotations

import json

import pytest

from cli_support import IDLE_APP, pyc  # noqa: F401  (pyc is a fixture)

pytestmark = pytest.mark.timeout(60)


def status_json(pyc, name: str) -> dict:
    done = pyc.cli("status", "-n", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_pycluster_toml_in_cwd_wins_over_pyproject(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    pyc.write("pycluster.toml", """
        app = "idle_app:main"
        workers = 2
        policy = "none"
    """)
    pyc.write("pyproject.toml", """
        [tool.pycluster]
        workers = 3
        policy = "reuseport"
    """)
    master = pyc.start()  # no TARGET: it comes from the file
    assert master.wait_ready() == 2
    status = status_json(pyc, "app")
    assert status["workers_wanted"] == 2
    assert status["policy"] == "none"
    assert status["target"] == "idle_app:main"


def test_tool_pycluster_in_pyproject(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    pyc.write("pyproject.toml", """
        [project]
        name = "someapp"

        [tool.pycluster]
        workers = 2
    """)
    master = pyc.start("idle_app:main")
    assert master.wait_ready() == 2
    status = status_json(pyc, "app")
    assert status["workers_wanted"] == 2
    assert status["policy"] == "rr"  # not set anywhere: the default


def test_config_file_option_beats_the_cwd_file(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    pyc.write("pycluster.toml", 'workers = 2\npolicy = "none"\n')
    (pyc.dir / "etc").mkdir()
    other = pyc.write("etc/prod.toml", 'workers = 1\npolicy = "reuseport"\nname = "prod"\n')
    master = pyc.start("idle_app:main", "-c", other, name=None)
    master.control = pyc.runtime_dir / "prod.sock"  # the name came from the file
    assert master.wait_ready() == 1
    status = status_json(pyc, "prod")
    assert status["name"] == "prod"
    assert status["workers_wanted"] == 1
    assert status["policy"] == "reuseport"


def test_pycluster_env_variables(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", env={"PYCLUSTER_WORKERS": "2", "PYCLUSTER_POLICY": "none"})
    assert master.wait_ready() == 2
    status = status_json(pyc, "app")
    assert status["workers_wanted"] == 2
    assert status["policy"] == "none"


def test_precedence_flag_over_env_over_file_over_default(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    pyc.write("pycluster.toml", """
        workers = 1
        policy = "none"
        name = "fromfile"
    """)
    env = {"PYCLUSTER_WORKERS": "2", "PYCLUSTER_POLICY": "reuseport"}
    master = pyc.start("idle_app:main", "--policy", "rr", env=env, name=None)
    master.control = pyc.runtime_dir / "fromfile.sock"
    assert master.wait_ready() == 2
    status = status_json(pyc, "fromfile")
    assert status["name"] == "fromfile"      # file only: file beats the default (the module name)
    assert status["workers_wanted"] == 2     # env beats file
    assert status["policy"] == "rr"          # flag beats env and file

    # Flags beat the environment (and the file) for -w and -n too.
    second = pyc.start("idle_app:main", "-w", "1", name="fromflag",
                       env={"PYCLUSTER_NAME": "fromenv", "PYCLUSTER_WORKERS": "2"})
    assert second.wait_ready() == 1
    assert status_json(pyc, "fromflag")["workers_wanted"] == 1
    assert not (pyc.runtime_dir / "fromenv.sock").exists()
