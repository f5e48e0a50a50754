"""Port of the validation part of Node's test-inspector-port-cluster.js
(sequential).

pycluster forwards ``inspect_port`` to workers (debugpy, when installed);
only the validation is ported here. Node: invalid ``inspectPort`` values make
``fork()`` throw synchronously (ERR_SOCKET_BAD_PORT): a string, null,
1293812, -9776, a function returning 123121, a function returning a string.

Python translation: for 'x', 1293812, -9776, True, 1.5, a function returning
123121 and a function returning a string, ``setup_primary(inspect_port=v)``
followed by ``fork()`` raises ``pycluster.SettingsError`` (a ValueError)
synchronously - from either call, never later from the loop - and no worker
is started ('fork' never fires, ``cluster.workers`` stays empty, the
primary's open descriptors are the same as before). ``None`` is Python's
"not set" (Node's undefined), so it is valid, as is any int 0-65535; a
function is called once per fork and its value used. The worker sees no
pycluster variable for it in its environment.
"""

from __future__ import annotations

SCRIPT = """
import os
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.on("fork", lambda worker: report(forked=worker.id))
    calls = []

    def returns(value):
        def port():
            calls.append(value)
            return value
        return port

    invalid = {"string": "x", "too-big": 1293812, "negative": -9776, "bool": True, "float": 1.5,
               "function-too-big": returns(123121), "function-string": returns("9229")}
    fds_before = sorted(os.listdir("/proc/self/fd"))
    outcome = {}
    for name, value in invalid.items():
        try:
            cluster.setup_primary(inspect_port=value)
            cluster.fork()
        except cluster.SettingsError as exc:
            outcome[name] = ["SettingsError", isinstance(exc, ValueError), str(exc)]
        except BaseException as exc:
            outcome[name] = [type(exc).__name__, isinstance(exc, ValueError), str(exc)]
        else:
            outcome[name] = None
    report(invalid=outcome, workers_after_invalid=len(cluster.workers), function_calls=calls)
    report(fds_leaked=sorted(set(os.listdir("/proc/self/fd")) - set(fds_before)))

    ok_calls = []

    def valid_port():
        ok_calls.append(1)
        return 0

    valid = []
    for value in (None, 0, 65535, 9229, valid_port):
        cluster.setup_primary(inspect_port=value)
        valid.append(cluster.fork().id)
    report(valid_forks=valid, valid_function_calls=len(ok_calls))
    def on_message(worker, message):
        report(worker_vars=message)
        worker.disconnect()

    cluster.on("message", must_call(on_message, 5))
    report(primary_rc=cluster.run())
else:
    cluster.worker.send(sorted(k for k in os.environ if k.startswith("PYCLUSTER_")))
"""


def test_invalid_inspect_port_fails_fork_synchronously(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    invalid = res.report("invalid")
    for name, outcome in invalid.items():
        assert outcome is not None, f"inspect_port {name}: fork() did not raise"
        assert outcome[0] == "SettingsError" and outcome[1] is True, (name, outcome)
    assert res.report("workers_after_invalid") == 0
    assert res.report("function_calls") == [123121, "9229"]
    assert res.report("fds_leaked") == [], "a fork that failed validation left descriptors open"
    # 'fork' fired only for the five valid ones, with ids in order
    forked = res.all("forked")
    assert len(forked) == 5 and forked == sorted(forked)
    assert res.report("valid_forks") == forked
    assert res.report("valid_function_calls") == 1
    assert res.all("worker_vars") == [[]] * 5
    assert res.report("primary_rc") == 0
