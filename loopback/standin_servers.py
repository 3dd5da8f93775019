"""Stand-in servers on 127.0.0.1 speaking the real wire formats of Cohere v2, text-embeddings-inference,
Infinity/vLLM and OpenAI (chat completions, embeddings), error responses included.

They "understand" text by word overlap, so orders are predictable. Tests queue faults for the next
requests to a path: slow answers, error statuses (429 with Retry-After, 500, 503), dropped
connections, raw (malformed) bodies, or, for chat completions, a given answer text; and the faults
that defeat per-read timeouts or leak secrets: an answer that never comes (`hang`), a body
drip-fed a byte at a time (`drip`), a huge body (`huge`), a connection reset halfway through the
body (`reset_mid_body`), a 401 echoing the Authorization header (`echo_credentials`). Every slow
fault ends when the server closes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rerank_prod import RetryPolicy

# Retries quick enough for tests; three attempts, as by default.
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05)
_WORD = re.compile(r"[a-z0-9]+")
EMBEDDING_DIMENSIONS = 64


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def overlap(query: str, text: str) -> float:
    """Share of the query's words found in the text, in [0, 1]."""
    query_words = words(query)
    return len(query_words & words(text)) / len(query_words) if query_words else 0.0


def best_first(query: str, texts: Sequence[str]) -> list[int]:
    """Positions of `texts` in the order the stand-ins rank them."""
    return sorted(range(len(texts)), key=lambda i: -overlap(query, texts[i]))


def bag_of_words_vector(text: str) -> list[float]:
    """A deterministic embedding: hashed word counts plus a small constant so no vector is zero."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    vector[0] = 0.05
    for word in words(text):
        vector[1 + zlib.crc32(word.encode()) % (EMBEDDING_DIMENSIONS - 1)] += 1.0
    return vector


@dataclass(frozen=True)
class Fault:
    """What the server does instead of (or before) answering normally."""

    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    drop: bool = False
    raw_body: bytes | None = None
    content: str | None = None
    hang: bool = False
    drip_s: float = 0.0
    huge_bytes: int = 0
    reset_mid_body: bool = False
    echo_credentials: bool = False


def status(code: int, retry_after: float | str | None = None) -> Fault:
    return Fault(status=code, retry_after=None if retry_after is None else str(retry_after))


def slow(seconds: float) -> Fault:
    return Fault(delay_s=seconds)


def drop() -> Fault:
    return Fault(drop=True)


def hang() -> Fault:
    return Fault(hang=True)


def drip(seconds_per_byte: float = 0.1) -> Fault:
    return Fault(drip_s=seconds_per_byte)


def huge(size_bytes: int = 50 * 2**20) -> Fault:
    return Fault(huge_bytes=size_bytes)


def reset_mid_body() -> Fault:
    return Fault(reset_mid_body=True)


def echo_credentials() -> Fault:
    return Fault(echo_credentials=True)


def raw(body: bytes) -> Fault:
    return Fault(raw_body=body)


def llm_says(content: str) -> Fault:
    return Fault(content=content)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    client_port: int


class Answer(Exception):
    """A route's non-200 answer."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.body = body


# --- the wire formats ---------------------------------------------------------------------------


def _error_body(flavor: str, status_code: int, message: str) -> Any:
    if flavor == "cohere":
        return {"id": str(uuid.uuid4()), "message": message}
    if flavor == "tei":
        kinds = {422: "Validation", 429: "Overloaded", 401: "Unhealthy"}
        return {"error": message, "error_type": kinds.get(status_code, "Backend")}
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status_code < 500 else "server_error",
            "param": None,
            "code": None,
        }
    }


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Answer(400 if what != "texts" else 422, what)
    return value


