"""HTTP transports that give every request a total deadline and cap the size of its answer.

httpx's timeouts are per read: a server that drip-feeds its body (a byte every 100 ms) never
trips them, so a request could hold its worker thread for as long as the server likes, and a
50 MB body would be read and parsed past any budget. Every remote scorer's client (httpx for the
rerank servers and Cohere's SDK, httpx2 for OpenAI's SDK) sends through these transports instead:

- The request's timeout (the smaller of `request_timeout_s` and what is left of the call's budget,
  set per attempt by `ResilientCaller`) becomes the request's total lifetime. On the sync path a
  single reaper thread shuts the connection's socket down when it passes, which wakes the blocked
  read at once, so the worker is free again at the deadline; on the async path every read is
  awaited with what remains. Either way the request fails with the library's `ReadTimeout`, which
  the retry policy and circuit breaker count as a failure.
- A body beyond `max_response_bytes` (declared or received) fails at once with `ResponseTooLarge`,
  before it is buffered or parsed.

Limit: until the response headers have arrived, the per-read timeout (itself at most the budget)
is what bounds a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

from rerank_prod.validation import check_int

DEFAULT_MAX_RESPONSE_BYTES = 4 * 2**20
"""4 MiB: ~50,000 rerank results; JSON of that size parses in a few ms."""


class ResponseTooLarge(Exception):
    """The server's answer is larger than `max_response_bytes`."""


def check_max_response_bytes(value: object) -> int:
    return check_int("max_response_bytes", value)


class _Reaper:
    """One daemon thread that runs actions at given monotonic times (cancellable)."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, list[Callable[[], None] | None]]] = []
        self._wakeup = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, when: float, action: Callable[[], None]) -> list[Callable[[], None] | None]:
        """Schedule `action`; the returned handle cancels it with `cancel`."""
        handle: list[Callable[[], None] | None] = [action]
        with self._wakeup:
            heapq.heappush(self._queue, (when, next(self._order), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rerank-prod-http-reaper", daemon=True)
                self._thread.start()
            self._wakeup.notify()
        return handle

    def cancel(self, handle: list[Callable[[], None] | None]) -> None:
        with self._wakeup:
            handle[0] = None

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    self._wakeup.wait(None if not self._queue else self._queue[0][0] - time.monotonic())
                _, _, handle = heapq.heappop(self._queue)
                action, handle[0] = handle[0], None
            if action is not None:
                with contextlib.suppress(OSError):  # the connection is already gone
                    action()


_reaper = _Reaper()


def _expires_at(request: Any) -> float | None:
    """The request's total deadline: now plus its read timeout (None: unbounded)."""
    timeouts = request.extensions.get("timeout") or {}
    read = timeouts.get("read")
    return None if read is None else time.monotonic() + float(read)


def _declared_size(response: Any) -> int | None:
    try:
        return int(response.headers.get("content-length", ""))
    except ValueError:
        return None


class _Watch:
    """Shared state of one response: how much has arrived, and whether the reaper may cut it."""

    def __init__(self, module: ModuleType, limit: int, expires_at: float | None) -> None:
        self.module = module
        self.limit = limit
        self.expires_at = expires_at
        self.received = 0
        self.lock = threading.Lock()
        self.finished = False

    def count(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise ResponseTooLarge(f"the answer exceeds max_response_bytes={self.limit}")
        self.check_time()

    def check_time(self) -> None:
        if self.expires_at is not None and time.monotonic() >= self.expires_at:
            raise self.module.ReadTimeout("the request's total deadline passed while its body was arriving")

    def finish(self) -> None:
        with self.lock:
            self.finished = True

    def cut(self, stream: Any) -> None:
        """Reaper action: wake a read blocked on a drip-feeding server by shutting its socket down."""
        with self.lock:
            if self.finished:
                return
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)


@functools.cache
def bounded_transports(module: ModuleType) -> tuple[type[Any], type[Any]]:
    """(sync, async) transport classes for `module`, httpx or its fork httpx2 (same API)."""

    class BoundedStream(module.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, watch: _Watch, handle: Any) -> None:
            self._inner = inner
            self._watch = watch
            self._handle = handle

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self._inner:
                    self._watch.count(chunk)
                    yield chunk
            except module.TransportError:
                self._watch.check_time()  # cut by the reaper: report the deadline, not the broken pipe
                raise
            finally:
                self._watch.finish()

        def close(self) -> None:
            self._watch.finish()
            if self._handle is not None:
                _reaper.cancel(self._handle)
            self._inner.close()

    class BoundedTransport(module.BaseTransport):  # type: ignore[misc,name-defined]
        """`module.HTTPTransport(**options)` with a total deadline per request and a size cap."""

        def __init__(self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **options: Any) -> None:
            self.max_response_bytes = check_max_response_bytes(max_response_bytes)
            self._inner = module.HTTPTransport(**options)

        def handle_request(self, request: Any) -> Any:
            watch = _Watch(module, self.max_response_bytes, _expires_at(request))
            response = self._inner.handle_request(request)
            declared = _declared_size(response)
            if declared is not None and declared > self.max_response_bytes:
                response.stream.close()
                raise ResponseTooLarge(f"the answer ({declared} bytes) exceeds max_response_bytes")
            handle = None
            if watch.expires_at is not None:
                stream = response.extensions.get("network_stream")
                handle = _reaper.at(watch.expires_at, functools.partial(watch.cut, stream))
            response.stream = BoundedStream(response.stream, watch, handle)
            return response

        def close(self) -> None:
            self._inner.close()

    class AsyncBoundedStream(module.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, watch: _Watch) -> None:
            self._inner = inner
            self._watch = watch

        async def __aiter__(self) -> AsyncIterator[bytes]:
            chunks = aiter(self._inner)
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks), _remaining(self._watch))
                except StopAsyncIteration:
                    return
                except (asyncio.TimeoutError, TimeoutError):
                    raise module.ReadTimeout(
                        "the request's total deadline passed while its body was arriving"
                    ) from None
                self._watch.count(chunk)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    class AsyncBoundedTransport(module.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        """`module.AsyncHTTPTransport(**options)` with a total deadline per request and a size cap."""

        def __init__(self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **options: Any) -> None:
            self.max_response_bytes = check_max_response_bytes(max_response_bytes)
            self._inner = module.AsyncHTTPTransport(**options)

        async def handle_async_request(self, request: Any) -> Any:
            watch = _Watch(module, self.max_response_bytes, _expires_at(request))
            try:
                response = await asyncio.wait_for(self._inner.handle_async_request(request), _remaining(watch))
            except (asyncio.TimeoutError, TimeoutError):
                raise module.ReadTimeout("the request's total deadline passed before the answer began") from None
            declared = _declared_size(response)
            if declared is not None and declared > self.max_response_bytes:
                await response.stream.aclose()
                raise ResponseTooLarge(f"the answer ({declared} bytes) exceeds max_response_bytes")
            response.stream = AsyncBoundedStream(response.stream, watch)
            return response

        async def aclose(self) -> None:
            await self._inner.aclose()

    return BoundedTransport, AsyncBoundedTransport


def _remaining(watch: _Watch) -> float | None:
    return None if watch.expires_at is None else max(0.0, watch.expires_at - time.monotonic())
