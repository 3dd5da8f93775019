"""A cross-encoder in a model process of its own (`isolation="process"`): same scores, no torch in the
caller's process, and faults of the child (killed, hung, failing a pass, unloadable, orphaned) that
never hold a caller past its deadline and heal without the caller's help. Real model, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rerank_prod import CrossEncoderScorer, Reranker, SourceKind
from rerank_prod.deadline import Deadline
from rerank_prod.engine import ScoringEngine
from rerank_prod.errors import ScorerError, ScoringTimeout
from rerank_prod.scoring.cross_encoder_model import CrossEncoderSpec
from rerank_prod.scoring.model_process import ModelProcess

QUERY = "what lowers blood pressure"
TEXTS = ["Salt reduction lowers blood pressure in adults.", "The Eiffel tower is in Paris.", "Exercise helps."]
pytestmark = pytest.mark.needs_models


def _spec(path: str, **changes: object) -> CrossEncoderSpec:
    settings: dict = {
        "model_name_or_path": path,
        "device": "cpu",
        "batch_size": 32,
        "max_length": None,
        "activation": "default",
        "precision": "fp32",
        "trust_remote_code": False,
    }
    return CrossEncoderSpec(**{**settings, **changes})


def _gone(pid: int) -> bool:
    """The process has exited and been reaped (or is a zombie of a reaper that is not us)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _wait_until(condition, limit_s: float) -> bool:
    stop_at = time.monotonic() + limit_s
    while time.monotonic() < stop_at:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_isolation_is_checked() -> None:
    with pytest.raises(ValueError, match="isolation must be one of"):
        CrossEncoderScorer("any", isolation="fork")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("executable", "system", "frozen", "expected"),
    [
        ("/venv/bin/python3.11", "posix", False, True),
        ("/usr/bin/pypy3", "posix", False, True),
        ("/usr/local/bin/uwsgi", "posix", False, False),  # an embedded interpreter: not a Python to run -m with
        ("", "posix", False, False),
        ("/app/server", "posix", True, False),  # a frozen app
        ("C:/Python311/python.exe", "nt", False, False),  # no socket to inherit
    ],
)
def test_auto_isolation_runs_a_model_process_only_where_one_can_run(
    monkeypatch: pytest.MonkeyPatch, executable: str, system: str, frozen: bool, expected: bool
) -> None:
    from rerank_prod.scoring import cross_encoder

    monkeypatch.setattr(sys, "executable", executable)
    monkeypatch.setattr(sys, "frozen", frozen, raising=False)
    monkeypatch.setattr(cross_encoder.os, "name", system)
    assert cross_encoder._can_run_a_model_process() is expected


