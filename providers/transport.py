"""The HTTP exchange with an upstream: our own deadlines and typed errors, so providers only parse."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from providers.base import (
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderProtocolError,
    ProviderTimeout,
    Timeouts,
    redact,
)

_SNIPPET = 200  # characters of an upstream error text worth showing to a user
_ERROR_BODY_LIMIT = 64 * 1024
_DRAIN = 0.25  # seconds we wait for the body's end after the end marker, to keep the connection


class ModelListing:
    """list_models() and health() for a provider whose model list is one cheap GET."""

    async def _get_models(self) -> tuple[list[str], float]:
        """(model names, round trip ms) from the provider's list endpoint."""
        raise NotImplementedError

    async def list_models(self) -> list[str]:
        """The models the endpoint lists."""
        return (await self._get_models())[0]

    async def health(self) -> float:
        """Round trip of the model list in ms; raises ProviderError when down."""
        return (await self._get_models())[1]


class Upstream:
    """One streaming request: send within the deadlines, read chunks, close on any early exit."""

    # The deadlines are watched by one timer per stream, not an `asyncio.timeout` per read: a
    # read only notes when it began, and the timer, when it fires, works out the deadline that
    # applies now and either re-arms for it (rarely: once per `idle` period) or cancels the
    # reading task, which `read()` turns into a ProviderTimeout (as `asyncio.timeout` does).
    __slots__ = ("_session", "_url", "_body", "_headers", "_timeouts", "_name",
                 "_sse", "_loop", "_started", "_first", "_resp", "_finished",
                 "_read_at", "_reader", "_timer", "_expired")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        body: Any,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        name: str,
        sse: bool,
    ) -> None:
        self._session = session
        self._sse = sse
        self._url = url
        self._body = orjson.dumps(body)
        self._headers = {**headers, "Content-Type": "application/json"}
        self._timeouts = timeouts
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._first = False
        self._resp: aiohttp.ClientResponse | None = None
        self._finished = False
        self._read_at = self._started  # when the current (or last) read began
        self._reader: asyncio.Task[Any] | None = None  # the task waiting in read(), if any
        self._timer: asyncio.TimerHandle | None = None
        self._expired: tuple[str, float, int] | None = None  # (which, limit, cancels before ours)

    def got_token(self) -> None:
        """The first text delta arrived: from now on the idle timeout governs reads."""
        if not self._first:
            self._first = True
            self._disarm()  # the idle deadline may come before the first-token one it was set for

    def _deadline(self) -> tuple[float, str, float]:
        t = self._timeouts
        total_at = self._started + t.total
        if self._first:
            at, which, limit = self._read_at + t.idle, "idle", t.idle
        else:
            at, which, limit = self._started + t.first_token, "first_token", t.first_token
        if total_at <= at:
            return total_at, "total", t.total
        return at, which, limit

    def _timeout(self, which: str, limit: float) -> ProviderTimeout:
        what = {
            "first_token": "no first token",
            "idle": "no data",
            "total": "stream not finished",
        }[which]
        return ProviderTimeout(f"{self._name}: {what} within {limit:g}s", which=which)

    async def __aenter__(self) -> Upstream:
        at, which, limit = self._deadline()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect)
        try:
            async with asyncio.timeout_at(at):
                self._resp = await self._session.post(
                    self._url, data=self._body, headers=self._headers, timeout=timeout
                )
                if self._resp.status >= 400:
                    raise await http_error(self._resp, self._name)
                ctype = self._resp.content_type
                if ctype == "text/html" or (self._sse and ctype == "application/json"):
                    raise await unexpected_body(self._resp, self._name)
        except BaseException as exc:
            self._close()  # __aexit__ will not run: never leave a response open, even on cancel
            if isinstance(exc, TimeoutError) and not _is_aiohttp(exc):
                raise self._timeout(which, limit) from None
            if isinstance(exc, (aiohttp.ClientError, OSError)):
                raise translate(exc, self._name) from None
            raise
        return self

    async def read(self) -> bytes:
        """Next body chunk, b"" at a clean end; raises ProviderTimeout/ProviderConnectionError."""
        assert self._resp is not None
        self._read_at = self._loop.time()
        if self._timer is None:
            self._arm()
        task = self._reader = asyncio.current_task()
        try:
            return await self._resp.content.readany()
        except asyncio.CancelledError:
            expired = self._expired
            if expired is not None and task is not None and task.uncancel() <= expired[2]:
                self._expired = None
                raise self._timeout(expired[0], expired[1]) from None
            raise
        except TimeoutError as exc:
            raise translate(exc, self._name) from None  # aiohttp's own (we set no read timeout)
        except (aiohttp.ClientError, OSError) as exc:
            raise translate(exc, self._name) from None
        finally:
            self._reader = None

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self._deadline()[0], self._expire)

    def _expire(self) -> None:
        """The watchdog fired: cancel a read past its deadline, or wait for the one that now applies."""
        self._timer = None
        reader = self._reader
        if reader is None or self._resp is None:
            return  # between reads: the next read() arms it again
        at, which, limit = self._deadline()
        if at > self._loop.time():
            self._timer = self._loop.call_at(at, self._expire)
            return
        if self._expired is None:
            self._expired = (which, limit, reader.cancelling())
            reader.cancel()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def finish(self) -> None:
        """End marker seen: wait briefly for the body's end so the connection can be reused."""
        assert self._resp is not None
        self._disarm()
        try:
            async with asyncio.timeout(_DRAIN):
                while await self._resp.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError, OSError):
            return
        self._finished = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._disarm()
        if self._resp is None:
            return
        if self._finished and exc is None:
            self._resp.release()
        else:
            self._close()

    def _close(self) -> None:
        if self._resp is not None:
            self._resp.close()


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    timeouts: Timeouts,
    name: str,
) -> tuple[Any, float]:
    """GET a small JSON document; returns (value, round trip ms), typed errors only."""
    limit = timeouts.first_token
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise await http_error(resp, name)
                raw = await resp.read()
    except TimeoutError as exc:
        if _is_aiohttp(exc):
            raise translate(exc, name) from None
        raise ProviderTimeout(f"{name}: no answer within {limit:g}s", which="first_token") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise translate(exc, name) from None
    elapsed = (time.perf_counter() - started) * 1000.0
    try:
        return orjson.loads(raw), elapsed
    except orjson.JSONDecodeError:
        raise ProviderProtocolError(f"{name}: not JSON: {snippet(raw)!r}") from None


