"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from typing import Any

import httpx
import paho.mqtt.client as paho

from launcher.broker import Broker
from launcher.stack import LocalStack
from protocol.mqtt import ConnectionOptions, MqttConnection
from protocol.topics import Topics


async def wait_until(
    predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.02
) -> None:
    """Wait for ``predicate()`` to become truthy; TimeoutError with a clear message if not."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - the conditions are plain values, not events
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise TimeoutError(f"condition not met within {timeout_s}s: {predicate}") from None


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, interval_s: float = 0.05
) -> None:
    """Wait for an async ``check()`` (an HTTP or Redis read) to come true."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - polling another process, no event to await
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise TimeoutError(f"condition not met within {timeout_s}s: {check}") from None


def save_broker_persistence(broker: Broker, timeout_s: float = 5.0) -> None:
    """SIGUSR1: mosquitto writes its persistence file now (sessions, subscriptions,
    retained messages), as it does at a clean exit; blocks until the file has changed."""
    assert broker.proc is not None
    db = broker.settings.run_dir / "mosquitto.db"
    before = db.stat().st_mtime_ns if db.exists() else 0
    os.kill(broker.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while not (db.exists() and db.stat().st_mtime_ns != before):
        assert time.monotonic() < deadline, "mosquitto did not save its persistence file"
        time.sleep(0.02)


class Watcher:
    """Gateway-side view of every vehicle's state and presence under a topic root
    (last message per topic, and how many came). ``await watcher.conn.connect()``."""

    def __init__(self, stack: LocalStack, topics: Topics) -> None:
        self.topics = topics
        self.last: dict[str, dict[str, Any]] = {}
        self.count: dict[str, int] = {}
        self.conn = MqttConnection(
            stack.broker.gateway_address(),
            ConnectionOptions(
                client_id=f"watch-{uuid.uuid4().hex[:8]}",
                subscriptions=[(topics.all_of("state"), 1), (topics.all_of("presence"), 1)],
            ),
            on_message=self._on,
        )

    def _on(self, message: paho.MQTTMessage) -> None:
        self.last[message.topic] = json.loads(message.payload)
        self.count[message.topic] = self.count.get(message.topic, 0) + 1

    def online(self) -> dict[str, bool]:
        """VIN → the last presence seen."""
        return {
            topic.split("/")[-2]: body["online"]
            for topic, body in self.last.items()
            if topic.endswith("/presence")
        }


ERROR_BODY = "#/components/schemas/ErrorBody"


def openapi_problems(
    spec: dict[str, Any], exempt: frozenset[tuple[str, str, str]] = frozenset()
) -> list[str]:
    """What an OpenAPI document leaves undocumented: an operation without a 2xx answer, a
    2xx answer whose JSON body is not a named model (or a list of them: an empty schema or
    a bare ``object`` says nothing), an error answer (4xx/5xx) whose
    body is not the shared ``ErrorBody`` or that names no ``error`` code, a route with
    parameters or a body without its 422. ``exempt``: (method, path, status) allowed
    another error body (the gateway's ``/readyz`` 503 is its readiness answer)."""
    found = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            answers = op["responses"]
            ok = {s: a for s, a in answers.items() if s.startswith("2")}
            if not ok:
                found.append(f"{where}: no 2xx answer")
            for status, answer in ok.items():
                content = answer.get("content", {})
                if not content or not all(
                    _described(t, c.get("schema")) for t, c in content.items()
                ):
                    found.append(f"{where} {status}: no model of its body ({content})")
            for status, answer in answers.items():
                if status[0] not in "45" or (method, path, status) in exempt:
                    continue
                content = answer.get("content", {})
                if content != {"application/json": {"schema": {"$ref": ERROR_BODY}}}:
                    found.append(f"{where} {status}: not the ErrorBody ({content})")
                if not answer.get("x-error-codes"):
                    found.append(f"{where} {status}: no error codes")
            if (op.get("parameters") or op.get("requestBody")) and "422" not in answers:
                found.append(f"{where}: takes input but documents no 422")
    return found


def _described(media_type: str, schema: dict[str, Any] | None) -> bool:
    if not schema:
        return False
    if not media_type.endswith("json"):
        return True  # text: a string
    return "$ref" in schema or (schema.get("type") == "array" and "$ref" in schema["items"])


DOC_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Refs(HTMLParser):
    """Every ``src`` and ``href`` of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v for k, v in attrs if k in ("src", "href") and v]


async def assert_docs_served_locally(api: httpx.AsyncClient) -> None:
    """A service's ``/docs`` works offline (protocol/api_docs.py): no http(s) URL in the
    page; each asset it names, and the OpenAPI document, answers 200 with its type."""
    page = await api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.findall(r"https?://", html) == []  # no CDN, no font host, no validator
    assert re.findall(r"(?<![\w:])//[\w.-]+\.\w+", html) == []  # nor protocol-relative
    refs = _Refs()
    refs.feed(html)
    spec = re.search(r"url: '([^']+)'", html)
    assert spec is not None
    named = [*refs.found, spec.group(1)]
    assert len(named) == 4, named  # stylesheet, icon, script, the OpenAPI document
    for ref in named:
        assert ref.startswith("/"), ref
        got = await api.get(ref)
        assert got.status_code == 200, ref
        assert got.content, ref
        suffix = ref[ref.rfind(".") :]
        if suffix in DOC_ASSET_TYPES:
            assert got.headers["content-type"].startswith(DOC_ASSET_TYPES[suffix]), ref
    assert "SwaggerUIBundle" in (await api.get(next(r for r in named if r.endswith(".js")))).text
    assert (await api.get(spec.group(1))).json()["openapi"].startswith("3.")
