"""The Prometheus registry and its text exposition."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.errors import ValidationError
from backend_services.observability.metrics import (
    CONTENT_TYPE,
    Counter,
    Gauge,
    Histogram,
    MetricFamily,
    Registry,
    render,
)

from .promtext import parse, value

# --- instruments ---------------------------------------------------------------------


def test_counter_counts_per_label_set() -> None:
    """A labelled counter keeps one series per label set and renders each."""
    reg = Registry()
    calls = reg.counter("backend_services_test_calls_total", "Calls.", ["outcome"])
    calls.labels(outcome="success").inc()
    calls.labels("success").inc(2)
    calls.labels(outcome="failure").inc()
    fams = parse(render(reg))
    assert fams["backend_services_test_calls_total"].kind == "counter"
    assert value(fams, "backend_services_test_calls_total", outcome="success") == 3
    assert value(fams, "backend_services_test_calls_total", outcome="failure") == 1


def test_counter_refuses_to_go_down() -> None:
    """Counters only go up: a negative increment is a clear error."""
    c = Counter("x_total", "x")
    with pytest.raises(ValidationError, match="counters only go up"):
        c.inc(-1)


def test_gauge_sets_moves_and_forgets_series() -> None:
    """A gauge is set, moved both ways, and a removed series disappears."""
    reg = Registry()
    g = reg.gauge("backend_services_test_level", "Level.", ["service"])
    g.labels(service="a").set(3)
    g.labels(service="a").dec(1)
    g.labels(service="b").inc(5)
    g.remove(service="b")
    fams = parse(render(reg))
    assert value(fams, "backend_services_test_level", service="a") == 2
    assert len(fams["backend_services_test_level"].samples) == 1


def test_histogram_buckets_are_cumulative_with_count_and_sum() -> None:
    """Histogram buckets are cumulative, end in +Inf, and come with _count and _sum."""
    reg = Registry()
    h = reg.histogram("backend_services_test_seconds", "Latency.", buckets=[0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    fams = parse(render(reg))
    name = "backend_services_test_seconds"
    assert value(fams, name, name + "_bucket", le="0.1") == 2
    assert value(fams, name, name + "_bucket", le="1") == 3
    assert value(fams, name, name + "_bucket", le="+Inf") == 4
    assert value(fams, name, name + "_count") == 4
    assert value(fams, name, name + "_sum") == pytest.approx(3.65)


@pytest.mark.parametrize(
    ("name", "labels"),
    [("1bad", ()), ("has-dash", ()), ("ok_name", ("le",)), ("ok", ("__x",)), ("ok", ("a", "a"))],
)
def test_bad_names_and_labels_are_rejected(name: str, labels: tuple[str, ...]) -> None:
    """Invalid metric names, reserved or duplicate label names raise ValidationError."""
    with pytest.raises(ValidationError):
        Gauge(name, "h", labels)


def test_label_values_must_match_label_names() -> None:
    """Wrong label names or counts are an error naming the expected labels."""
    g = Gauge("g", "h", ["a", "b"])
    with pytest.raises(ValidationError, match=r"\['a', 'b'\]"):
        g.labels(a="1")
    with pytest.raises(ValidationError):
        g.labels("1")


def test_histogram_buckets_must_increase() -> None:
    """Histogram buckets must be a non-empty increasing sequence."""
    with pytest.raises(ValidationError, match="increasing"):
        Histogram("h_seconds", "h", buckets=[1.0, 0.5])


def test_registering_a_second_metric_of_the_same_name_fails() -> None:
    """Two different instruments cannot share a name; asking again returns the first."""
    reg = Registry()
    first = reg.counter("dup_total", "d")
    assert reg.counter("dup_total", "d") is first
    with pytest.raises(ValidationError, match="not yet registered"):
        Counter("dup_total", "d", registry=reg)


# --- collectors ----------------------------------------------------------------------


def test_collectors_run_at_scrape_time_only() -> None:
    """A collector is called once per render, never in between."""
    reg = Registry()
    calls: list[int] = []

    def collect() -> list[MetricFamily]:
        calls.append(1)
        return [MetricFamily("backend_services_lazy", "gauge", "Lazy.").add(len(calls))]

    reg.register_collector(collect)
    assert calls == []
    assert value(parse(render(reg)), "backend_services_lazy") == 1
    assert value(parse(render(reg)), "backend_services_lazy") == 2
    reg.unregister(collect)
    assert "backend_services_lazy" not in parse(render(reg))


def test_a_failing_collector_does_not_break_the_page() -> None:
    """A collector that raises is skipped; the other metrics still render."""
    reg = Registry()
    reg.gauge("backend_services_ok", "ok").set(1)

    def broken() -> list[MetricFamily]:
        raise RuntimeError("boom")

    reg.register_collector(broken)
    fams = parse(render(reg))
    assert value(fams, "backend_services_ok") == 1


def test_same_named_families_merge_into_one_block() -> None:
    """Families of one name from several collectors render as one HELP/TYPE block."""
    a = MetricFamily("backend_services_x", "gauge", "X.").add(1, {"n": "a"})
    b = MetricFamily("backend_services_x", "gauge", "X.").add(2, {"n": "b"})
    dup = MetricFamily("backend_services_x", "gauge", "X.").add(9, {"n": "a"})
    text = render([a, b, dup])
    assert text.count("# TYPE backend_services_x") == 1
    fams = parse(text)
    assert value(fams, "backend_services_x", n="a") == 1
    assert value(fams, "backend_services_x", n="b") == 2


# --- format --------------------------------------------------------------------------


def test_special_values_render_as_prometheus_spells_them() -> None:
    """NaN and infinities render as NaN, +Inf and -Inf; integers without a decimal."""
    fam = MetricFamily("v", "gauge", "v")
    for i, x in enumerate((math.nan, math.inf, -math.inf, 2.0, 0.25)):
        fam.add(x, {"i": i})
    text = render([fam])
    assert 'v{i="0"} NaN' in text
    assert 'v{i="1"} +Inf' in text
    assert 'v{i="2"} -Inf' in text
    assert 'v{i="3"} 2\n' in text
    assert 'v{i="4"} 0.25' in text


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_label_value_and_help_text_round_trip(label: str, help_text: str) -> None:
    """Label values and help text with quotes, backslashes and newlines are escaped."""
    fam = MetricFamily("backend_services_escape", "gauge", help_text).add(1, {"v": label})
    fams = parse(render([fam]))
    (_, labels, _v) = fams["backend_services_escape"].samples[0]
    assert labels["v"] == label


def test_content_type_is_the_text_format() -> None:
    """The content type names the 0.0.4 text format."""
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_empty_registry_renders_nothing() -> None:
    """An empty registry renders the empty string (a valid, empty page)."""
    assert render(Registry()) == ""
