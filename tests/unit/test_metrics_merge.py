"""The master's merge of the workers' prometheus_client samples (master/metrics.py), no processes."""

from __future__ import annotations

import pytest

from pycluster.master.metrics import AppMetrics, family, render

parser = pytest.importorskip("prometheus_client.parser")


def push(requests: float, gauge: float, buckets: tuple[float, float]) -> list:
    return [
        ["app_requests", "counter", "Requests.", [["app_requests_total", {"path": "/"}, requests]]],
        ["app_queue", "gauge", "Queue depth.", [["app_queue", {}, gauge]]],
        ["app_latency", "histogram", "Latency.", [["app_latency_bucket", {"le": "0.5"}, buckets[0]],
                                                  ["app_latency_bucket", {"le": "+Inf"}, buckets[1]],
                                                  ["app_latency_count", {}, buckets[1]],
                                                  ["app_latency_sum", {}, 0.25 * buckets[1]]]],
        ["process_cpu_seconds", "counter", "CPU.", [["process_cpu_seconds_total", {}, 1.5]]],
    ]


def parsed(app: AppMetrics) -> dict:
    return {f.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
            for f in parser.text_string_to_metric_families(render(app.merged()))}


def test_counters_and_histograms_sum_and_survive_their_workers():
    app = AppMetrics()
    app.update(1, push(10, 3, (4, 5)))
    app.update(2, push(7, 9, (1, 2)))
    out = parsed(app)
    assert out["app_requests"][("app_requests_total", (("path", "/"),))] == 17
    assert out["app_latency"][("app_latency_bucket", (("le", "+Inf"),))] == 7
    assert out["app_queue"] == {("app_queue", (("worker", "1"),)): 3, ("app_queue", (("worker", "2"),)): 9}
    assert set(out["process_cpu_seconds"]) == {("process_cpu_seconds_total", (("worker", "1"),)),
                                               ("process_cpu_seconds_total", (("worker", "2"),))}
    app.retire(1)
    app.update(3, push(1, 0, (1, 1)))  # its replacement starts from zero
    out = parsed(app)
    assert out["app_requests"][("app_requests_total", (("path", "/"),))] == 18
    assert out["app_latency"][("app_latency_count", ())] == 8
    assert ("app_queue", (("worker", "1"),)) not in out["app_queue"]  # a dead worker's gauge is gone


def test_a_push_read_after_its_workers_exit_counts_once():
    app = AppMetrics()
    app.update(1, push(10, 0, (0, 0)))
    app.retire(1)
    app.update(1, push(12, 0, (0, 0)))  # sent just before the SIGKILL, read after the exit
    app.retire(5)  # exited before its first push arrived
    app.update(5, push(3, 0, (0, 0)))
    out = parsed(app)
    assert out["app_requests"][("app_requests_total", (("path", "/"),))] == 15
    assert "app_queue" not in out or not out["app_queue"]


def test_the_text_format_escapes_and_spells_specials():
    text = render([family("x", "gauge", 'a "help"\\ line\nnext', [({"v": 'q"\\\n'}, float("inf"))])])
    assert text == ('# HELP x a "help"\\\\ line\\nnext\n# TYPE x gauge\nx{v="q\\"\\\\\\n"} +Inf\n')
    (fam,) = parser.text_string_to_metric_families(text)
    assert fam.samples[0].labels == {"v": 'q"\\\n'}


@pytest.mark.parametrize("mode,expected", [("livesum", 12.0), ("sum", 12.0), ("max", 9.0), ("livemin", 3.0),
                                           ("mostrecent", 3.0)])
def test_a_gauge_declaring_a_multiprocess_mode_is_aggregated(mode, expected):
    def gauge(value: float) -> list:
        return [["app_inflight", "gauge", "In flight.", [["app_inflight", {"path": "/"}, value]], mode]]
    app = AppMetrics()
    app.update(1, gauge(9))
    app.update(2, gauge(3))  # the most recent push
    assert parsed(app)["app_inflight"] == {("app_inflight", (("path", "/"),)): expected}
    app.retire(2)  # a dead worker's gauge is gone, whatever the mode
    assert parsed(app)["app_inflight"] == {("app_inflight", (("path", "/"),)): 9.0}


def test_a_gauge_in_mode_all_stays_per_worker():
    app = AppMetrics()
    for worker, value in ((1, 2.0), (2, 5.0)):
        app.update(worker, [["app_temp", "gauge", "T.", [["app_temp", {}, value]], "all"]])
    assert parsed(app)["app_temp"] == {("app_temp", (("worker", "1"),)): 2.0, ("app_temp", (("worker", "2"),)): 5.0}


def test_the_worker_sends_each_gauges_declared_mode():
    prometheus_client = pytest.importorskip("prometheus_client")
    from pycluster.child.metrics import collect
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Gauge("app_inflight", "In flight.", registry=registry, multiprocess_mode="livesum").set(4)
    prometheus_client.Gauge("app_temp", "T.", registry=registry).set(1)
    prometheus_client.Counter("app_hits", "Hits.", registry=registry).inc()
    modes = {entry[0]: entry[4] for entry in collect(registry)}
    assert modes == {"app_inflight": "livesum", "app_temp": "all", "app_hits": ""}


def test_what_a_worker_cannot_put_on_metrics():
    """A worker is untrusted: a name that would break the text format (or add lines of its
    own), a pycluster_* family (the master's), or a bad label name is dropped; the rest stays."""
    app = AppMetrics()
    app.update(1, [
        ["app_ok", "counter", "Fine.", [["app_ok_total", {"path": "/"}, 1]]],
        ["evil\npycluster_workers", "gauge", "x", [["evil\npycluster_workers", {}, 999]]],
        ["pycluster_workers", "gauge", "Spoofed.", [["pycluster_workers", {"state": "ready"}, 999]]],
        ["app_labels", "gauge", "x", [["app_labels", {"bad label\n": "v"}, 1], ["app_labels", {"ok": "v\n\""}, 2]]],
        ["app_other", "gauge", "x", [["not_app_other", {}, 1]]],
        ["app_type", "bogus", "x", [["app_type", {}, 1]]],
    ])
    out = parsed(app)  # the whole exposition still parses
    assert set(out) == {"app_ok", "app_labels", "app_other"}
    assert out["app_labels"] == {("app_labels", (("ok", 'v\n"'), ("worker", "1"))): 2.0}
    assert out["app_other"] == {}
