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
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

logger = logging.getLogger("rerank_prod")

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ALLOWED_FLAGS = {
    "return_dict": (True, None),
    "output_hidden_states": (False, None),
    "output_attentions": (False, None),
}


def trace_forward(model: Any) -> None:
    """Make `model` (a transformers sequence-classification model on CPU) run its inference forward
    passes as TorchScript; idempotent. Never raises: a model that cannot be traced stays eager."""
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
        return SequenceClassifierOutput(logits=module(*tensors))

    model.forward = forward
