"""Answers and the 👍/👎 feedback on them, in SQLite, exported as a fine-tuning dataset.

Every answer the chat or the API gives is recorded with its question and sources under
an id (the Chainlit message id, or the `id` of an `/api/chat` response). Feedback
refers to that id: a rating (1 = 👍, 0 = 👎) and an optional correction.

    python -m services.feedback export --out feedback.jsonl [--all]
    python -m services.feedback stats

Each answer is stored with the exact chat messages the model saw (the chain's prompt:
system rule, worked example, numbered evidence passages and the question; `RagResult.messages`),
so the export trains on the served format: `messages` = those messages + the answer (or the
correction where one was given), `prompt_format` "rag-evidence". Answers recorded without
messages (no model call, or recorded before messages were kept) export closed-book: user
question + answer, `prompt_format` "closed-book". `python -m finetune train --data` reads
both; `--prompt-format rag-evidence` exports only the first kind.
By default only rows with a good target are exported: 👍 answers and any corrected one.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.settings import get_settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    channel TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,
    model_info TEXT NOT NULL,
    messages TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    answer_id TEXT NOT NULL UNIQUE,
    rating INTEGER NOT NULL,
    correction TEXT,
    updated_at TEXT NOT NULL
);
"""


# The values of `prompt_format` (as finetune.data and training_info.json spell them).
PROMPT_FORMAT_RAG = "rag-evidence"
PROMPT_FORMAT_CLOSED = "closed-book"


class UnknownAnswerError(KeyError):
    """Feedback was given for an answer id the store has never seen."""


