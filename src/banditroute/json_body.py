"""Strict JSON request bodies: content type, size limit and finite numbers only."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request, Response
from fastapi.routing import APIRoute

from banditroute.encoder import find_lone_surrogate
from banditroute.feedback import InvalidFieldError, RequestError

if TYPE_CHECKING:
    from banditroute.api import Service


class MalformedBodyError(RequestError):
    """The body is not valid UTF-8 JSON."""

    status_code = 400
    error_code = "malformed_body"


class BodyTooLargeError(RequestError):
    status_code = 413
    error_code = "body_too_large"


class UnsupportedMediaTypeError(RequestError):
    status_code = 415
    error_code = "unsupported_media_type"


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is size-limited and parsed without NaN or Infinity.

    Python's json module accepts NaN, Infinity and numbers too large for a float
    (which become inf). This route rejects them with a 422 that names the field, and
    a body that is not UTF-8 JSON with a 400, before FastAPI validates the body.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        takes_body = self.body_field is not None

        async def parse_then_handle(request: Request) -> Response:
            self.check_before_body(request)
            if takes_body and request.method in ("POST", "PUT", "PATCH"):
                await load_strict_json(request)
            return await handler(request)

        return parse_then_handle

    def check_before_body(self, request: Request) -> None:
        """Raise a RequestError to reject ``request`` before its body is read.

        Subclasses override it, for example to check credentials first.
        """


async def load_strict_json(request: Request) -> Any:
    """Read, check and parse the JSON body, and cache it on ``request``."""
    service: Service = request.app.state.service
    _check_content_type(request)
    body = await _read_limited_body(request, service.settings.max_body_bytes)
    parsed = parse_strict_json(body)

    # Starlette caches the body and the parsed JSON under these names, so FastAPI
    # validates this result instead of parsing the body a second time.
    request._body = body
    request._json = parsed
    return parsed


def _check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        # FastAPI does not read a body without a content type as JSON, which would
        # fail validation with a confusing message; name the missing header instead.
        raise UnsupportedMediaTypeError(
            "The request has no Content-Type header; send application/json.",
            field="Content-Type",
        )

    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return
    raise UnsupportedMediaTypeError(
        f"Content-Type {content_type!r} is not JSON; send application/json.",
        field="Content-Type",
        value=content_type,
    )


async def _read_limited_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)

    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, max_bytes: int) -> BodyTooLargeError:
    return BodyTooLargeError(
        f"The body has at least {size} bytes, more than the maximum of {max_bytes}; "
        "send a shorter prompt.",
        field="body",
        value=size,
    )


class _NonFiniteNumber:
    """Stands in for a NaN or infinite number until its path in the body is known."""

    def __init__(self, text: str) -> None:
        self.text = text


def parse_strict_json(body: bytes) -> Any:
    """Parse a UTF-8 JSON body that contains only finite numbers.

    Raises MalformedBodyError for an empty body, invalid UTF-8 or invalid JSON, and
    InvalidFieldError naming the path of a NaN or infinite number.
    """
    if not body.strip():
        raise MalformedBodyError("The body is empty; send a JSON object.", field="body")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedBodyError(
            f"The body is not valid UTF-8 (byte {error.start}); encode it as UTF-8.",
            field="body",
        ) from error

    try:
        parsed = json.loads(
            text, parse_constant=_NonFiniteNumber, parse_float=_parse_finite_float
        )
    except RecursionError as error:
        raise MalformedBodyError(
            "The body nests arrays or objects too deeply to parse; send a flatter "
            "JSON object.",
            field="body",
        ) from error
    except (json.JSONDecodeError, ValueError) as error:
        raise MalformedBodyError(
            f"The body is not valid JSON: {error}; send a JSON object.", field="body"
        ) from error

    invalid = _find_invalid_value(parsed)
    if invalid is not None:
        path, item = invalid
        field = path or "body"
        if isinstance(item, _NonFiniteNumber):
            raise InvalidFieldError(
                f"{field} is {item.text}; JSON numbers must be finite.",
                field=field,
                value=item.text,
            )
        code_point = ord(item[find_lone_surrogate(item) or 0])
        raise InvalidFieldError(
            f"{field} contains the lone UTF-16 surrogate U+{code_point:04X}; send "
            "valid UTF-8 text.",
            field=field,
        )
    return parsed


def _parse_finite_float(text: str) -> float | _NonFiniteNumber:
    value = float(text)
    if np.isfinite(value):
        return value
    return _NonFiniteNumber(text)


def _find_invalid_value(value: object) -> tuple[str, object] | None:
    """Return the dotted path and value of the first NaN or infinite number, or of
    the first string or key with a lone UTF-16 surrogate; None if there is none.

    The walk uses its own stack, so a deeply nested body cannot exhaust Python's.
    Path parts that hold a surrogate are escaped, so that the path can be encoded.
    """
    pending: list[tuple[object, list[str]]] = [(value, [])]
    while pending:
        item, path = pending.pop()
        if isinstance(item, _NonFiniteNumber):
            return ".".join(path), item
        if isinstance(item, str):
            if find_lone_surrogate(item) is not None:
                return ".".join(path), item
            continue
        if isinstance(item, dict):
            children: list[tuple[str, object]] = list(item.items())
        elif isinstance(item, list):
            children = [(str(index), child) for index, child in enumerate(item)]
        else:
            continue
        for key, _ in children:
            if find_lone_surrogate(key) is not None:
                return ".".join([*path, _escaped(key)]), key
        # Reversed, so that the first child is examined first.
        pending.extend((child, [*path, str(key)]) for key, child in reversed(children))
    return None


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