def test_auto_isolation_computes_here_when_the_child_cannot_start(
    cross_encoder_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "python3"  # looks like a Python, dies at once
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    with pytest.raises(ScorerError, match="ended while loading it"):  # asked for a process: told why not
        CrossEncoderScorer(cross_encoder_path, precision="fp32", batch_size=26, isolation="process")
    scorer = CrossEncoderScorer(cross_encoder_path, precision="fp32", batch_size=27)  # a setting of its own
    assert scorer.isolation == "thread" and scorer.model_process is None
    assert "computing in this process instead" in caplog.text and "exit code 3" in caplog.text
    monkeypatch.undo()
    here = CrossEncoderScorer(cross_encoder_path, precision="fp32", isolation="thread")
    assert scorer.score(QUERY, TEXTS) == here.score(QUERY, TEXTS)


def test_the_default_is_a_model_process_on_linux(cross_encoder: CrossEncoderScorer) -> None:
    assert cross_encoder.isolation == "process" and cross_encoder.model_process is not None
    assert cross_encoder.model_process.pid != os.getpid()


def test_scores_match_the_thread_scorer_and_the_caller_never_imports_torch(cross_encoder_path: str) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from rerank_prod import CrossEncoderScorer
        scorer = CrossEncoderScorer({cross_encoder_path!r}, precision="fp32", isolation="process")
        scores = scorer.score({QUERY!r}, {TEXTS!r})
        print(json.dumps({{"scores": scores, "identity": scorer.identity, "precision": scorer.precision,
                          "heavy": sorted({{"torch", "transformers", "sentence_transformers"}} & set(sys.modules))}}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    here = CrossEncoderScorer(cross_encoder_path, precision="fp32", isolation="thread")
    assert report["heavy"] == []
    assert report["precision"] == "fp32"
    assert report["identity"] == here.identity  # same scores: caches of both isolations mix freely
    assert report["scores"] == pytest.approx(here.score(QUERY, TEXTS), abs=1e-6)


def test_a_killed_model_process_fails_callers_over_at_once_and_is_replaced(
    cross_encoder_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = CrossEncoderScorer(cross_encoder_path, precision="fp32", batch_size=31, isolation="process")
    reranker = Reranker(scorer, timeout_s=5.0)
    assert reranker.rerank(QUERY, TEXTS).source.kind is SourceKind.MODEL
    process = scorer.model_process
    assert process is not None and process.pid is not None
    killed = process.pid
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    result = reranker.rerank(QUERY, TEXTS)
    assert result.source.kind is SourceKind.FALLBACK
    assert result.source.detail == "retriever order: error ScorerError"
    assert "model process of" in caplog.text and "ended (killed by signal 9); starting another" in caplog.text
    assert time.monotonic() - started < 2.0  # not the 5 s budget: the dead child is seen at once
    assert _gone(killed)  # reaped, no zombie
    assert _wait_until(lambda: reranker.rerank(QUERY, TEXTS).source.kind is SourceKind.MODEL, 180.0)
    assert process.restarts == 1 and process.pid not in (None, killed)
    scorer.engine.close()
    assert _gone(process.pid or killed)


def test_a_hung_model_process_holds_no_caller_past_its_deadline_and_is_replaced(cross_encoder_path: str) -> None:
    process = ModelProcess(_spec(cross_encoder_path, batch_size=30), pass_timeout_s=2.0)
    engine = ScoringEngine(process, name="hung", workers=1, on_close=process.close)
    try:
        for _ in range(5):  # the engine's service-time estimate settles: the passes below are handed out
            assert len(engine.score(QUERY, TEXTS)) == 3
        hung = process.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive, holding its socket, answering nothing
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises((ScoringTimeout, ScorerError)):
                engine.score(QUERY, TEXTS, Deadline.after(1.0))
            assert time.monotonic() - started < 1.0 + 0.15
        assert _wait_until(lambda: process.restarts == 1, 180.0)  # killed after pass_timeout_s, replaced
        assert _gone(hung)
        assert len(engine.score(QUERY, TEXTS, Deadline.after(5.0))) == 3
    finally:
        engine.close()


def test_a_pass_that_fails_in_the_child_leaves_it_serving_and_close_stops_it(cross_encoder_path: str) -> None:
    process = ModelProcess(_spec(cross_encoder_path, batch_size=29))
    pid = process.pid
    assert pid is not None
    with pytest.raises(ScorerError, match="failed: "):
        process([(QUERY, None)])  # type: ignore[list-item]
    assert len(process([(QUERY, text) for text in TEXTS])) == 3
    assert process.pid == pid and process.restarts == 0
    process.close()
    assert _gone(pid)
    with pytest.raises(ScorerError, match="closed"):
        process([(QUERY, TEXTS[0])])


def test_a_model_that_cannot_load_fails_construction_with_the_childs_reason(tmp_path: Path) -> None:
    with pytest.raises(ScorerError, match="could not load it: .*no-such-model"):
        ModelProcess(_spec(str(tmp_path / "no-such-model")))


def test_a_caller_process_that_dies_leaves_no_model_process_behind(cross_encoder_path: str) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from rerank_prod import CrossEncoderScorer
        scorer = CrossEncoderScorer({cross_encoder_path!r}, precision="fp32", isolation="process")
        print(scorer.model_process.pid, flush=True)
        os._exit(0)  # no atexit, no close: as if killed
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    orphan = int(run.stdout.strip().splitlines()[-1])
    assert _wait_until(lambda: _gone(orphan), 30.0)


@pytest.mark.filterwarnings("ignore:rerank-prod has not re-ranked once")  # a cold storm's first calls may all fall back
def test_sixteen_threads_get_answers_by_their_deadline(cross_encoder_path: str) -> None:
    """A bounded storm: every call returns by its budget (with slack for a shared CI machine and this
    process's garbage collector: the timing target lives in `rerank-prod bench --load`), and the
    model answers some while 16 threads keep calling."""
    scorer = CrossEncoderScorer(cross_encoder_path, batch_size=28, isolation="process")
    reranker = Reranker(scorer, timeout_s=0.3)
    latencies: list[float] = []
    kinds: list[SourceKind] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 3.0

    def caller() -> None:
        calls = 0
        while time.monotonic() < stop_at and calls < 5000:
            result = reranker.rerank(QUERY, TEXTS * 5)
            calls += 1
            with lock:
                latencies.append(result.latency_s)
                kinds.append(result.source.kind)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    scorer.engine.close()
    assert max(latencies) < 0.3 + 0.5
    assert kinds.count(SourceKind.MODEL) + kinds.count(SourceKind.PARTIAL) > 0


def test_a_pass_larger_than_the_socket_buffer_to_a_hung_child_is_bounded_too(cross_encoder_path: str) -> None:
    """The send itself is bounded: a pass of long passages does not fit the socket's buffer, and a
    child that reads nothing would otherwise hold the engine's worker before any answer timeout."""
    process = ModelProcess(_spec(cross_encoder_path, batch_size=27), pass_timeout_s=1.0)
    try:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(ScorerError, match=r"did not answer within 1s \(hung\)"):
            process([(QUERY, "passage " * 250_000)] * 4)  # ~8 MB
        assert time.monotonic() - started < 1.0 + 1.0
    finally:
        process.close()