def cohere_v2_rerank(body: dict[str, Any], server: StandInServer) -> Any:
    if not isinstance(body.get("model"), str) or not isinstance(body.get("query"), str):
        raise Answer(400, "model and query are required")
    documents = _strings(body.get("documents"), "documents")
    top_n = body.get("top_n")  # explicit null is allowed, as by the real API
    if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
        raise Answer(400, "top_n must be a positive integer")
    max_tokens = body.get("max_tokens_per_doc")
    if max_tokens is not None and not isinstance(max_tokens, int):
        raise Answer(400, "max_tokens_per_doc must be an integer")
    results = sorted(
        ({"index": i, "relevance_score": overlap(body["query"], doc)} for i, doc in enumerate(documents)),
        key=lambda item: -item["relevance_score"],
    )
    return {
        "id": str(uuid.uuid4()),
        "results": results[:top_n] if top_n else results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }


def tei_rerank(body: dict[str, Any], server: StandInServer) -> Any:
    texts = _strings(body.get("texts"), "texts")
    if len(texts) > server.max_client_batch_size:
        raise Answer(422, f"batch size {len(texts)} > maximum allowed batch size {server.max_client_batch_size}")
    scores = [{"index": i, "score": overlap(body["query"], text)} for i, text in enumerate(texts)]
    return sorted(scores, key=lambda item: -item["score"])


def infinity_rerank(body: dict[str, Any], server: StandInServer) -> Any:
    documents = _strings(body.get("documents"), "documents")
    results: list[dict[str, Any]] = [
        {"relevance_score": overlap(body["query"], doc), "index": i, "document": None}
        for i, doc in enumerate(documents)
    ]
    results.sort(key=lambda item: -item["relevance_score"])
    return {
        "object": "rerank",
        "results": results[: body.get("top_n") or None],
        "model": body.get("model", "default"),
        "usage": {"prompt_tokens": 10, "total_tokens": 10},
        "id": f"infinity-{uuid.uuid4()}",
        "created": int(time.time()),
    }


def follow_up_words(question: str, passages: Sequence[str], count: int = 6) -> str:
    """The stand-in's follow-up query: the first passage's first `count` words the question lacks."""
    known = words(question)
    fresh = [word for word in _WORD.findall(passages[0].lower()) if word not in known] if passages else []
    return " ".join(list(dict.fromkeys(fresh))[:count]) or question


VARIANT_SUFFIXES = ("in other words", "specifically", "in general")
"""The stand-in's query variants: the query followed by each of these, as many as asked for."""


def _judge(prompt: dict[str, Any]) -> str:
    """What a perfectly obedient LLM answers to rerank-prod's prompts: judgement by word overlap,
    follow-up queries from the best passage's new words, variants by fixed suffixes."""
    if "question" in prompt:
        return json.dumps({"query": follow_up_words(prompt["question"], prompt["passages"])})
    if "count" in prompt:
        return json.dumps({"queries": [f"{prompt['query']} {s}" for s in VARIANT_SUFFIXES[: prompt["count"]]]})
    if "passage" in prompt:
        share = overlap(prompt["query"], prompt["passage"])
        return json.dumps({"relevance": round(10 * share, 3), "reason": f"{share:.0%} of the query's words"})
    ranked = sorted(prompt["passages"], key=lambda passage: -overlap(prompt["query"], passage["text"]))
    return json.dumps({"ranking": [passage["id"] for passage in ranked]})


def openai_chat_completions(body: dict[str, Any], server: StandInServer, content: str | None = None) -> Any:
    messages = body.get("messages")
    if not isinstance(messages, list) or not isinstance(body.get("model"), str):
        raise Answer(400, "model and messages are required")
    response_format = body.get("response_format")
    if response_format is not None and response_format.get("type") not in server.response_formats:
        raise Answer(400, f"response_format type {response_format.get('type')!r} is not supported by this server")
    if content is None:
        content = _judge(json.loads(messages[-1]["content"]))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    }


def openai_embeddings(body: dict[str, Any], server: StandInServer) -> Any:
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else _strings(inputs, "input")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = bag_of_words_vector(text)
        encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
    }


