"""Gold data: questions with their sections and key facts, and summary references (JSONL)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.schema import EvaluationError

# Gold data ---------------------------------------------------------------------------------


@dataclass
class GoldItem:
    id: str
    question: str
    sections: list[str]
    facts: list[str]
    answerable: bool
    reference: str | None = None
    line: int = 0
    # A named group reported on its own, e.g. "colloquial" or "on_topic_unanswerable".
    slice: str | None = None


@dataclass
class SummaryItem:
    id: str
    source: str
    reference: str
    facts: list[str]
    line: int = 0


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, error) for every non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvaluationError(f"Cannot read {path}: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as error:
            yield number, None, f"not valid JSON ({error.msg} at column {error.colno})"


def _string_list(record: dict, key: str, problems: list[str]) -> list[str]:
    value = record.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"'{key}' must be a list of non-empty strings")
        return []
    return [v.strip() for v in value]


def _required_string(record: dict, key: str, problems: list[str]) -> str:
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "id":
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"'{key}' must be a non-empty string")
        return ""
    return value.strip()


def load_gold(path: Path | str) -> tuple[list[GoldItem], list[str]]:
    """Read and validate a gold JSONL file: the valid items and one message per bad line."""
    path = Path(path)
    items: list[GoldItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, record, error in _read_jsonl(path):
        where = f"{path}:{number}"
        if error or not isinstance(record, dict):
            problems.append(f"{where}: {error or 'each line must be a JSON object'}")
            continue
        found: list[str] = []
        item_id = _required_string(record, "id", found)
        question = _required_string(record, "question", found)
        sections = _string_list(record, "sections", found)
        facts = _string_list(record, "facts", found)
        answerable = record.get("answerable", True)
        if not isinstance(answerable, bool):
            found.append("'answerable' must be true or false")
        reference = record.get("reference")
        if reference is not None and not isinstance(reference, str):
            found.append("'reference' must be a string")
        slice_name = record.get("slice")
        if slice_name is not None and not (isinstance(slice_name, str) and slice_name.strip()):
            found.append("'slice' must be a non-empty string")
        if answerable is True and not sections and not found:
            found.append("an answerable item needs at least one gold section")
        if item_id in seen:
            found.append(f"duplicate id {item_id!r} (first on line {seen[item_id]})")
        if found:
            problems.extend(f"{where}: {message}" for message in found)
            continue
        seen[item_id] = number
        items.append(
            GoldItem(
                item_id,
                question,
                sections,
                facts,
                answerable,
                reference or None,
                number,
                slice_name.strip() if slice_name else None,
            )
        )
    return items, problems


def load_summaries(path: Path | str) -> tuple[list[SummaryItem], list[str]]:
    path = Path(path)
    items: list[SummaryItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, record, error in _read_jsonl(path):
        where = f"{path}:{number}"
        if error or not isinstance(record, dict):
            problems.append(f"{where}: {error or 'each line must be a JSON object'}")
            continue
        found: list[str] = []
        item_id = _required_string(record, "id", found)
        source = _required_string(record, "source", found)
        reference = _required_string(record, "reference", found)
        facts = _string_list(record, "facts", found)
        if item_id in seen:
            found.append(f"duplicate id {item_id!r}")
        if found:
            problems.extend(f"{where}: {message}" for message in found)
            continue
        seen.add(item_id)
        items.append(SummaryItem(item_id, source, reference, facts, number))
    return items, problems


def subsample(items: Sequence[GoldItem], limit: int | None) -> list[GoldItem]:
    """At most `limit` items, the same ones every run (ordered by a hash of the id), keeping
    the share of unanswerable items; returned in file order."""
    if limit is None or limit >= len(items):
        return list(items)
    ranked = sorted(items, key=lambda item: hashlib.sha256(item.id.encode()).hexdigest())
    unanswerable = [item for item in ranked if not item.answerable]
    answerable = [item for item in ranked if item.answerable]
    n_unanswerable = min(len(unanswerable), round(limit * len(unanswerable) / len(items)))
    if unanswerable and limit >= 2 and n_unanswerable == 0:
        n_unanswerable = 1
    chosen = {
        item.id for item in answerable[: limit - n_unanswerable] + unanswerable[:n_unanswerable]
    }
    return [item for item in items if item.id in chosen]