@dataclass
class FeedbackRow:
    answer_id: str
    question: str
    answer: str
    sources: list[dict]
    rating: int | None
    correction: str | None
    created_at: str
    channel: str
    messages: list[dict] | None = None  # the prompt the model saw (None: not recorded)

    @property
    def target(self) -> str:
        return (
            self.correction.strip() if self.correction and self.correction.strip() else self.answer
        )

    @property
    def trainable(self) -> bool:
        return bool(self.correction and self.correction.strip()) or self.rating == 1

    @property
    def prompt_format(self) -> str:
        return PROMPT_FORMAT_RAG if self.messages else PROMPT_FORMAT_CLOSED

    def to_example(self) -> dict:
        if self.messages:  # the served prompt, exactly, then the answer to learn
            last = self.messages[-1].get("role")
            prompt = self.messages[:-1] if last == "assistant" else list(self.messages)
            messages = [*prompt, {"role": "assistant", "content": self.target}]
        else:
            messages = [
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": self.target},
            ]
        return {
            "messages": messages,
            "prompt_format": self.prompt_format,
            "question": self.question,
            "answer": self.answer,
            "correction": self.correction or None,
            "rating": self.rating,
            "sources": self.sources,
            "answer_id": self.answer_id,
            "created_at": self.created_at,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FeedbackStore:
    """Thread-safe: one short-lived connection per call."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else get_settings().feedback_db
        self._lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10)
            try:
                if not self._ready:
                    connection.executescript(_SCHEMA)
                    columns = {row[1] for row in connection.execute("PRAGMA table_info(answers)")}
                    if "messages" not in columns:  # a database from before messages were kept
                        connection.execute("ALTER TABLE answers ADD COLUMN messages TEXT")
                    self._ready = True
                with connection:
                    yield connection
            finally:
                connection.close()

    def record_answer(
        self,
        question: str,
        answer: str,
        sources: list[dict],
        model_info: dict | None = None,
        answer_id: str | None = None,
        channel: str = "chat",
        messages: list[dict] | None = None,
    ) -> str:
        """Keep an answer; `messages` are the chat messages the model saw (RagResult.messages)."""
        answer_id = answer_id or uuid.uuid4().hex
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO answers (id, created_at, channel, question, answer, "
                "sources, model_info, messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    answer_id,
                    _now(),
                    channel,
                    question,
                    answer,
                    json.dumps(sources, ensure_ascii=False),
                    json.dumps(model_info or {}, ensure_ascii=False),
                    json.dumps(messages, ensure_ascii=False) if messages else None,
                ),
            )
        return answer_id

    def rate(
        self,
        answer_id: str,
        rating: int,
        correction: str | None = None,
        feedback_id: str | None = None,
    ) -> str:
        """Set (or replace) the feedback on an answer; return the feedback id."""
        if rating not in (0, 1):
            raise ValueError("rating must be 1 (👍) or 0 (👎)")
        with self._connect() as db:
            if db.execute("SELECT 1 FROM answers WHERE id = ?", (answer_id,)).fetchone() is None:
                raise UnknownAnswerError(answer_id)
            row = db.execute("SELECT id FROM feedback WHERE answer_id = ?", (answer_id,)).fetchone()
            feedback_id = row[0] if row else feedback_id or uuid.uuid4().hex
            db.execute(
                "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?, ?)",
                (feedback_id, answer_id, rating, (correction or "").strip() or None, _now()),
            )
        return feedback_id

    def delete_feedback(self, feedback_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM feedback WHERE id = ?", (feedback_id,)).rowcount > 0

    def rows(self, rated_only: bool = True) -> list[FeedbackRow]:
        join = "JOIN" if rated_only else "LEFT JOIN"
        with self._connect() as db:
            cursor = db.execute(
                "SELECT a.id, a.question, a.answer, a.sources, f.rating, f.correction, "
                "a.created_at, a.channel, a.messages "
                f"FROM answers a {join} feedback f ON f.answer_id = a.id "
                "ORDER BY a.created_at, a.rowid"
            )
            return [
                FeedbackRow(
                    r[0],
                    r[1],
                    r[2],
                    json.loads(r[3]),
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    json.loads(r[8]) if r[8] else None,
                )
                for r in cursor.fetchall()
            ]

    def examples(self, include_all: bool = False, prompt_format: str | None = None) -> list[dict]:
        """Training records; `prompt_format` rag-evidence or closed-book keeps only that kind."""
        return [
            row.to_example()
            for row in self.rows()
            if (include_all or row.trainable)
            and (prompt_format in (None, "all") or row.prompt_format == prompt_format)
        ]

    def export(
        self, out: Path | str, include_all: bool = False, prompt_format: str | None = None
    ) -> int:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        examples = self.examples(include_all, prompt_format)
        with out.open("w", encoding="utf-8") as handle:
            for example in examples:
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
        return len(examples)

    def stats(self) -> dict:
        rows = self.rows(rated_only=False)
        return {
            "answers": len(rows),
            "rated": sum(r.rating is not None for r in rows),
            "thumbs_up": sum(r.rating == 1 for r in rows),
            "thumbs_down": sum(r.rating == 0 for r in rows),
            "corrected": sum(bool(r.correction) for r in rows),
            "trainable": sum(r.trainable for r in rows),
            "with_messages": sum(r.messages is not None for r in rows),
        }


_store: FeedbackStore | None = None
_store_lock = threading.Lock()


def get_feedback_store() -> FeedbackStore:
    """The process-wide store at settings.feedback_db."""
    global _store
    with _store_lock:
        if _store is None or _store.path != get_settings().feedback_db:
            _store = FeedbackStore()
        return _store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.feedback", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--db", type=Path, help="feedback database (default: settings.feedback_db)")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the fine-tuning dataset as JSONL")
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    export.add_argument(
        "--all", action="store_true", help="also rows without a good target (👎 without correction)"
    )
    export.add_argument(
        "--prompt-format",
        choices=["all", PROMPT_FORMAT_RAG, PROMPT_FORMAT_CLOSED],
        default="all",
        help="rag-evidence: only answers stored with the prompt the model saw (train RAG "
        "adapters on these); closed-book: only the others (default: all)",
    )
    commands.add_parser("stats", help="count answers and ratings")
    args = parser.parse_args(argv)
    store = FeedbackStore(args.db) if args.db else get_feedback_store()
    if not store.path.exists():
        print(
            f"error: no feedback database at {store.path} (rate some answers first)",
            file=sys.stderr,
        )
        return 1
    if args.command == "stats":
        print(json.dumps(store.stats(), indent=2))
        return 0
    count = store.export(args.out, include_all=args.all, prompt_format=args.prompt_format)
    print(f"Wrote {count} example(s) to {args.out}")
    if count == 0:
        print("Nothing to export yet: rate answers 👍, or 👎 with a correction.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
