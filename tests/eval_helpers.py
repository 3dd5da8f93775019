"""A tiny BEIR collection for fast tests of the evaluation toolkit."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = {
    "d1": ("Aspirin", "aspirin lowers colorectal cancer risk in cohort studies"),
    "d2": ("Statins", "statins lower cholesterol"),
    "d3": ("Markets", "stock markets rose on friday"),
    "d4": ("Cancer screening", "colorectal cancer screening saves lives"),
    "d5": ("Sleep", "sleep deprivation impairs memory"),
    "d6": ("Memory", "memory consolidation happens during sleep"),
}
QUERIES = {
    "q1": "aspirin reduces colorectal cancer risk",
    "q2": "sleep helps memory",
    "q3": "cholesterol drugs",
}
QRELS = [("q1", "d1", 1), ("q2", "d6", 2), ("q2", "d5", 1), ("q3", "d2", 1)]


def make_beir(root: Path) -> Path:
    """Writes a BEIR directory whose query metadata holds the answers (it must never be read)."""
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as out:
        for docid, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": docid, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as out:
        for qid, text in QUERIES.items():
            answers = {docid: rel for q, docid, rel in QRELS if q == qid}
            out.write(json.dumps({"_id": qid, "text": text, "metadata": answers}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root
