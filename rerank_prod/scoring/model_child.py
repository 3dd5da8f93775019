"""The model process's side (see `model_process`): load the model the parent names, answer its passes.

Run as `python -m rerank_prod.scoring.model_child FD`, FD a connected socket inherited from the parent.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from typing import Any, cast

from rerank_prod.scoring.cross_encoder_model import CrossEncoderSpec, load_cross_encoder, warmed_predict
from rerank_prod.scoring.model_process import Wire


def _serve(wire: Wire) -> None:
    """The child: load the model the parent names, then answer passes until the parent goes."""
    spec = cast(CrossEncoderSpec, wire.receive())
    try:
        model, precision = load_cross_encoder(spec)
        predict = warmed_predict(model, spec, spec.model_name_or_path)
    except Exception as failure:  # reported to the parent, which raises it at construction
        wire.send(("error", f"{type(failure).__name__}: {failure}"))
        return
    length = model.max_seq_length
    facts = {
        "precision": precision,
        "max_seq_length": None if length is None else int(length),
        "device": str(model.device),
    }
    wire.send(("ready", facts))
    import torch

    applied = 0
    while True:
        try:
            pairs, threads = cast(tuple[list[tuple[str, str]], int], wire.receive())
        except (EOFError, OSError):  # the parent is gone
            return
        if threads and threads != applied:
            torch.set_num_threads(threads)
            applied = threads
        try:
            reply: tuple[str, Any] = ("ok", predict(pairs))
        except Exception as failure:  # one pass failed (bad input, a model error): report it, serve on
            reply = ("error", f"{spec.model_name_or_path} failed: {type(failure).__name__}: {failure}")
        wire.send(reply)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the parent went while we answered
        _serve(Wire(socket.socket(fileno=int(sys.argv[1]))))
