"""Which number format a local model computes in: `"auto"` picks the fastest one that keeps its ranking.

bf16 halves the bytes moved and runs on the CPU's bf16 matrix units (AMX-BF16, or AVX512-BF16 where
AMX is absent), measured ~2x faster than fp32 for a MiniLM cross-encoder on 2 cores with scores within
1e-4; without such units bf16 is emulated and slower than fp32, so `auto` keeps fp32 there. On CUDA,
fp16 (bf16 where the GPU supports it: same range as fp32, so no overflow in logits).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def check_precision(precision: object) -> Precision:
    """`precision` as given, or a ValueError naming the setting and the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision  # type: ignore[return-value]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when bf16 matmuls run on hardware units oneDNN uses (AMX-BF16 or AVX512-BF16)."""
    import torch

    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probe is not None and probe() for probe in probes):
        return True
    return bool(cpu_flags() & _CPU_BF16_FLAGS)


def resolve_precision(precision: Precision, device: str) -> ResolvedPrecision:
    """What `precision` means on `device` ("cpu", "cuda", "cuda:1", "mps", ...)."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def torch_dtype(precision: ResolvedPrecision) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
