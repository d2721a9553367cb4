"""Structured logging: key-value and JSON lines, no secrets, library-friendly defaults."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from backend_services.errors import ValidationError
from backend_services.log import (
    StructuredLogger,
    configure_logging,
    get_logger,
    mask_secrets,
    mask_url,
)

ROOT = "backend_services"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the library logger's handlers and level back as they were."""
    root = logging.getLogger(ROOT)
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def _configure(json_lines: bool = False, level: int | str = logging.DEBUG) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, json=json_lines, stream=stream)
    return stream


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    def no_constants(name: str) -> Any:
        raise AssertionError(f"not JSON: {name}")

    return [
        json.loads(line, parse_constant=no_constants) for line in stream.getvalue().splitlines()
    ]


def _ours(handlers: list[logging.Handler]) -> list[logging.Handler]:
    return [h for h in handlers if getattr(h, "_bs_configured", False)]


# --- library defaults ----------------------------------------------------------------


def test_importing_the_library_adds_only_a_null_handler() -> None:
    """A fresh process importing the package gets a NullHandler and nothing else: no
    root handlers, no output for warnings until the application configures logging."""
    code = textwrap.dedent(
        """
        import logging, sys
        import backend_services
        from backend_services.log import get_logger
        lib = logging.getLogger("backend_services")
        print([type(h).__name__ for h in lib.handlers])
        print(len(logging.getLogger().handlers))
        get_logger("probe").warning("should_not_print", x=1)
        get_logger("probe").error("nor_this")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.splitlines() == ["['NullHandler']", "0"]
    assert result.stderr == ""


def test_get_logger_names_the_component_under_the_library_root() -> None:
    """get_logger("x") logs through the stdlib logger backend_services.x."""
    log = get_logger("circuit_breaker")
    assert isinstance(log, StructuredLogger)
    assert log.component == "circuit_breaker"
    assert log._logger.name == "backend_services.circuit_breaker"


# --- JSON lines ----------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_component_event_level_and_fields() -> None:
    """configure_logging(json=True) writes one JSON object per event with its fields."""
    stream = _configure(json_lines=True)
    log = get_logger("circuit_breaker")
    log.warning("state_change", name="payments", old="closed", new="open", failures=5)
    log.info("second", ratio=0.25, ok=True, nothing=None)
    first, second = _json_lines(stream)
    assert first["component"] == "circuit_breaker"
    assert first["event"] == "state_change"
    assert first["level"] == "warning"
    assert isinstance(first["ts"], float)
    assert {k: first[k] for k in ("name", "old", "new", "failures")} == {
        "name": "payments",
        "old": "closed",
        "new": "open",
        "failures": 5,
    }
    assert (second["event"], second["ratio"], second["ok"], second["nothing"]) == (
        "second",
        0.25,
        True,
        None,
    )
    assert "exception" not in first


@pytest.mark.usefixtures("restore_logging")
def test_json_line_stays_one_line_with_multiline_values() -> None:
    """A value with line breaks is escaped; each event is exactly one line."""
    stream = _configure(json_lines=True)
    get_logger("t").info("multi", text="a\nb\r\nc")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["text"] == "a\nb\r\nc"


@pytest.mark.usefixtures("restore_logging")
def test_json_fields_named_like_reserved_keys_do_not_overwrite_them() -> None:
    """A field called level/event/component/ts is kept as field_<name>; the line's own
    keys keep their meaning."""
    stream = _configure(json_lines=True)
    get_logger("degradation").info("level_change", level="minimal", component="cpu", ts=1)
    (doc,) = _json_lines(stream)
    assert (doc["level"], doc["component"], doc["event"]) == ("info", "degradation", "level_change")
    assert (doc["field_level"], doc["field_component"], doc["field_ts"]) == ("minimal", "cpu", 1)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_valid_for_any_value() -> None:
    """Non-finite floats, non-string keys, sets, tuples and objects still give strict JSON."""

    class Thing:
        def __str__(self) -> str:
            return "thing(redis://u:pw@h)"

    stream = _configure(json_lines=True)
    get_logger("t").info(
        "odd",
        nan=float("nan"),
        inf=float("inf"),
        keys={(1, 2): "pair", 3: "three"},
        tags={"a"},
        pair=(1, 2),
        obj=Thing(),
    )
    (doc,) = _json_lines(stream)  # strict: NaN/Infinity would fail
    assert doc["nan"] == "nan"
    assert doc["inf"] == "inf"
    assert doc["keys"] == {"(1, 2)": "pair", "3": "three"}
    assert doc["tags"] == ["a"]
    assert doc["pair"] == [1, 2]
    assert doc["obj"] == "thing(redis://u:***@h)"


# --- key-value lines -----------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_key_value_line_format() -> None:
    """The default format is time, level, component, event, then key=value pairs."""
    stream = _configure()
    get_logger("circuit_breaker").warning(
        "state_change", name="payments", old="closed", failures=5, rate=0.5, open=True
    )
    line = stream.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d WARNING circuit_breaker state_change "
        r"name=payments old=closed failures=5 rate=0.5 open=True",
        line,
    ), line


@pytest.mark.usefixtures("restore_logging")
def test_key_value_quotes_ambiguous_values_and_stays_on_one_line() -> None:
    """Values with spaces, '=', quotes or newlines are JSON-quoted; containers are JSON."""
    stream = _configure()
    get_logger("t").info(
        "quoting",
        reason="too many failures",
        expr="a=b",
        nl="x\ny",
        empty="",
        nested={"a": [1, "two"]},
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert (
        'reason="too many failures" expr="a=b" nl="x\\ny" empty="" nested={"a":[1,"two"]}'
        in lines[0]
    )


@pytest.mark.usefixtures("restore_logging")
def test_level_filtering_and_level_names_in_any_case() -> None:
    """A level name in lower case works; events below the level are not written."""
    stream = _configure(level="warning")
    log = get_logger("t")
    log.info("hidden")
    log.debug("hidden_too")
    log.error("shown")
    assert [line.split()[3] for line in stream.getvalue().splitlines()] == ["shown"]
    assert not log.is_enabled_for(logging.INFO)
    assert log.is_enabled_for(logging.ERROR)


@pytest.mark.usefixtures("restore_logging")
def test_unknown_level_name_is_a_validation_error() -> None:
    """An unknown level name names the argument and the value, and changes nothing."""
    root = logging.getLogger(ROOT)
    before = list(root.handlers)
    with pytest.raises(ValidationError, match=r"^level='verbose': expected a logging level"):
        configure_logging("verbose")
    assert root.handlers == before


@pytest.mark.usefixtures("restore_logging")
def test_configure_twice_replaces_the_handler() -> None:
    """Configuring again leaves one handler of ours; each event is written once, to the
    newest stream only."""
    root = logging.getLogger(ROOT)
    first = _configure()
    second = _configure(json_lines=True)
    assert len(_ours(root.handlers)) == 1
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)
    get_logger("t").info("once")
    assert first.getvalue() == ""
    assert [d["event"] for d in _json_lines(second)] == ["once"]


@pytest.mark.usefixtures("restore_logging")
def test_records_point_at_the_calling_line() -> None:
    """The stdlib record names the function that called log.info, not the wrapper."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger(ROOT).addHandler(Keep())
    logging.getLogger(ROOT).setLevel(logging.INFO)
    get_logger("t").info("where")
    (record,) = records
    assert record.funcName == "test_records_point_at_the_calling_line"
    assert record.pathname == __file__


# --- secrets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:hunter2@host", "redis://:***@host"),
        ("rediss://u:p@ss:w/rd@host/1", "rediss://u:***@host/1"),
        ("redis+cluster://:pw@a:1,b:2", "redis+cluster://:***@a:1,b:2"),
        ("redis://h/0?password=hunter2&db=1", "redis://h/0?password=***&db=1"),
        ("redis://h?db=1&API_KEY=k1", "redis://h?db=1&API_KEY=***"),
        ("failed to reach redis://a:x@h1 and rediss://b:y@h2", None),
        ("error: 'redis://a:hunter2@h' refused", "error: 'redis://a:***@h' refused"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host", "redis://user@host"),
        ("plain text: a@b", "plain text: a@b"),
    ],
)
def test_mask_url(text: str, masked: str | None) -> None:
    """URL passwords and secret query parameters are masked wherever they appear."""
    result = mask_url(text)
    if masked is None:
        assert result == "failed to reach redis://a:***@h1 and rediss://b:***@h2"
    else:
        assert result == masked
    for secret in ("hunter2", "p@ss", "k1"):
        assert secret not in result


