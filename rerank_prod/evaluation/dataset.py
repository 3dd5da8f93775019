"""BEIR-layout test collections: corpus, queries and graded qrels, read with clear errors.

Only a query's `text` is read. BEIR query files may carry other fields (SciFact's `metadata`
holds the evidence annotations, i.e. the answers); feeding them to a system would leak labels.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Qrels = dict[str, dict[str, int]]
"""query id -> {doc id: graded relevance}; relevance <= 0 means not relevant (trec_eval's rule)."""


class EvalInputError(ValueError):
    """A dataset, run file or configuration the evaluation cannot use; the message says why."""


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    text: str

    @property
    def passage(self) -> str:
        """What both BM25 and the re-ranker see: title and body, the BEIR convention."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True)
class BeirDataset:
    """A loaded collection; `qrels` is one split and decides which queries are evaluated."""

    path: Path
    split: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels

    @property
    def query_ids(self) -> list[str]:
        """Judged queries, in qrels file order."""
        return list(self.qrels)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise EvalInputError(f"{path} not found (BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("_id"), (str, int)):
                raise EvalInputError(f"{path}:{number}: each line must be an object with an '_id'")
            yield number, record


def _text_field(record: dict[str, Any], field: str, path: Path, number: int, required: bool) -> str:
    value = record.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise EvalInputError(f"{path}:{number}: '{field}' must be a string")
    return value


def load_corpus(path: Path) -> dict[str, Document]:
    corpus = {}
    for number, record in _json_lines(path):
        corpus[str(record["_id"])] = Document(
            _text_field(record, "title", path, number, required=False),
            _text_field(record, "text", path, number, required=True),
        )
    if not corpus:
        raise EvalInputError(f"{path} holds no documents")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    return {
        str(record["_id"]): _text_field(record, "text", path, number, required=True)
        for number, record in _json_lines(path)
    }


def load_qrels(path: Path) -> Qrels:
    """BEIR qrels TSV: a header row, then query-id, corpus-id, score."""
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise EvalInputError(f"{path} not found; splits available: {', '.join(available) or 'none'}")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as rows:
        for number, row in enumerate(csv.reader(rows, delimiter="\t"), 1):
            if number == 1 or not row:
                continue
            if len(row) != 3:
                raise EvalInputError(f"{path}:{number}: expected query-id, corpus-id, score; got {row!r}")
            try:
                relevance = int(row[2])
            except ValueError:
                raise EvalInputError(f"{path}:{number}: score must be an integer, got {row[2]!r}") from None
            qrels.setdefault(row[0], {})[row[1]] = relevance
    if not qrels:
        raise EvalInputError(f"{path} holds no judgments")
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR directory; every judged query must have a text."""
    root = Path(path)
    if not root.is_dir():
        raise EvalInputError(f"dataset directory {root} not found")
    qrels = load_qrels(root / "qrels" / f"{split}.tsv")
    queries = load_queries(root / "queries.jsonl")
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise EvalInputError(f"{len(missing)} judged queries are not in queries.jsonl (e.g. {missing[0]!r})")
    return BeirDataset(root, split, load_corpus(root / "corpus.jsonl"), queries, qrels)
