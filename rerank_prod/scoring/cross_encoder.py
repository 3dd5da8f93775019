"""sentence-transformers `CrossEncoder` scorer: the default, local re-ranker."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Hashable, Sequence
from typing import Any, Literal

from rerank_prod.deadline import Deadline
from rerank_prod.engine import ScoringEngine, default_workers
from rerank_prod.scoring.base import LocalScorer
from rerank_prod.scoring.cross_encoder_model import Activation, CrossEncoderSpec, load_cross_encoder, warmed_predict
from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.scoring.model_process import ModelProcess, ModelProcessNotStarted
from rerank_prod.scoring.precision import Precision, ResolvedPrecision, check_precision
from rerank_prod.validation import check_int, check_text

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
Isolation = Literal["auto", "thread", "process"]
_ACTIVATIONS: tuple[str, ...] = ("default", "sigmoid", "identity")
_ISOLATIONS: tuple[str, ...] = ("auto", "thread", "process")

_ENGINES: dict[Hashable, ScoringEngine] = {}
_MODEL_PROCESSES: dict[CrossEncoderSpec, ModelProcess] = {}
_ENGINES_LOCK = threading.Lock()

logger = logging.getLogger("rerank_prod")


class CrossEncoderScorer(LocalScorer):
    """Scores pairs with a cross-encoder, loaded once at construction and reused.

    `activation`: "default" keeps the model's own (sigmoid for one-logit models), "sigmoid"
    forces probabilities, "identity" returns raw logits (pair with sigmoid normalization in fusion).

    `precision`: "auto" (bf16 on CPUs with bf16 matrix units, AMX-BF16 or AVX512-BF16; bf16/fp16
    on CUDA; fp32 otherwise), "fp32", "bf16" or "fp16". `self.precision` says what was chosen and
    is part of `identity`, so caches never mix scores of different precisions. fp32 runs the model
    unchanged: the scores `CrossEncoder.predict` gives when a call's pairs form one forward pass
    (chunks and batches shared with other callers change the padding: differences of ~1e-7). bf16
    and fp16 passes on CPU are padded to a grid of shapes (`traced.ShapeGrid`) so memory stays
    bounded under a storm: the same ranking, scores within bf16 rounding of the unpadded model.

    All scorers of one model in the process share one `ScoringEngine` (`self.engine`): a bounded
    queue, micro-batches across callers, deadline-checked chunks of at most `max_chunk_s`, and
    requests refused at once when their budget cannot be met (`ScoringShed`) or cut at their
    deadline (`PartialScores`, the first k texts scored). `score`/`ascore` honour `deadline`
    themselves: they return by it, never more than a chunk of work runs past it. The engine's
    settings (`max_chunk_s`) are those of the first scorer built for the model.

    `isolation`: "process" loads and runs the model in a child process (`model_process.ModelProcess`)
    whose passes never wait for this process's interpreter lock: next to 16 busy request threads (a
    threaded server in a storm) it answered 1.6x the calls of "thread", and a child that crashes, is
    killed (the OOM killer) or hangs is replaced in the background while its callers fall back, instead
    of taking the caller's process with it. It costs a child per distinct setting (started at
    construction, in the time the model takes to load and warm up here; the model's memory is there,
    and this process imports neither torch nor the model) and a socket round trip per pass. "thread"
    computes in this process, on the engine's worker threads. "auto" (default): "process" where a child
    can run this interpreter (Linux, macOS: `sys.executable` a Python), "thread" elsewhere (Windows,
    frozen apps, embedded interpreters such as uWSGI) or when the child cannot be started (logged).
    `self.isolation` says which was chosen. Scores and `identity` are the same either way.
    """

    honours_deadline = True

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_CROSS_ENCODER,
        *,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        activation: Activation = "default",
        precision: Precision = "auto",
        trust_remote_code: bool = False,
        max_chunk_s: float = 0.1,
        isolation: Isolation = "auto",
    ) -> None:
        check_text("model_name_or_path", model_name_or_path)
        check_int("batch_size", batch_size)
        if max_length is not None:
            check_int("max_length", max_length)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if isolation not in _ISOLATIONS:
            raise ValueError(f"isolation must be one of {_ISOLATIONS}, got {isolation!r}")
        check_precision(precision)
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.max_length = max_length
        self.activation = activation
        self.spec = CrossEncoderSpec(
            model_name_or_path, device, batch_size, max_length, activation, precision, trust_remote_code
        )
        self.model_process: ModelProcess | None = None
        """The child process computing this scorer's passes (isolation="process"), shared like the engine."""
        self.isolation: Literal["thread", "process"] = "thread"
        if isolation == "process" or (isolation == "auto" and _can_run_a_model_process()):
            require_extra("sentence_transformers", "CrossEncoderScorer", "cross-encoder")
            try:
                self.engine, self.precision, self.max_seq_length = self._process_engine(max_chunk_s)
                self.isolation = "process"
            except ModelProcessNotStarted as failure:
                if isolation == "process":
                    raise
                logger.warning("%s; computing in this process instead (isolation='thread')", failure)
        if self.isolation == "thread":
            self._model, self.precision = load_cross_encoder(self.spec)
            self.max_seq_length = None if self._model.max_seq_length is None else int(self._model.max_seq_length)
            self.engine = self._thread_engine(max_chunk_s)

    def _thread_engine(self, max_chunk_s: float) -> ScoringEngine:
        """The engine of this model with this activation and batch size, made by the first scorer."""
        key = (id(self._model), self.activation, self.batch_size)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                import torch

                threads = torch.get_num_threads()
                on_cpu = str(self._model.device).startswith("cpu")
                engine = ScoringEngine(
                    warmed_predict(self._model, self.spec, self.name),
                    name=self.name,
                    workers=default_workers(threads),
                    max_batch_pairs=self.batch_size,
                    max_chunk_s=max_chunk_s,
                    unit_cap=self._unit_cap(self.max_seq_length),
                    # on a CPU shared with busy Python threads one intra-op thread can beat several
                    thread_counts=(threads, 1) if on_cpu and threads > 1 else (),
                    set_threads=torch.set_num_threads,
                )
                _ENGINES[key] = engine
            return engine

    def _process_engine(self, max_chunk_s: float) -> tuple[ScoringEngine, ResolvedPrecision, int | None]:
        """The engine over the model process of this scorer's settings, made (with the process) by the
        first scorer; with the precision and length cap the process reports."""
        key = ("process", self.spec)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                process = ModelProcess(self.spec)
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
                engine = ScoringEngine(
                    process,
                    name=self.name,
                    workers=1,  # one child computes one pass at a time, with all the cores it is given
                    max_batch_pairs=self.batch_size,
                    max_chunk_s=max_chunk_s,
                    unit_cap=self._unit_cap(process.facts.max_seq_length),
                    thread_counts=(cores, 1) if process.facts.device.startswith("cpu") and cores > 1 else (),
                    set_threads=process.set_threads,
                    on_close=process.close,
                )
                _ENGINES[key] = engine
                _MODEL_PROCESSES[self.spec] = process
            self.model_process = _MODEL_PROCESSES[self.spec]
            return engine, self.model_process.facts.precision, self.model_process.facts.max_seq_length

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (what `ChunkedScorer` cuts windows with): the loaded
        model's own; with isolation="process" one loaded here from the same path on first use (this
        imports transformers, and torch with it, into this process)."""
        if self.isolation == "thread":
            return self._model.tokenizer
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_name_or_path, trust_remote_code=self.spec.trust_remote_code)

    @staticmethod
    def _unit_cap(max_seq_length: int | None) -> int:
        """Characters of a pair beyond which it costs no more (~6 per token, generously)."""
        return (max_seq_length or 512) * 6

    @property
    def name(self) -> str:
        return self.model_name_or_path

    @property
    def identity(self) -> str:
        return (
            f"cross-encoder:{self.model_name_or_path}"
            f"|max_length={self.max_seq_length}|activation={self.activation}"
            + ("" if self.precision == "fp32" else f"|precision={self.precision}")
        )

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        """Scores through the shared engine; see the class docstring for what `deadline` does."""
        return self.engine.score(query, texts, deadline)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        """`score` without a thread hop: the engine's worker wakes the event loop when done."""
        return await self.engine.ascore(query, texts, deadline)

    def __repr__(self) -> str:
        return (
            f"CrossEncoderScorer({self.model_name_or_path!r}, activation={self.activation!r}, "
            f"precision={self.precision!r})"
        )


def _can_run_a_model_process() -> bool:
    """Whether `isolation="auto"` may start a model process: a POSIX system (the child inherits a
    socket) and an interpreter that is a Python one (embedded ones, like uWSGI's, set `sys.executable`
    to their own binary or to nothing; frozen apps have no `-m`)."""
    executable = os.path.basename(sys.executable or "").lower()
    return os.name == "posix" and not getattr(sys, "frozen", False) and executable.startswith(("python", "pypy"))