def test_mask_secrets_nested_and_by_name() -> None:
    """Secret-named fields are masked at any depth; URLs inside lists too; the input is
    untouched; empty values and booleans under secret names are kept."""
    value = {
        "user": "alice",
        "Password": "pw1",
        "db": {"auth_token": "t0k", "hosts": ["redis://:pw2@a", {"client_secret": "s3"}]},
        "api_key": 12345,
        "has_token": True,
        "token": None,
        "secret": "",
        "tags": ("x",),
    }
    masked = mask_secrets(value)
    assert masked == {
        "user": "alice",
        "Password": "***",
        "db": {"auth_token": "***", "hosts": ["redis://:***@a", {"client_secret": "***"}]},
        "api_key": "***",
        "has_token": True,
        "token": None,
        "secret": "",
        "tags": ["x"],
    }
    assert value["Password"] == "pw1"
    assert mask_secrets("anything", "encryption_key") == "***"


@pytest.mark.parametrize("json_lines", [False, True])
@pytest.mark.usefixtures("restore_logging")
def test_no_secret_reaches_a_line(json_lines: bool) -> None:
    """Passwords in fields, nested dicts, URLs, messages and exception text never show."""
    stream = _configure(json_lines=json_lines)
    log = get_logger("store")
    log.info(
        "connect",
        url="redis://app:pw-1@cache:6379",
        password="pw-2",
        options={"ssl": {"private_key": "pw-3"}, "token": "pw-4"},
        hosts=["rediss://:pw-5@h"],
        message="at redis://x:pw-6@h",
    )
    try:
        raise ConnectionError("cannot reach redis://app:pw-7@cache:6379")
    except ConnectionError:
        log.exception("connect_failed", attempt=1)
    text = stream.getvalue()
    for n in range(1, 8):
        assert f"pw-{n}" not in text
    assert "redis://app:***@cache:6379" in text
    assert "ConnectionError" in text


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_are_included_with_traceback() -> None:
    """log.exception() adds the traceback: JSON under "exception", key-value after the line."""
    json_stream = _configure(json_lines=True)
    log = get_logger("tasks")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.exception("crashed", task="loop")
    (doc,) = _json_lines(json_stream)
    assert doc["level"] == "error"
    assert doc["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in doc["exception"]

    kv_stream = _configure()
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("crashed", task="loop")
    first, *rest = kv_stream.getvalue().splitlines()
    assert first.endswith("ERROR tasks crashed task=loop")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'missing'"


@pytest.mark.usefixtures("restore_logging")
def test_exception_outside_an_except_block_adds_no_empty_traceback() -> None:
    """log.exception() with no exception being handled writes no "NoneType: None"."""
    stream = _configure(json_lines=True)
    get_logger("t").exception("no_error_here")
    (doc,) = _json_lines(stream)
    assert "exception" not in doc
    kv = _configure()
    get_logger("t").exception("no_error_here")
    assert "NoneType" not in kv.getvalue()
    assert len(kv.getvalue().splitlines()) == 1


@pytest.mark.usefixtures("restore_logging")
def test_plain_stdlib_formatters_see_the_event_and_a_masked_traceback() -> None:
    """An application using only stdlib logging (basicConfig style) gets the event name as
    the message and a traceback with URL passwords masked."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger(ROOT)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        raise ConnectionError("cannot reach redis://app:pw-9@cache:6379")
    except ConnectionError:
        get_logger("store").exception("connect_failed", url="redis://app:pw-9@cache:6379")
    text = stream.getvalue()
    assert text.startswith("backend_services.store ERROR connect_failed\nTraceback")
    assert "pw-9" not in text
    assert "ConnectionError: cannot reach redis://app:***@cache:6379" in text
