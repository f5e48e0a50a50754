"""Shell completion through click: ``_PYCLUSTER_COMPLETE={bash,zsh,fish}_source``
prints a script for ``pycluster`` (from the console script and from
``python -m pycluster.cli``, which names itself pycluster), and the bash script,
sourced in a real bash, completes verbs and options.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pycluster.cli import main

SCRIPTS = {"bash": "complete -o nosort -F _pycluster_completion pycluster",
           "zsh": "#compdef pycluster",
           "fish": "complete --no-files --command pycluster"}


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_each_shell_gets_a_completion_script(shell):
    result = CliRunner().invoke(main, [], prog_name="pycluster", env={"_PYCLUSTER_COMPLETE": f"{shell}_source"})
    assert result.exit_code == 0, result.output
    assert SCRIPTS[shell] in result.output


def test_python_dash_m_prints_the_same_script():
    env = dict(os.environ, _PYCLUSTER_COMPLETE="bash_source")
    done = subprocess.run([sys.executable, "-m", "pycluster.cli"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert SCRIPTS["bash"] in done.stdout


def test_bash_completes_verbs_and_options_through_the_console_script():
    script, bash = shutil.which("pycluster"), shutil.which("bash")
    if not script or not bash:
        pytest.skip("needs the installed pycluster console script and bash")
    probe = ('eval "$(_PYCLUSTER_COMPLETE=bash_source pycluster)"; '
             'COMP_WORDS=(pycluster st); COMP_CWORD=1; _pycluster_completion pycluster; echo "${COMPREPLY[@]}"; '
             'COMP_WORDS=(pycluster reload --); COMP_CWORD=2; _pycluster_completion pycluster; echo "${COMPREPLY[@]}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("_PYCLUSTER")}
    env["PATH"] = os.path.dirname(script) + os.pathsep + env.get("PATH", "")
    done = subprocess.run([bash, "--norc", "--noprofile", "-c", probe], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    verbs, options = done.stdout.splitlines()
    assert verbs.split() == ["startup", "status", "stop"]
    assert {"--wait", "--no-wait", "--name", "--control"} <= set(options.split())
