"""Keeps the garbage collector's full passes short once a local model is loaded.

Why: importing torch and transformers and loading a model leave ~470k Python objects (functions,
tuples, dicts of the imported modules) that live as long as the process. A full collection scans
them all: 340-390 ms on this 2-core machine, with the interpreter lock held, so every thread and
the event loop stop. Under 64 asyncio callers with a 0.3 s budget it was the one stall of the loop
above 50 ms and the latency maximum (~670 ms). `gc.freeze()` after a collection moves the objects
alive at that moment out of every later collection (they are still freed by reference counting);
objects created afterwards are collected as usual. The cost: a reference cycle made only of objects
that were alive at the freeze is never collected. Set `RERANK_PROD_GC_FREEZE=0` to keep the
collector as it is.
"""

from __future__ import annotations

import gc
import os

_ENVIRONMENT = "RERANK_PROD_GC_FREEZE"


def freeze_heap() -> bool:
    """Collect, then freeze what is left (`gc.freeze`), unless `RERANK_PROD_GC_FREEZE=0`.
    Cheap after the first time: frozen objects are not scanned again. True when it froze."""
    if os.environ.get(_ENVIRONMENT, "1").strip() == "0":
        return False
    gc.collect()
    gc.freeze()
    return True