ROUTES: dict[str, dict[str, Callable[..., Any]]] = {
    "cohere": {"/v2/rerank": cohere_v2_rerank},
    "tei": {"/rerank": tei_rerank},
    "infinity": {"/rerank": infinity_rerank},
    "openai": {"/v1/chat/completions": openai_chat_completions, "/v1/embeddings": openai_embeddings},
}


# --- the server ---------------------------------------------------------------------------------


@dataclass
class StandInServer:
    """One flavor of server on a free loopback port, run in a background thread."""

    flavor: str
    api_key: str | None = None
    max_client_batch_size: int = 32
    response_formats: tuple[str, ...] = ("json_schema", "json_object")
    """`response_format` types chat completions accept (others get a 400, as from servers without them)."""
    requests: list[Recorded] = field(default_factory=list)
    _faults: dict[str, deque[Fault]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def clear_faults(self) -> None:
        """The server heals: queued faults are dropped."""
        with self._lock:
            self._faults.clear()

    def fail_next(self, path: str, *faults: Fault) -> None:
        """The next requests to `path` meet these faults, one each, in order."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def close(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextlib.contextmanager
def running(flavor: str, **settings: Any) -> Iterator[StandInServer]:
    server = StandInServer(flavor, **settings)
    try:
        yield server
    finally:
        server.close()


def _handler_for(server: StandInServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
        _delivery: Fault | None = None  # the fault shaping how the current answer is sent
        timeout = 5

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length)
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = None
            path = self.path.split("?")[0]
            with server._lock:
                server.requests.append(Recorded(path, dict(self.headers.items()), body, self.client_address[1]))
            fault = server._next_fault(path)
            self._delivery = fault
            with contextlib.suppress(OSError):  # the client gave up (timeout) while we were being slow
                self._answer(path, body, fault)

        def _answer(self, path: str, body: Any, fault: Fault | None) -> None:
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and fault.hang:
                server.closing.wait(60)
                return
            if fault is not None and fault.echo_credentials:
                echoed = f"invalid credentials: {self.headers.get('Authorization')!r}"
                return self._json(401, _error_body(server.flavor, 401, echoed))
            if fault is not None and fault.huge_bytes:
                return self._send_huge(fault.huge_bytes)
            if fault is not None and fault.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None and fault.raw_body is not None:
                return self._send(200, fault.raw_body, {})
            if fault is not None and fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return self._json(fault.status, _error_body(server.flavor, fault.status, "injected fault"), headers)
            route = ROUTES[server.flavor].get(path)
            if route is None:
                return self._json(404, _error_body(server.flavor, 404, f"no route {path}"))
            if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                return self._json(401, _error_body(server.flavor, 401, "invalid api token"))
            if not isinstance(body, dict):
                return self._json(400, _error_body(server.flavor, 400, "body must be a JSON object"))
            try:
                extra = {"content": fault.content} if fault is not None and fault.content is not None else {}
                return self._json(200, route(body, server, **extra))
            except Answer as answer:
                return self._json(answer.status_code, _error_body(server.flavor, answer.status_code, str(answer.body)))

        def _json(self, status_code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status_code, json.dumps(payload).encode(), headers or {})

        def _send(self, status_code: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            fault = self._delivery
            if fault is not None and fault.drip_s:
                for position in range(len(payload)):  # bounded by the body and by the server closing
                    self.wfile.write(payload[position : position + 1])
                    self.wfile.flush()
                    if server.closing.wait(fault.drip_s):
                        return
            elif fault is not None and fault.reset_mid_body:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
            else:
                self.wfile.write(payload)

        def _send_huge(self, size: int) -> None:
            """A valid JSON object of `size` bytes, written in 1 MiB pieces."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            opening, closing = b'{"pad":"', b'"}'
            self.wfile.write(opening)
            left = size - len(opening) - len(closing)
            while left > 0 and not server.closing.is_set():
                piece = min(left, 2**20)
                self.wfile.write(b"x" * piece)
                left -= piece
            self.wfile.write(closing)

    return Handler
