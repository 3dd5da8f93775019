"""A cross-encoder run in a child process of its own, behind a socket: its passes never wait for this
process's interpreter lock.

Why: a pass in the caller's process takes the interpreter lock back around every native call (the
tokenizer, tensor building, the traced forward, the scores). When many Python threads are busy (a
threaded web server in a storm, whose shed calls come straight back), each take waits its turn among
them: one 10-pair bf16 pass took 42 ms alone and 176-419 ms next to 16 busy threads on 2 cores, and
the engine answered ~0.6x the calls one caller alone gets. Its own process has its own lock: the
caller's process only sends the pairs and reads the scores back (a few lock takes per pass).

What a model process costs: its start (a Python interpreter, torch and the model: seconds, once, at
construction), the model's memory in the child (the caller's process never loads it, nor torch), and
pickling the pairs and scores (microseconds). Faults: a child that exits, is killed (by the kernel's
OOM killer too) or does not answer a pass within `pass_timeout_s` (hung) fails that pass with
`ScorerError` (callers fall back) and is replaced in the background; until the new one is ready each
pass fails at once. The child exits when its parent does (its end of the socket closes).

The child runs `python -m rerank_prod.scoring.model_child FD` (a subprocess, not multiprocessing: no
re-import of the caller's `__main__`, so scripts need no `if __name__` guard).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

from rerank_prod.errors import ScorerError
from rerank_prod.scoring.cross_encoder_model import CrossEncoderSpec
from rerank_prod.scoring.precision import ResolvedPrecision
from rerank_prod.validation import check_number

logger = logging.getLogger("rerank_prod")

_RESTART_BACKOFF_S = (1.0, 5.0, 30.0)
"""Waits between failed starts of a replacement (the last one repeats): a model that cannot load any
more (a deleted path, a full disk) is not reloaded in a busy loop."""


class ModelProcessNotStarted(ScorerError):
    """The child could not be started, or ended before it reported on its model (an interpreter that
    cannot run it, a crash while importing): nothing to do with the model itself."""


@dataclass(frozen=True)
class ModelFacts:
    """What the child reports once its model is loaded."""

    precision: ResolvedPrecision
    max_seq_length: int | None
    device: str


class Wire:
    """Length-prefixed pickles over a connected socket, each send and receive bounded in time.

    Why not `multiprocessing.connection`: its sends block without limit, and a pass of long passages
    is larger than a socket's buffer, so a hung child would hold the sender forever, before any
    timeout of the answer could start."""

    _HEADER = struct.Struct("!Q")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: object, timeout_s: float | None = None) -> None:
        """Send `message` whole within `timeout_s` (None: no limit); `TimeoutError` past it."""
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.settimeout(timeout_s)
        self.sock.sendall(self._HEADER.pack(len(payload)) + payload)

    def receive(self, timeout_s: float | None = None) -> object:
        """The next message, received whole within `timeout_s` (None: no limit); `TimeoutError` past
        it, `EOFError` when the other end closed."""
        ends = None if timeout_s is None else time.monotonic() + timeout_s
        (size,) = self._HEADER.unpack(self._exactly(self._HEADER.size, ends))
        return pickle.loads(self._exactly(size, ends))

    def _exactly(self, size: int, ends: float | None) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            self.sock.settimeout(None if ends is None else max(ends - time.monotonic(), 1e-3))
            chunk = self.sock.recv(min(size - len(chunks), 1 << 20))
            if not chunk:
                raise EOFError("the other end closed the socket")
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        self.sock.close()


class _Child:
    def __init__(self, process: subprocess.Popen[bytes], wire: Wire) -> None:
        self.process = process
        self.wire = wire

    def stop(self) -> None:
        """Kill the process, reap it (no zombie) and close the socket; idempotent."""
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a kill that takes longer: the kernel's business
            self.process.wait(5.0)
        self.wire.close()

    def exit_description(self) -> str:
        try:
            code = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            return "its socket closed"
        return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"


class ModelProcess:
    """A cross-encoder of `spec` loaded and run by a child process; `self(pairs)` is one forward pass.

    - `start_timeout_s`: how long the child may take to load the model (construction raises
      `ScorerError` past it, or when the model cannot be loaded, with the child's reason);
    - `pass_timeout_s`: how long one pass may take before the child counts as hung: it is killed and
      replaced, and the pass fails with `ScorerError`. Callers are not held by it: the engine returns
      every caller by its own deadline; this only bounds how long a hung child blocks the engine.

    One pass at a time (the engine runs one worker for it); thread-safe. `close()` (also at
    interpreter exit) stops the child.
    """

    def __init__(
        self, spec: CrossEncoderSpec, *, start_timeout_s: float = 600.0, pass_timeout_s: float = 120.0
    ) -> None:
        self.spec = spec
        self.start_timeout_s = check_number("start_timeout_s", start_timeout_s)
        self.pass_timeout_s = check_number("pass_timeout_s", pass_timeout_s)
        self._lock = threading.Lock()  # one pass at a time; guards _child
        self._threads = 0  # torch intra-op threads for the next pass; 0: the child's default
        self._closed = threading.Event()
        self._loading: _Child | None = None  # a replacement still loading, stopped by close()
        self.restarts = 0
        child, self.facts = self._start()
        self._child: _Child | None = child
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The child's process id (None while it is being replaced)."""
        child = self._child
        return None if child is None else child.process.pid

    def set_threads(self, count: int) -> None:
        """Intra-op threads the child runs its next passes with."""
        self._threads = count

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores of `pairs` (one finite float each, in order) from the child, or `ScorerError`."""
        with self._lock:
            child = self._child
            if self._closed.is_set():
                raise ScorerError(f"{self.spec.model_name_or_path}: its model process is closed")
            if child is None:
                raise ScorerError(f"{self.spec.model_name_or_path}: its model process is being replaced")
            ends = time.monotonic() + self.pass_timeout_s
            try:
                child.wire.send((list(pairs), self._threads), self.pass_timeout_s)
                status, value = cast(tuple[str, Any], child.wire.receive(max(ends - time.monotonic(), 1e-3)))
            except TimeoutError:
                self._replace(child, f"did not answer within {self.pass_timeout_s:g}s (hung)")
            except (EOFError, OSError):
                self._replace(child, f"ended ({child.exit_description()})")
        if status != "ok":
            raise ScorerError(value)
        return list(value)

    def close(self) -> None:
        """Stop the child (a pass in flight fails) and replace it no more; idempotent."""
        self._closed.set()
        for child in (self._child, self._loading):
            if child is not None:
                child.stop()

    def _replace(self, child: _Child, why: str) -> NoReturn:
        """Drop `child` (lock held) and start its replacement in the background; raises `ScorerError`."""
        child.stop()
        self._child = None
        if self._closed.is_set():  # close() stopped it under the pass
            raise ScorerError(f"{self.spec.model_name_or_path}: its model process is closed")
        logger.warning("model process of %s %s; starting another", self.spec.model_name_or_path, why)
        threading.Thread(target=self._restart, name="rerank-prod-model-process-restart", daemon=True).start()
        raise ScorerError(f"{self.spec.model_name_or_path}: its model process {why}")

    def _restart(self) -> None:
        for attempt in range(sys.maxsize):
            try:
                child, _ = self._start()
            except ScorerError as failure:
                if self._closed.is_set():  # close() stopped the one loading
                    return
                wait = _RESTART_BACKOFF_S[min(attempt, len(_RESTART_BACKOFF_S) - 1)]
                logger.warning("%s; trying again in %gs", failure, wait)
                if self._closed.wait(wait):
                    return
                continue
            with self._lock:
                if self._closed.is_set():
                    child.stop()
                    return
                self._child = child
                self.restarts += 1
            return

    def _start(self) -> tuple[_Child, ModelFacts]:
        """A child with the model loaded and warmed up, and what it reports; `ScorerError` otherwise."""
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        }
        name = self.spec.model_name_or_path
        with theirs:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "rerank_prod.scoring.model_child", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    env=environment,
                    start_new_session=True,  # a Ctrl-C meant for the caller's process: it exits, then the child
                )
            except OSError as failure:
                ours.close()
                raise ModelProcessNotStarted(f"{name}: its model process could not be started: {failure}") from failure
        child = self._loading = _Child(process, Wire(ours))
        try:
            child.wire.send(self.spec, self.start_timeout_s)
            status, value = cast(tuple[str, Any], child.wire.receive(self.start_timeout_s))
        except TimeoutError as slow:
            child.stop()
            raise ScorerError(f"{name}: its model process did not load it within {self.start_timeout_s:g}s") from slow
        except (EOFError, OSError) as lost:
            child.stop()
            raise ModelProcessNotStarted(
                f"{name}: its model process ended while loading it ({child.exit_description()})"
            ) from lost
        except BaseException:
            child.stop()
            raise
        finally:
            self._loading = None
        if status != "ready":
            child.stop()
            raise ScorerError(f"{name}: its model process could not load it: {value}")
        return child, ModelFacts(**value)
