"""The edge: what every request body must be before any route reads it.

An ASGI middleware, so it sees the bytes as they arrive: a body is refused (413) once it
passes the limit, chunked or not, and never parsed in full. A JSON body must hold only
finite numbers, integers within 64 bits and valid Unicode (no lone UTF-16 surrogates): the
store, the file system and the logs cannot take the rest, so it is refused here (422)
with a message, not deep inside as a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 2 * 1024 * 1024
INT64 = 2**63 - 1


class BadJSON(ValueError):
    """A JSON body that parses but holds a value no route can take."""


def check_json(body: bytes) -> None:
    """Raise `BadJSON` for a value the API refuses everywhere; malformed JSON is left to the route's own 422."""

    def refuse_constant(name: str) -> float:
        raise BadJSON(f"{name} is not a JSON number pricer accepts: numbers must be finite")

    def finite(text: str) -> float:
        if not math.isfinite(value := float(text)):
            raise BadJSON(f"{text[:40]} is out of range: numbers must be finite")
        return value

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(f"the JSON body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        document = json.loads(text, parse_constant=refuse_constant, parse_float=finite)
    except json.JSONDecodeError:
        return  # malformed: the route answers it with FastAPI's own validation error, which says where
    except RecursionError as exc:
        raise BadJSON("the JSON body is nested too deeply") from exc
    _check_values(document)


def _check_values(value: Any) -> None:
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and not -INT64 - 1 <= value <= INT64:
            raise BadJSON(f"the integer {str(value)[:24]}... is out of range: integers must fit in 64 bits")
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadJSON("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff): it is not valid Unicode") from exc


class Edge:
    """Buffer each request body up to `max_body` bytes (413 past it), check it once, then hand it on."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._refuse(scope, receive, send, 413, f"request body over {self.max_body} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(chunk := message.get("body", b""))
            size += len(chunk)
            if size > self.max_body:  # counted as it arrives: a chunked body gets no further than the limit
                await self._refuse(scope, receive, send, 413, f"request body over {self.max_body} bytes")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get(b"content-type")
        if body and (content_type is None or b"json" in content_type):  # FastAPI reads a body without a type as JSON
            try:
                check_json(body)
            except BadJSON as exc:
                await self._refuse(scope, receive, send, 422, str(exc))
                return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect

    return replayed
