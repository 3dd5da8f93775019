"""Optional dependencies: missing ones reported at construction with the extra to install, and
sentence-transformers models loaded once per configuration, shared by every user in the process."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Literal

from rerank_prod.heap import freeze_heap
from rerank_prod.scoring.precision import Precision, ResolvedPrecision, resolve_precision, torch_dtype

ModelClass = Literal["CrossEncoder", "SentenceTransformer"]


def require_extra(module: str, needed_by: str, extra: str) -> None:
    """Fail at construction, naming the extra to install, when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{needed_by} needs {module}: pip install 'rerank-prod[{extra}]'")


def load_sentence_transformers_model(
    model_class: ModelClass,
    model_name_or_path: str,
    *,
    needed_by: str,
    extra: str,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
    precision: Precision = "fp32",
) -> tuple[Any, ResolvedPrecision]:
    """A `CrossEncoder` or `SentenceTransformer` computing in `precision` (resolved for its device),
    and the precision chosen; scorers and caches asking for the same model with the same settings
    get the same instance (one copy of the weights in memory)."""
    require_extra("sentence_transformers", needed_by, extra)
    from sentence_transformers.util import get_device_name

    device = device or get_device_name()
    resolved = resolve_precision(precision, device)
    return _load(model_class, model_name_or_path, device, trust_remote_code, max_length, resolved), resolved


@functools.lru_cache(maxsize=8)
def _load(
    model_class: ModelClass,
    model_name_or_path: str,
    device: str | None,
    trust_remote_code: bool,
    max_length: int | None,
    precision: ResolvedPrecision,
) -> Any:
    import sentence_transformers

    options: dict[str, Any] = {"device": device, "trust_remote_code": trust_remote_code}
    if max_length is not None:  # a CrossEncoder setting; SentenceTransformer has no such argument
        options["max_length"] = max_length
    model = getattr(sentence_transformers, model_class)(model_name_or_path, **options)
    if precision != "fp32":  # converted once here: the weights themselves, not autocast (measured faster on CPU)
        model.to(torch_dtype(precision))
        if model_class == "CrossEncoder":
            _head_in_fp32(model.model)
    freeze_heap()  # the imports and the model are there for good: keep full collections short
    return model


_HEADS = ("classifier", "score")
"""Names transformers gives a sequence-classification model's scoring layer."""


def _head_in_fp32(model: Any) -> None:
    """Run a cross-encoder's scoring head (its pooler and classifier) in fp32 on the half-precision
    encoder's output: a few hundred multiply-adds per pair, but the last rounding before the score.

    Why: with the head in bf16 too, NDCG@10 on SciFact test (BM25 top-100) drifted from fp32 by
    +0.0011 on 100 queries and +0.0026 on all 300 (near-tied passages swapping places); with the head
    in fp32, +0.0002 and +0.0012, at the same speed. LayerNorms in fp32 as well gave +0.0000 and
    +0.0019: not kept. The encoder's layers stay in bf16: they are the cost."""
    import torch

    base = getattr(model, "base_model", None)
    heads = [getattr(base, "pooler", None), *(getattr(model, name, None) for name in _HEADS)]
    for head in heads:
        if isinstance(head, torch.nn.Module):
            head.float()
            head.register_forward_pre_hook(_inputs_in_fp32)


def _inputs_in_fp32(_module: Any, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
