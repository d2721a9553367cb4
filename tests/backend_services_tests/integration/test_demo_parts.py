"""The demo's own parts: recording, figures, the terminal view, the local fallback."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

from backend_services.demo.phases import stepwise
from backend_services.demo.record import Call, Event, Recorder
from backend_services.demo.summary import Marks, figures_rows, measure
from backend_services.demo.traffic import FALLBACK_HEADER, LocalFallback
from backend_services.demo.view import ProgressView, format_table
from backend_services.dtesn.reservoir import DeepReservoir, MembraneSpec


class TestRecorder:
    def test_outcomes_and_servers_are_counted_by_time_window(self) -> None:
        """outcomes()/served_by() count only calls inside [since, until)."""
        rec = Recorder()
        rec.call(Call(0.5, 0.01, "ok", served_by="a"))
        rec.call(Call(1.5, 0.01, "ok", served_by="b"))
        rec.call(Call(2.5, 0.01, "fallback"))
        rec.call(Call(3.5, 0.01, "failed", error="ServiceUnavailableError"))
        assert rec.outcomes(since=1.0, until=3.0) == {"ok": 1, "fallback": 1}
        assert rec.served_by(since=1.0) == {"b": 1}
        assert [c.error for c in rec.failures()] == ["ServiceUnavailableError"]

    def test_latency_percentiles_ignore_failures(self) -> None:
        """p50/p99 are over answered calls (ok and fallback) only."""
        rec = Recorder()
        for ms in range(1, 101):
            rec.call(Call(0, ms / 1000, "ok"))
        rec.call(Call(0, 60.0, "failed"))
        assert rec.latency_ms(0.5) == 50.0 or rec.latency_ms(0.5) == 51.0
        assert rec.latency_ms(0.99) <= 100.0

    def test_passed_needs_every_check_and_at_least_one(self) -> None:
        """No checks is not a pass; one failing check fails the run."""
        rec = Recorder()
        assert not rec.passed
        rec.check("a", True, "")
        assert rec.passed
        rec.check("b", False, "")
        assert not rec.passed

    def test_first_event_filters_by_kind_subject_and_time(self) -> None:
        """first() finds the earliest matching event at or after a time."""
        rec = Recorder()
        rec.event(Event(1.0, "breaker", "m1", "breaker open"))
        rec.event(Event(2.0, "breaker", "m1", "breaker closed"))
        found = rec.first("breaker", "m1", after=1.5)
        assert found is not None
        assert found.detail == "breaker closed"
        assert rec.first("breaker", "m2") is None


class TestFigures:
    def test_failover_is_kill_to_last_failed_attempt_on_the_killed_membrane(self) -> None:
        """Only failed attempts on the killed membrane before the next phase count."""
        rec = Recorder()
        marks = Marks(killed="m2", t_kill=10.0, t_slow=20.0, duration=30.0)
        rec.event(Event(10.05, "attempt_failed", "m2", "ClientConnectorError"))
        rec.event(Event(10.25, "attempt_failed", "m2", "ClientConnectorError"))
        rec.event(Event(10.30, "attempt_failed", "m1", "ClientConnectorError"))
        rec.event(Event(25.0, "attempt_failed", "m2", "later, another phase"))
        rec.call(Call(10.0, 0.002, "ok", served_by="m1"))
        fig = measure(rec, marks)
        assert fig.failover_ms == 250.0
        assert fig.failed_attempts_on_killed == 2
        assert fig.requests == 1
        rows = dict(figures_rows(fig, marks))
        assert rows["failover: kill -> last failed attempt on m2"] == "250 ms"

    def test_missing_marks_show_as_dashes(self) -> None:
        """A figure that was never measured prints as '-' (not zero)."""
        fig = measure(Recorder(), Marks())
        rows = dict(figures_rows(fig, Marks()))
        assert rows["  kill -> its breaker open"] == "-"


class TestStepwise:
    def test_one_level_at_a_time_after_the_peak(self) -> None:
        """Recovery must go down exactly one level per change and end at normal."""
        assert stepwise(["normal", "emergency", "minimal", "partial", "normal"])
        assert stepwise(
            ["normal", "emergency", "offline", "emergency", "minimal", "partial", "normal"]
        )
        assert not stepwise(["normal", "emergency", "normal"])
        assert not stepwise(["normal", "emergency", "minimal"])
        assert not stepwise([])


class TestView:
    def test_plain_output_has_no_escape_codes_and_rare_status_lines(self) -> None:
        """Not a terminal: no colours, no cursor moves, status at most every 5 s."""
        out = io.StringIO()
        view = ProgressView(out)
        view.phase(1, "Start")
        view.event(0.5, "m1 healthy", "green")
        for t in (0.1, 1.0, 5.2, 6.0, 10.3):
            view.status(t, f"req at {t}")
        text = out.getvalue()
        assert "\x1b" not in text
        assert "m1 healthy" in text
        assert text.count("[status]") == 2

    def test_live_view_redraws_the_status_line_in_place(self) -> None:
        """On a terminal the status line is cleared before each event and redrawn."""
        out = io.StringIO()
        view = ProgressView(out, live=True, colour=False)
        view.status(1.0, "req 10")
        view.event(1.1, "something happened")
        text = out.getvalue()
        assert "\r\x1b[2K" in text
        assert text.endswith("req 10")

    def test_live_status_never_wraps(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A status line wider than the terminal is cut, so it can be redrawn in place."""
        monkeypatch.setattr(
            shutil, "get_terminal_size", lambda fallback: os.terminal_size((40, 24))
        )
        out = io.StringIO()
        view = ProgressView(out, live=True, colour=True)
        view.status(1.0, view.paint("x" * 100, "green"))
        status = out.getvalue().rsplit("\x1b[2K", 1)[-1]
        assert len(status) <= 39
        assert status.endswith("…")

    def test_table_aligns_columns_ignoring_colour_codes(self) -> None:
        """Coloured cells take no extra width; numbers align right."""
        lines = format_table(["name", "n"], [["\x1b[32mok\x1b[0m", "5"], ["longer", "12"]])
        assert lines[2].startswith("\x1b[32mok\x1b[0m    ")
        assert lines[2].endswith(" 5")
        assert lines[3].endswith("12")


class TestLocalFallback:
    def test_fallback_answers_with_the_first_level_of_the_same_reservoir(self) -> None:
        """The fallback computes depth 1 of the membranes' reservoir, marked as fallback."""
        spec = MembraneSpec.for_kind("memory", levels=3, seed=7)
        fallback = LocalFallback(spec)
        inputs = np.random.default_rng(0).uniform(-1, 1, (5, 8)).tolist()
        response = fallback("POST", "/process", json={"inputs": inputs})
        body = response.json()
        assert response.headers[FALLBACK_HEADER] == "local"
        assert body["depth"] == 1
        expected = DeepReservoir(spec).run(np.asarray(inputs), 1).readout
        assert np.allclose(body["readout"], expected)
        assert fallback.calls == 1
