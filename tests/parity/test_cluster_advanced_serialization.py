"""Port of Node's test/parallel/test-cluster-advanced-serialization.js.

Node: with ``cluster.settings.serialization = 'advanced'`` the primary sends a
self-referencing object and the worker echoes it back deep-equal.

Python translation: pycluster's messages are JSON only (SPEC section 2: a
worker may run with fewer privileges than its primary, so nothing is ever
unpickled). So the test asserts the opposite side of Node's:

* ``setup_primary(serialization="advanced")`` raises ``pycluster.SettingsError``
  (a ValueError) and leaves ``cluster.settings`` untouched; "json" is accepted;
* in JSON mode ``send()`` of a value JSON cannot carry (a circular dict, a set,
  bytes, NaN) is rejected *clearly* and synchronously, on both sides, with a
  TypeError/ValueError whose message names the problem, and the channel keeps
  working afterwards;
* a nested JSON value round-trips deep-equal (primary -> worker -> primary).
  A tuple is JSON-encodable and arrives as a list (documented lossy mapping).
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report


def bad_values():
    circular = {"name": "loop"}
    circular["self"] = circular
    return {"circular": circular, "set": {1, 2}, "bytes": b"raw", "nan": float("nan")}


def try_bad(send):
    outcome = {}
    for name, value in bad_values().items():
        try:
            send(value)
        except (TypeError, ValueError) as exc:
            outcome[name] = [type(exc).__name__, str(exc)]
        else:
            outcome[name] = None
    return outcome


PAYLOAD = {"list": [1, 2.5, "three", None, True], "nested": {"a": {"b": {"c": ["deep"]}}},
           "unicode": "h\u00e9llo \u2603", "tuple": (1, 2), "empty": {}, "big": 2 ** 53}

if cluster.is_primary:
    deadline(20)
    try:
        cluster.setup_primary(serialization="advanced")
    except cluster.SettingsError as exc:
        report(advanced=[type(exc).__name__, isinstance(exc, ValueError), str(exc)])
    else:
        report(advanced=None)
    report(settings_serialization=cluster.settings.get("serialization", "<unset>"))
    cluster.setup_primary(serialization="json")
    report(json_setting=cluster.settings.get("serialization"))

    worker = cluster.fork()

    def on_online():
        report(primary_rejects=try_bad(worker.send))
        worker.send(PAYLOAD)

    def on_message(message, handle):
        report(echo=message)
        worker.disconnect()

    def on_exit(code, signal):
        report(exit=[code, signal])

    worker.on("online", must_call(on_online, 1, "online"))
    worker.on("message", must_call(on_message, 1, "message"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    def on_message(message, handle):
        report(worker_rejects=try_bad(cluster.worker.send))
        cluster.worker.send(message)

    cluster.worker.on("message", on_message)
"""

BAD = ("circular", "set", "bytes", "nan")


def _check_rejects(outcome):
    assert sorted(outcome) == sorted(BAD)
    for name in BAD:
        assert outcome[name] is not None, f"sending {name} was accepted in JSON mode"
        exc_type, message = outcome[name]
        assert exc_type in ("TypeError", "ValueError")
        assert message
    assert "ircular" in outcome["circular"][1]
    assert "set" in outcome["set"][1]
    assert "bytes" in outcome["bytes"][1]


def test_cluster_advanced_serialization(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    name, is_value_error, message = result.report("advanced")
    assert name == "SettingsError" and is_value_error
    assert "serialization" in message
    assert result.report("settings_serialization") == "<unset>"
    assert result.report("json_setting") == "json"
    _check_rejects(result.report("primary_rejects"))
    _check_rejects(result.report("worker_rejects"))
    assert result.report("echo") == {
        "list": [1, 2.5, "three", None, True], "nested": {"a": {"b": {"c": ["deep"]}}},
        "unicode": "h\u00e9llo \u2603", "tuple": [1, 2], "empty": {}, "big": 2 ** 53}
    assert result.report("exit") == [0, None]
