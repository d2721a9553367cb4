"""API fuzzing: every operation of the served OpenAPI document, hit with valid and hostile
requests, never answers 5xx, and every error is a problem document."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_services.control.server import ControlServer

from .conftest import TOKEN
from .fleet import Fleet

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_TEXT = st.sampled_from(
    ["", " ", "..", "%00", "a/b", "ü", "<script>", "'; DROP", "\\", "current", "a" * 300, "-1", "0"]
) | st.text(max_size=40)

KNOWN = {
    "service_id": ["membrane-1", "membrane-2"],
    "name": ["membrane-1", "membrane-2"],
    "service": ["dtesn-service", "fleet"],
    "key": ["membrane_depth", "processing_timeout", "new.key"],
    "limit": ["1", "5"],
    "service_type": ["dtesn_membrane"],
    "status": ["healthy"],
}


class ServerThread:
    """A control server on its own event loop in a thread (so Hypothesis drives it
    synchronously over real HTTP)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        fleet = await Fleet(None, health_interval=1.0).start()
        ids = [str(v["id"]) for v in await fleet.versions()]
        KNOWN["from"] = KNOWN["to"] = KNOWN["version"] = [*ids, "1"]
        server = ControlServer(fleet.ops, token=TOKEN, rate=1e9, burst=1e9)
        url = await server.start("127.0.0.1", 0)
        self.port = int(url.rsplit(":", 1)[1])
        self.ready.set()
        await self._stop.wait()
        await server.close()
        await fleet.close()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(30), "control server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, Operations]]:
    """The port of a running server and the OpenAPI document it serves."""
    with ServerThread() as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/openapi.json")
        doc = json.loads(conn.getresponse().read())
        conn.close()
        yield srv.port, _operations(doc)


class Operations(list[tuple[str, str, dict[str, Any]]]):
    """The document's operations (with a short repr for Hypothesis reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} operations>"


def _operations(doc: dict[str, Any]) -> Operations:
    return Operations(
        (path, method.upper(), op)
        for path, methods in sorted(doc["paths"].items())
        for method, op in sorted(methods.items())
    )


def _property(name: str, schema: dict[str, Any], hostile: bool) -> st.SearchStrategy[Any]:
    if name in KNOWN:
        known = st.sampled_from(KNOWN[name])
        return st.one_of(known, _from_schema(schema, hostile)) if hostile else known
    return _from_schema(schema, hostile)


def _from_schema(schema: dict[str, Any], hostile: bool = True) -> st.SearchStrategy[Any]:
    """Values valid for a schema; when ``hostile``, arbitrary JSON mixed in."""
    if "enum" in schema:
        valid: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif schema.get("type") == "object":
        props = schema.get("properties", {})
        required = schema.get("required", ())
        valid = st.fixed_dictionaries(
            {k: _property(k, v, hostile) for k, v in props.items() if k in required},
            optional={k: _property(k, v, hostile) for k, v in props.items() if k not in required},
        )
    elif schema.get("type") == "string" and "pattern" in schema:
        valid = st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: len(s) <= schema.get("maxLength", 10**9)
        )
    elif schema.get("type") == "string":
        valid = st.text(max_size=schema.get("maxLength", 50))
    elif schema.get("type") == "integer":
        valid = st.integers(
            min_value=schema.get("minimum", -5), max_value=schema.get("maximum", 10**7)
        )
    elif schema.get("type") == "number":
        valid = st.floats(min_value=0.001, max_value=schema.get("maximum", 1e8))
    else:
        valid = JSON_VALUES
    return st.one_of(valid, valid, JSON_VALUES) if hostile else valid


@st.composite
def requests(draw: st.DrawFn, ops: Operations) -> tuple[str, str, bytes | None, dict[str, str]]:
    """A request to one operation: well-formed (known names, the token, a valid body) or,
    more often, hostile (random parameters, bodies, content types, origins)."""
    path, method, op = draw(st.sampled_from(ops))
    hostile = draw(st.integers(0, 4)) >= 2
    query: list[tuple[str, str]] = []
    for param in op.get("parameters", []):
        schema = param["schema"]
        known = st.sampled_from(KNOWN.get(param["name"], ["x"]))
        if param["in"] == "path":
            choice = (
                st.one_of(known, known, _from_schema(schema).map(str), HOSTILE_TEXT)
                if hostile
                else known
            )
            text = draw(choice)
            path = path.replace("{" + param["name"] + "}", urllib.parse.quote(text, safe="") or "x")
        elif param["required"] or draw(st.booleans()):
            choice = st.one_of(known, _from_schema(schema), HOSTILE_TEXT) if hostile else known
            query.append((param["name"], str(draw(choice))))
    if hostile and draw(st.booleans()):
        query.append((draw(st.text(min_size=1, max_size=5)), draw(st.text(max_size=5))))
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers: dict[str, str] = {}
    if not hostile or draw(st.integers(0, 3)):
        headers["Authorization"] = f"Bearer {TOKEN}"
    body: bytes | None = None
    body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    if not hostile:
        if body_schema:
            body = json.dumps(draw(_from_schema(body_schema["schema"], False))).encode()
            headers["Content-Type"] = "application/json"
        return method, url, body, headers
    kind = draw(st.sampled_from(["none", "schema", "schema", "json", "junk"]))
    if kind == "schema" and body_schema:
        body = json.dumps(draw(_from_schema(body_schema["schema"]))).encode()
    elif kind == "json":
        body = json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "junk":
        body = draw(st.binary(max_size=64))
    if body is not None:
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"])
        )
    if draw(st.integers(0, 9)) == 0:
        headers["Origin"] = draw(
            st.sampled_from(["http://evil.example", "null", "http://127.0.0.1"])
        )
    return method, url, body, headers


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_request_gets_a_5xx_and_errors_are_problems(
    served: tuple[int, Operations], data: st.DataObject
) -> None:
    """Whatever is sent to any documented operation, the answer is below 500, and every
    4xx is an application/problem+json document with a status, title and detail."""
    port, ops = served
    method, url, body, headers = data.draw(requests(ops))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        status = resp.status
        if resp.getheader("Content-Type", "").startswith("text/event-stream"):
            assert status == 200
            return
        payload = resp.read()
    finally:
        conn.close()
    assert status < 500, (method, url, body, status, payload[:500])
    if status >= 400:
        assert resp.getheader("Content-Type") == "application/problem+json", (method, url)
        problem = json.loads(payload)
        assert problem["status"] == status
        assert problem["title"]
        assert problem["detail"]
