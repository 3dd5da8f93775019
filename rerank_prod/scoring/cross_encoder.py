"""sentence-transformers `CrossEncoder` scorer: the default, local re-ranker."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any, Literal

from rerank_prod.deadline import Deadline
from rerank_prod.engine import ScoringEngine, default_workers
from rerank_prod.heap import freeze_heap
from rerank_prod.scoring.base import LocalScorer, checked_scores
from rerank_prod.scoring.dependencies import load_sentence_transformers_model
from rerank_prod.scoring.precision import Precision, check_precision
from rerank_prod.scoring.traced import ShapeGrid, trace_forward
from rerank_prod.validation import check_int, check_text

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
Activation = Literal["default", "sigmoid", "identity"]
_ACTIVATIONS: tuple[str, ...] = ("default", "sigmoid", "identity")


_WARM_UP_PASSES = 3
"""Passes a new engine's model runs before any caller, out of every call's budget. Measured on 2 cores:
the first call of 4 pairs took 600 ms (tracing the forward at first use), the second 170 ms
(TorchScript's executor optimizes the traced graph on its second run), the third 35 ms: the README
quickstart, budget 0.5 s, fell back on its one call."""
_WARM_UP_PAIRS = [("warm-up", "a short passage"), ("warm-up", "a longer passage, so that the batch is padded")]
"""Of two lengths: the traced forward is built on a batch with padding in its attention mask."""

_ENGINES: dict[tuple[int, str, int], ScoringEngine] = {}
_ENGINES_LOCK = threading.Lock()


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
    ) -> None:
        check_text("model_name_or_path", model_name_or_path)
        check_int("batch_size", batch_size)
        if max_length is not None:
            check_int("max_length", max_length)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.max_length = max_length
        self.activation = activation
        check_precision(precision)
        self._model, self.precision = load_sentence_transformers_model(
            "CrossEncoder",
            model_name_or_path,
            needed_by="CrossEncoderScorer",
            extra="cross-encoder",
            device=device,
            max_length=max_length,
            trust_remote_code=trust_remote_code,
            precision=precision,
        )
        if str(self._model.device).startswith("cpu") and self._model.model is not None:
            # traced: a busy interpreter cannot stall its forward passes; bf16/fp16 on a grid of
            # shapes: memory stays bounded under a storm (fp32 stays `CrossEncoder.predict`-exact)
            config = self._model.model.config
            limits = (self._model.max_seq_length, getattr(config, "max_position_embeddings", None))
            trace_forward(self._model.model, None if self.precision == "fp32" else ShapeGrid.within(*limits))
        self._activation_fn = self._resolve_activation(activation)
        self.engine = self._engine(max_chunk_s)

    def _engine(self, max_chunk_s: float) -> ScoringEngine:
        """The engine of this model with this activation and batch size, made by the first scorer."""
        key = (id(self._model), self.activation, self.batch_size)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                import torch

                threads = torch.get_num_threads()
                on_cpu = str(self._model.device).startswith("cpu")
                predict = functools.partial(self._predict, self._model, self._activation_fn, self.batch_size, self.name)
                for _ in range(_WARM_UP_PASSES):
                    predict(_WARM_UP_PAIRS)
                freeze_heap()  # what tracing made lives as long as the model
                engine = ScoringEngine(
                    predict,
                    name=self.name,
                    workers=default_workers(threads),
                    max_batch_pairs=self.batch_size,
                    max_chunk_s=max_chunk_s,
                    unit_cap=int(self._model.max_seq_length) * 6,  # ~characters per token, generously
                    # on a CPU shared with busy Python threads one intra-op thread can beat several
                    thread_counts=(threads, 1) if on_cpu and threads > 1 else (),
                    set_threads=torch.set_num_threads,
                )
                _ENGINES[key] = engine
            return engine

    @staticmethod
    def _predict(
        model: Any, activation_fn: Any, batch_size: int, name: str, pairs: list[tuple[str, str]]
    ) -> list[float]:
        raw = model.predict(
            pairs,
            batch_size=batch_size,
            show_progress_bar=False,
            activation_fn=activation_fn,
            convert_to_numpy=True,
        )
        return checked_scores(raw.tolist(), len(pairs), name)

    @staticmethod
    def _resolve_activation(activation: Activation) -> Any:
        if activation == "default":
            return None
        import torch

        return torch.nn.Sigmoid() if activation == "sigmoid" else torch.nn.Identity()

    @property
    def name(self) -> str:
        return self.model_name_or_path

    @property
    def identity(self) -> str:
        return (
            f"cross-encoder:{self.model_name_or_path}"
            f"|max_length={self._model.max_seq_length}|activation={self.activation}"
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
