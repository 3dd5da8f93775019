"""A local cross-encoder's forward pass as one TorchScript call, so a busy interpreter cannot stall it.

Why: eager PyTorch takes the GIL back between operators (a MiniLM forward has hundreds). When other
Python threads are busy (16 request threads, an event loop serving a storm of fallbacks), every
re-take waits for the interpreter's switch interval, and the engine's forward passes crawl: one
20-pair forward took 110 ms alone and 3.7-6.4 s next to 8 spinning Python threads on this 2-core
CPU. Traced, the same forward runs in C++ after one GIL release: 110 ms alone, 270-550 ms next to the
same threads (what sharing two cores costs), with bit-identical scores.

The model's own `forward` is replaced on the instance by a dispatcher: calls with the inputs a
cross-encoder gets (`input_ids`, `attention_mask`, `token_type_ids`) run a module traced for that set
of inputs at its first use (shapes stay free: batch and length vary per call); anything else
(gradients, other inputs, hidden states asked for) runs the original forward. A model that cannot be
traced keeps its original forward (logged once).

With a `ShapeGrid` (given for bf16/fp16 models, never for fp32), each such call is padded up to a
grid of batch sizes and lengths first; see `ShapeGrid` for why.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

from rerank_prod.validation import check_int

logger = logging.getLogger("rerank_prod")

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ALLOWED_FLAGS = {
    "return_dict": (True, None),
    "output_hidden_states": (False, None),
    "output_attentions": (False, None),
}


@dataclass(frozen=True)
class ShapeGrid:
    """Batch sizes and lengths a forward pass is padded up to, so that a model meets few distinct shapes.

    Why: oneDNN (bf16 on CPU) builds and caches kernels, and ideep reordered weights, for every input
    shape it meets, and glibc keeps the freed buffers of each size. Under a storm of callers the engine's
    chunks take every batch size from 1 to 32 and every length the passages give, so memory kept
    growing: random batch x length passes took RSS from 580 to 1,100 MiB in 20 s on 2 cores and were
    still growing (+31% after a 60 s storm). Padded to this grid (lengths to a multiple of 32, batches
    to 1, 2, 4 then a multiple of 4) the same passes settle at ~+100 MiB. The padding costs compute
    (up to `length_step - 1` masked tokens per pair and `batch_step - 1` dummy rows per pass), and
    changes the last bits of bf16 scores, so fp32 models never get a grid (their scores stay those of
    `CrossEncoder.predict`).

    - `length_step`: lengths are padded up to a multiple of it, never beyond `max_length` (the
      longest input the tokenizer gives the model);
    - `batch_step`: batches below it are padded up to a power of two, larger ones to a multiple of it.
    """

    length_step: int = 32
    batch_step: int = 4
    max_length: int = 512

    def __post_init__(self) -> None:
        for name in ("length_step", "batch_step", "max_length"):
            check_int(name, getattr(self, name))

    @classmethod
    def within(cls, *limits: object) -> ShapeGrid | None:
        """The default grid with lengths capped by the smallest of `limits` that is a positive int (a
        model's `max_seq_length`, its `max_position_embeddings`; unknown ones are None); None when no
        limit is known, since padding could then pass what the model takes."""
        known = [limit for limit in limits if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0]
        return cls(max_length=min(known)) if known else None

    def padded(self, batch: int, length: int) -> tuple[int, int]:
        """The (batch, length) a pass of `batch` sequences of `length` tokens runs at."""
        if batch < self.batch_step:
            rows = 1 << (batch - 1).bit_length()
        else:
            rows = -(-batch // self.batch_step) * self.batch_step
        tokens = max(length, min(-(-length // self.length_step) * self.length_step, self.max_length))
        return rows, tokens


def trace_forward(model: Any, grid: ShapeGrid | None = None) -> None:
    """Make `model` (a transformers sequence-classification model on CPU) run its inference forward
    passes as TorchScript, padded up to `grid` when one is given; idempotent (the first call's grid
    stays). Never raises: a model that cannot be traced stays eager."""
    if hasattr(model, "_rerank_prod_traced"):
        return
    eager = type(model).forward
    traced: dict[tuple[str, ...], Any] = {}
    model._rerank_prod_traced = traced  # input names -> traced module; read by tests
    failed: set[tuple[str, ...]] = set()
    lock = threading.Lock()

    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class Positional(torch.nn.Module):
        def __init__(self, names: tuple[str, ...]) -> None:
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *tensors: Any) -> Any:
            return eager(self.model, **dict(zip(self.names, tensors, strict=True)), return_dict=True).logits

    def compiled(names: tuple[str, ...], tensors: tuple[Any, ...]) -> Any | None:
        with lock:
            if names in traced or names in failed:
                return traced.get(names)
            try:  # the tracer's warnings (deprecation, shape checks it cannot prove) are not the user's concern
                with torch.inference_mode(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    jit: Any = torch.jit  # untyped in torch's stubs
                    module = jit.trace(Positional(names).eval(), tensors, check_trace=False)
                    traced[names] = jit.freeze(module)
            except Exception as failure:  # an architecture the tracer cannot follow: stay eager
                failed.add(names)
                logger.info("forward of %s not traced (%s); it runs eagerly", type(model).__name__, failure)
            return traced.get(names)

    def forward(*args: Any, **kwargs: Any) -> Any:
        flags = {key: kwargs.pop(key) for key in list(kwargs) if key in _ALLOWED_FLAGS}
        tensors = tuple(kwargs[name] for name in _INPUTS if kwargs.get(name) is not None)
        names = tuple(name for name in _INPUTS if kwargs.get(name) is not None)
        usable = (
            not args
            and not model.training
            and not torch.is_grad_enabled()
            and "input_ids" in names
            and all(value is None for key, value in kwargs.items() if key not in _INPUTS)
            and all(value in _ALLOWED_FLAGS[key] for key, value in flags.items())
        )
        module = compiled(names, tensors) if usable else None
        if module is None:
            return eager(model, *args, **kwargs, **flags)
        rows = len(tensors[0])  # dummy rows of the grid, if any, come after these
        return SequenceClassifierOutput(logits=module(*on_grid(dict(zip(names, tensors, strict=True))))[:rows])

    pad_token_id = getattr(model.config, "pad_token_id", None)

    def on_grid(inputs: dict[str, Any]) -> tuple[Any, ...]:
        """`inputs` padded up to `grid`: masked tokens after each sequence, and dummy rows of one
        token after the batch (their logits are dropped). Left as they are without a grid, or where
        padding would not be masked: no attention mask, no pad token, or a tokenizer that pads on the left."""
        mask = inputs.get("attention_mask")
        if grid is None or mask is None or pad_token_id is None or not bool(mask[:, 0].all()):
            return tuple(inputs.values())
        rows, length = mask.shape
        padded_rows, padded_length = grid.padded(rows, length)
        if (padded_rows, padded_length) == (rows, length):
            return tuple(inputs.values())
        padded = []
        for name, tensor in inputs.items():
            fill = pad_token_id if name == "input_ids" else 0
            grown = tensor.new_full((padded_rows, padded_length), fill)
            grown[:rows, :length] = tensor
            if name == "attention_mask":
                grown[rows:, 0] = 1  # a dummy row attends to its one token: no row is fully masked
            padded.append(grown)
        return tuple(padded)

    model.forward = forward