async def model_ids(
    session: aiohttp.ClientSession, url: str, *, headers: Mapping[str, str], timeouts: Timeouts, name: str,
) -> tuple[list[str], float]:
    """GET a `{"data": [{"id": ...}]}` model list (OpenAI and Anthropic); returns (ids, round trip ms)."""
    value, elapsed = await get_json(session, url, headers=headers, timeouts=timeouts, name=name)
    data = value.get("data") if isinstance(value, dict) else None
    if not isinstance(data, list):
        raise ProviderProtocolError(f"{name}: {url.rsplit('/', 2)[-2:]} answer has no data list")
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m], elapsed


def translate(exc: BaseException, name: str) -> ProviderError:
    """Map an aiohttp/OS exception to the ProviderError a caller can act on."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderTimeout(f"{name}: connect timed out", which="connect", code="unavailable")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderConnectionError(f"{name}: could not connect", code="unavailable", detail=str(exc))
    if isinstance(exc, aiohttp.InvalidUrlClientError):
        return ProviderConnectionError(f"{name}: invalid URL", code="unavailable", detail=str(exc.url))
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"{name}: timed out", which="idle")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ProviderProtocolError(f"{name}: bad HTTP response: {exc.message}", status=exc.status)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ProviderConnectionError(f"{name}: connection broken mid-stream")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ProviderConnectionError(f"{name}: server disconnected")
    return ProviderConnectionError(f"{name}: connection error", detail=f"{exc.__class__.__name__}: {exc}")


def _is_aiohttp(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientError)


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        while size < _ERROR_BODY_LIMIT:
            part = await resp.content.read(_ERROR_BODY_LIMIT - size)
            if not part:
                break
            parts.append(part)
            size += len(part)
    except (aiohttp.ClientError, OSError):
        pass
    return b"".join(parts)


async def http_error(resp: aiohttp.ClientResponse, name: str) -> ProviderHTTPError:
    """Build the error for a 4xx/5xx answer from the upstream's own error text."""
    raw = await _read_limited(resp)
    detail = error_detail(raw, resp.content_type) or resp.reason or ""
    message = f"{name} returned HTTP {resp.status}" + (f": {detail}" if detail else "")
    return ProviderHTTPError(message, status=resp.status)


async def unexpected_body(resp: aiohttp.ClientResponse, name: str) -> ProviderError:
    """A 2xx that is not a stream: a proxy page, or a JSON error without an error status."""
    raw = await _read_limited(resp)
    detail = error_detail(raw, resp.content_type)
    return ProviderProtocolError(
        f"{name}: expected a stream, got {resp.content_type}" + (f": {detail}" if detail else ""),
        status=resp.status,
    )


_TAG = re.compile(r"<[^>]*>")
_WS = re.compile(r"\s+")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_H1 = re.compile(r"<h1[^>]*>(.*?)</h1>", re.I | re.S)
_DROP = re.compile(r"<(script|style|head)[^>]*>.*?</\1>", re.I | re.S)


def error_detail(raw: bytes, content_type: str) -> str:
    """The upstream's error message: JSON error.message (or error), else a trimmed text snippet."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if text[:1] in "{[":
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        message = _json_message(value)
        if message:
            return _trim(message)
    if "html" in content_type or text[:1] == "<":
        for pattern in (_TITLE, _H1):
            found = pattern.search(text)
            if found and found.group(1).strip():
                return _trim(html.unescape(_TAG.sub(" ", found.group(1))))
        text = html.unescape(_TAG.sub(" ", _DROP.sub(" ", text)))
    return _trim(text)


def _json_message(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    err = value.get("error", value)
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str) and message:
            kind = err.get("type")
            return f"{message} ({kind})" if isinstance(kind, str) and kind else message
    message = value.get("message") or value.get("detail")
    return message if isinstance(message, str) else None


def _trim(text: str) -> str:
    text = _WS.sub(" ", redact(text)).strip()  # before the cut, which could leave half a key unrecognised
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1].rstrip() + "…"


def snippet(raw: bytes | str) -> str:
    """A short printable piece of a bad payload for an error message."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _trim(text)[:80]
