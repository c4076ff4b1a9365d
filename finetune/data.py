"""Training data: loading four file formats into one `Example`, validating, filtering, splitting.

Formats (detected from the file suffix and the keys of each record):
- CSV `question,answer[,category,difficulty]` in UTF-8 (with or without BOM) or CP949/EUC-KR;
- JSONL, one record per line: `instruction`/`input`/`output`, `messages`, or `prompt`/`response`;
- JSON `{"conversations": [{"prompt", "response"}, ...]}`, or a list of `{"messages": [...]}`.

A bad row is reported (file, line, field) and skipped; `strict=True` raises `DataError` instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CATEGORY = "general"
# What an adapter was trained to read (training_info.json "prompt_format"): the chain's
# evidence prompt (numbered passages + question, `chains.prompts.build_rag_messages`) or a
# bare question under a closed-book system prompt.
PROMPT_FORMAT_RAG = "rag-evidence"
PROMPT_FORMAT_CLOSED = "closed-book"
PROMPT_FORMAT_MIXED = "mixed"
ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "user": "user",
    "assistant": "assistant",
}


@dataclass
class Example:
    """One training conversation; the last message is the assistant answer that carries the loss."""

    messages: list[dict[str, str]]
    category: str = DEFAULT_CATEGORY
    difficulty: str | None = None
    source: str = ""  # "file:line" (or "request:item") for error messages

    @classmethod
    def from_pair(
        cls,
        question: str,
        answer: str,
        category: str | None = None,
        difficulty: str | None = None,
        source: str = "",
    ) -> Example:
        return cls(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            category or DEFAULT_CATEGORY,
            difficulty or None,
            source,
        )

    @property
    def question(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    @property
    def has_system(self) -> bool:
        return self.messages[0]["role"] == "system"

    @property
    def prompt_format(self) -> str:
        """rag-evidence when the question comes with numbered sources (the served RAG
        prompt: "Sources:\n[1] (...) ...\n\nQuestion: ..."), else closed-book."""
        last_user = self.question
        if last_user.startswith("Sources:\n") and "\nQuestion: " in last_user:
            return PROMPT_FORMAT_RAG
        return PROMPT_FORMAT_CLOSED


def prompt_format_of(examples: Iterable[Example]) -> str:
    """rag-evidence, closed-book, or mixed when a data set holds both."""
    formats = {example.prompt_format for example in examples}
    if len(formats) == 1:
        return formats.pop()
    return PROMPT_FORMAT_MIXED if formats else PROMPT_FORMAT_CLOSED


@dataclass(frozen=True)
class DataIssue:
    file: str
    line: int | None
    field: str
    message: str
    severity: str = (
        "error"  # error: the row is skipped | warning: the row is kept or was a duplicate
    )

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class DataError(ValueError):
    """Training data cannot be used; `issues` names every file:line:field at fault."""

    def __init__(self, problem: str | DataIssue | Sequence[DataIssue]):
        if isinstance(problem, str):
            self.issues: list[DataIssue] = []
            super().__init__(problem)
            return
        self.issues = [problem] if isinstance(problem, DataIssue) else list(problem)
        shown = [str(issue) for issue in self.issues[:20]]
        if len(self.issues) > len(shown):
            shown.append(f"... and {len(self.issues) - len(shown)} more")
        super().__init__("\n".join(shown))


@dataclass
class LoadResult:
    examples: list[Example]
    issues: list[DataIssue] = field(default_factory=list)
    path: str = ""
    sha256: str = ""

    @property
    def errors(self) -> list[DataIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[DataIssue]:
        return [i for i in self.issues if i.severity == "warning"]


# Reading -----------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """Decode UTF-8 (BOM or not), else CP949 (a superset of EUC-KR)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as utf8_error:
        try:
            return raw.decode("cp949")
        except UnicodeDecodeError:
            line = raw[: utf8_error.start].count(b"\n") + 1
            raise DataError(
                DataIssue(
                    str(path),
                    line,
                    "encoding",
                    "neither UTF-8 nor CP949/EUC-KR; re-save the file as UTF-8",
                )
            ) from utf8_error


def read_examples(path: str | Path, strict: bool = False) -> LoadResult:
    """Load every usable example of a file and report the rest; `strict` turns any issue into DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no such file. Give a CSV, JSONL or JSON file of question/answer pairs."
        )
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        examples, issues = _read_csv(text, str(path), delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".jsonl":
        examples, issues = _read_jsonl(text, str(path))
    elif suffix == ".json":
        examples, issues = _read_json(text, str(path))
    else:
        raise DataError(f"{path}: unknown format {suffix!r}. Use .csv, .jsonl or .json.")
    examples, duplicate_issues = _drop_duplicates(examples, str(path))
    issues = sorted(issues + duplicate_issues, key=lambda i: i.line or 0)
    result = LoadResult(examples, issues, str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    _report(result, strict)
    return result


def load_examples(path: str | Path, strict: bool = False) -> list[Example]:
    """The usable examples of a file (issues are logged; `strict` raises DataError on any)."""
    return read_examples(path, strict).examples


def examples_from_records(
    records: Iterable[dict[str, Any] | Example], source: str = "request", strict: bool = False
) -> LoadResult:
    """In-memory data (e.g. the API's `conversations`): dicts in any record layout, or Examples."""
    examples: list[Example] = []
    issues: list[DataIssue] = []
    for index, record in enumerate(records, start=1):
        if isinstance(record, Example):
            examples.append(record)
            continue
        example, record_issues = _from_record(record, source, index)
        issues += record_issues
        if example is not None:
            examples.append(example)
    examples, duplicate_issues = _drop_duplicates(examples, source)
    issues += duplicate_issues
    digest = hashlib.sha256(
        json.dumps([e.messages for e in examples], ensure_ascii=False).encode()
    ).hexdigest()
    result = LoadResult(examples, issues, source, digest)
    _report(result, strict)
    return result


def _report(result: LoadResult, strict: bool) -> None:
    if strict and result.issues:
        raise DataError(result.issues)
    for issue in result.issues[:50]:
        log.warning("%s%s", issue, " (row skipped)" if issue.severity == "error" else "")
    if len(result.issues) > 50:
        log.warning("... and %d more data issues", len(result.issues) - 50)
    if not result.examples:
        raise DataError(
            result.issues or [DataIssue(result.path, None, "rows", "no examples in the file")]
        )


# CSV ---------------------------------------------------------------------------------------

CSV_REQUIRED = ("question", "answer")


def _read_csv(text: str, name: str, delimiter: str = ",") -> tuple[list[Example], list[DataIssue]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(DataIssue(name, 1, "header", "the file is empty")) from None
    columns = [c.strip().lower() for c in header]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise DataError(
            DataIssue(
                name,
                1,
                "header",
                f"missing column(s) {', '.join(missing)}; the header must be "
                "question,answer,category,difficulty (category and difficulty optional)",
            )
        )
    index = {
        c: columns.index(c)
        for c in ("question", "answer", "category", "difficulty")
        if c in columns
    }
    examples: list[Example] = []
    issues: list[DataIssue] = []
    line = reader.line_num + 1  # physical line where the next record starts
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            issues.append(DataIssue(name, line, "row", f"malformed CSV ({error})"))
            break
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            issues.append(
                DataIssue(
                    name,
                    start,
                    "row",
                    f"{len(row)} fields, the header has {len(columns)} (unquoted comma?)",
                )
            )
            continue
        values = {key: row[i].strip() for key, i in index.items()}
        example, row_issues = _pair(values, name, start)
        issues += row_issues
        if example is not None:
            examples.append(example)
    return examples, issues


def _pair(
    values: dict[str, Any], name: str, line: int | None, prompt_key="question", answer_key="answer"
):
    issues = []
    for key in (prompt_key, answer_key):
        value = values.get(key)
        if not isinstance(value, str) or not value.strip():
            issues.append(
                DataIssue(
                    name, line, key, "empty" if value in (None, "") else f"not text: {value!r}"
                )
            )
    category, difficulty = _labels(values, name, line, issues)
    if any(i.severity == "error" for i in issues):
        return None, issues
    source = f"{name}:{line}" if line is not None else name
    return Example.from_pair(
        values[prompt_key].strip(), values[answer_key].strip(), category, difficulty, source
    ), issues


def _labels(values: dict[str, Any], name: str, line: int | None, issues: list[DataIssue]):
    labels = []
    for key in ("category", "difficulty"):
        value = values.get(key)
        if key in values and (value is None or str(value).strip() == ""):
            issues.append(DataIssue(name, line, key, "empty", "warning"))
        labels.append(str(value).strip().lower() if value not in (None, "") else None)
    return labels


# JSON and JSONL ----------------------------------------------------------------------------


def _read_jsonl(text: str, name: str) -> tuple[list[Example], list[DataIssue]]:
    examples, issues = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            issues.append(
                DataIssue(
                    name, line_number, "json", f"invalid JSON ({error.msg}, column {error.colno})"
                )
            )
            continue
        example, record_issues = _from_record(record, name, line_number)
        issues += record_issues
        if example is not None:
            examples.append(example)
    return examples, issues


def _read_json(text: str, name: str) -> tuple[list[Example], list[DataIssue]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            DataIssue(
                name, error.lineno, "json", f"invalid JSON ({error.msg}, column {error.colno})"
            )
        ) from None
    if isinstance(document, list):
        key, items = None, document
    elif isinstance(document, dict):
        key = next(
            (k for k in ("conversations", "data", "examples") if isinstance(document.get(k), list)),
            None,
        )
        if key is None and "messages" in document:
            key, items = None, [document]
        elif key is None:
            raise DataError(
                DataIssue(
                    name,
                    1,
                    "conversations",
                    'expected {"conversations": [{"prompt": ..., "response": ...}]} '
                    'or a list of {"messages": [...]}',
                )
            )
        else:
            items = document[key]
    else:
        raise DataError(DataIssue(name, 1, "json", "expected an object or a list"))
    lines = _item_lines(text, key, len(items))
    examples, issues = [], []
    for item, line in zip(items, lines, strict=True):
        example, record_issues = _from_record(item, name, line)
        issues += record_issues
        if example is not None:
            examples.append(example)
    return examples, issues


def _item_lines(text: str, key: str | None, count: int) -> list[int | None]:
    """The line on which each item of the list (top level, or under `key`) starts."""
    if key is None:
        match = re.search(r"\[", text)
    else:
        match = re.search(r'"' + re.escape(key) + r'"\s*:\s*\[', text)
    if match is None:
        return [None] * count
    decoder = json.JSONDecoder()
    position = match.end() if key is not None else match.start() + 1
    lines: list[int | None] = []
    for _ in range(count):
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        lines.append(text.count("\n", 0, position) + 1)
        try:
            _, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return lines + [None] * (count - len(lines))
    return lines


def _from_record(
    record: Any, name: str, line: int | None
) -> tuple[Example | None, list[DataIssue]]:
    """One record in any supported layout (the layout is recognised by its keys)."""
    if not isinstance(record, dict):
        return None, [
            DataIssue(name, line, "record", f"expected an object, got {type(record).__name__}")
        ]
    if (
        "messages" in record
        or "conversations" in record
        and isinstance(record["conversations"], list)
    ):
        return _chat(record, name, line)
    if "instruction" in record or "output" in record:
        instruction = record.get("instruction")
        extra = record.get("input") or ""
        values = dict(record)
        if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
            values["instruction"] = f"{instruction.strip()}\n\n{extra.strip()}"
        return _pair(values, name, line, "instruction", "output")
    if "prompt" in record:
        answer_key = (
            "completion" if "completion" in record and "response" not in record else "response"
        )
        return _pair(record, name, line, "prompt", answer_key)
    if "question" in record or "answer" in record:
        return _pair(record, name, line, "question", "answer")
    return None, [
        DataIssue(
            name,
            line,
            "record",
            f"unrecognised keys {sorted(record)}; use question/answer, prompt/response, "
            "instruction/input/output or messages",
        )
    ]


def _chat(record: dict, name: str, line: int | None) -> tuple[Example | None, list[DataIssue]]:
    raw = record.get("messages", record.get("conversations"))
    issues: list[DataIssue] = []
    if not isinstance(raw, list) or not raw:
        return None, [
            DataIssue(name, line, "messages", "expected a non-empty list of {role, content}")
        ]
    messages = []
    for position, message in enumerate(raw):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            issues.append(DataIssue(name, line, where, "expected an object with role and content"))
            continue
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        role = _SHAREGPT_ROLES.get(str(role).lower()) if role is not None else None
        if role is None:
            issues.append(
                DataIssue(name, line, f"{where}.role", f"must be one of {', '.join(ROLES)}")
            )
        if not isinstance(content, str) or not content.strip():
            issues.append(DataIssue(name, line, f"{where}.content", "empty"))
        messages.append(
            {"role": role, "content": content.strip() if isinstance(content, str) else ""}
        )
    if not issues:
        if messages[-1]["role"] != "assistant":
            issues.append(
                DataIssue(name, line, "messages", "the last message must be the assistant's answer")
            )
        if not any(m["role"] == "user" for m in messages):
            issues.append(DataIssue(name, line, "messages", "no user message"))
        if any(m["role"] == "system" for m in messages[1:]):
            issues.append(DataIssue(name, line, "messages", "a system message may only come first"))
    category, difficulty = _labels(record, name, line, issues)
    if any(i.severity == "error" for i in issues):
        return None, issues
    source = f"{name}:{line}" if line is not None else name
    return Example(messages, category or DEFAULT_CATEGORY, difficulty, source), issues


# Duplicates --------------------------------------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _line_of(example: Example) -> int | None:
    tail = example.source.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _drop_duplicates(examples: list[Example], name: str) -> tuple[list[Example], list[DataIssue]]:
    """Exact duplicates are dropped; the same question with another answer is kept and reported."""
    seen_pairs: dict[tuple, Example] = {}
    seen_questions: dict[str, Example] = {}
    kept, issues = [], []
    for example in examples:
        prompt_key = tuple(_normal(m["content"]) for m in example.messages[:-1])
        pair_key = (*prompt_key, _normal(example.answer))
        if pair_key in seen_pairs:
            issues.append(
                DataIssue(
                    name,
                    _line_of(example),
                    "question",
                    f"duplicate of {seen_pairs[pair_key].source or 'an earlier row'}; skipped",
                    "warning",
                )
            )
            continue
        question_key = _normal(example.question)
        if question_key in seen_questions:
            issues.append(
                DataIssue(
                    name,
                    _line_of(example),
                    "question",
                    f"same question as {seen_questions[question_key].source} with another answer",
                    "warning",
                )
            )
        seen_pairs[pair_key] = example
        seen_questions.setdefault(question_key, example)
        kept.append(example)
    return kept, issues


# Preparation -------------------------------------------------------------------------------


def filter_examples(
    examples: Iterable[Example],
    categories: Sequence[str] | None = None,
    difficulties: Sequence[str] | None = None,
) -> list[Example]:
    wanted_categories = {c.lower() for c in categories} if categories else None
    wanted_difficulties = {d.lower() for d in difficulties} if difficulties else None
    kept = [
        e
        for e in examples
        if (wanted_categories is None or e.category.lower() in wanted_categories)
        and (wanted_difficulties is None or (e.difficulty or "").lower() in wanted_difficulties)
    ]
    if not kept:
        raise DataError(
            f"No examples left after filtering (categories={list(categories or [])}, "
            f"difficulties={list(difficulties or [])}). `python -m finetune data stats FILE` lists what the file has."
        )
    return kept


MIN_EXAMPLES_FOR_EVAL = 10


def split_examples(
    examples: Sequence[Example], eval_ratio: float = 0.1, seed: int = 42
) -> tuple[list[Example], list[Example]]:
    """Stratified by category, deterministic for a seed: each category gives round(n * ratio) to
    eval (at least one when it has three or more examples, none when fewer). Fewer than
    MIN_EXAMPLES_FOR_EVAL examples in all are too few to hold any out: everything trains."""
    if not 0 <= eval_ratio < 1:
        raise ValueError(f"eval_ratio must be in [0, 1), not {eval_ratio}")
    rng = random.Random(seed)
    if eval_ratio == 0 or len(examples) < MIN_EXAMPLES_FOR_EVAL:
        train = list(examples)
        rng.shuffle(train)
        return train, []
    by_category: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_category[example.category].append(example)
    train, evaluation = [], []
    for category in sorted(by_category):
        group = list(by_category[category])
        rng.shuffle(group)
        n_eval = 0
        if len(group) >= 3:
            n_eval = min(len(group) - 1, max(1, round(len(group) * eval_ratio)))
        evaluation += group[:n_eval]
        train += group[n_eval:]
    if not evaluation:
        evaluation.append(train.pop(rng.randrange(len(train))))
    rng.shuffle(train)
    return train, evaluation


DEFAULT_SYSTEM_PROMPT = (
    "You are an assistant for U.S. FCC regulations (47 CFR). Answer accurately and concisely, "
    "name the rule section when you know it, and say so when you are not sure."
)

DEFAULT_SYSTEM_PROMPTS: dict[str, str] = {
    "default": DEFAULT_SYSTEM_PROMPT,
    "definitions": DEFAULT_SYSTEM_PROMPT
    + " Topic: the definitions of 47 CFR Part 15 (§ 15.3) and related terms.",
    "equipment_authorization": DEFAULT_SYSTEM_PROMPT
    + " Topic: equipment authorization (certification, Supplier's Declaration of Conformity, "
    "test labs, TCBs, FCC IDs and grants).",
    "rf_exposure": DEFAULT_SYSTEM_PROMPT
    + " Topic: RF exposure (MPE and SAR limits, evaluation distances, KDB 447498 guidance).",
    "part15": DEFAULT_SYSTEM_PROMPT
    + " Topic: Part 15 radio frequency devices (intentional, unintentional and incidental radiators).",
    "unintentional_radiators": DEFAULT_SYSTEM_PROMPT
    + " Topic: Part 15 Subpart B unintentional radiators (digital devices, Class A/B limits).",
    "intentional_radiators": DEFAULT_SYSTEM_PROMPT
    + " Topic: Part 15 Subpart C intentional radiators (field strength limits, bands, spread spectrum).",
    "emissions": DEFAULT_SYSTEM_PROMPT
    + " Topic: radiated and conducted emission limits and how they are measured.",
    "labeling": DEFAULT_SYSTEM_PROMPT
    + " Topic: labelling and user-manual statements required by the FCC rules.",
    "licensing": DEFAULT_SYSTEM_PROMPT + " Topic: radio service licensing and spectrum rules.",
}
DEFAULT_SYSTEM_PROMPTS["labelling"] = DEFAULT_SYSTEM_PROMPTS["labeling"]
DEFAULT_SYSTEM_PROMPTS["part_15"] = DEFAULT_SYSTEM_PROMPTS["part15"]


def system_prompt_for(category: str | None, prompts: dict[str, str] | None = None) -> str:
    prompts = DEFAULT_SYSTEM_PROMPTS if prompts is None else prompts
    key = (category or "").strip().lower().replace(" ", "_").replace("-", "_")
    return prompts.get(key) or prompts.get("default") or DEFAULT_SYSTEM_PROMPT


def to_training_record(
    example: Example, system_prompts: dict[str, str] | None = None
) -> dict[str, list]:
    """TRL's conversational prompt-completion layout; a per-category system prompt unless one is given."""
    messages = example.messages
    if not example.has_system:
        messages = [
            {"role": "system", "content": system_prompt_for(example.category, system_prompts)},
            *messages,
        ]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def tokenize_record(
    tokenizer, record: dict[str, list], max_length: int | None = None
) -> dict[str, list[int]]:
    """input_ids and labels (-100 on the prompt) exactly as TRL 1.16's SFTTrainer prepares a
    conversational prompt-completion example with completion_only_loss (tests compare the two)."""
    prompt_ids = tokenizer.apply_chat_template(
        record["prompt"], tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    full_ids = tokenizer.apply_chat_template(
        record["prompt"] + record["completion"], tokenize=True, return_dict=True
    )["input_ids"]
    prompt_length = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        prompt_length += 1
    labels = [-100] * prompt_length + list(full_ids[prompt_length:])
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return {"input_ids": list(full_ids), "labels": labels}


# Statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def length_summary(lengths: Sequence[int]) -> dict[str, int]:
    return {
        "p50": percentile(lengths, 50),
        "p90": percentile(lengths, 90),
        "p99": percentile(lengths, 99),
        "max": max(lengths, default=0),
    }


def dataset_stats(
    examples: Sequence[Example], tokenizer=None, system_prompts=None
) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "examples": len(examples),
        "by_category": dict(sorted(Counter(e.category for e in examples).items())),
        "by_difficulty": dict(sorted(Counter(e.difficulty or "(none)" for e in examples).items())),
    }
    if tokenizer is not None:
        tokenized = [
            tokenize_record(tokenizer, to_training_record(e, system_prompts)) for e in examples
        ]
        total = [len(t["input_ids"]) for t in tokenized]
        answer = [sum(1 for label in t["labels"] if label != -100) for t in tokenized]
        stats["tokens"] = {"total": length_summary(total), "answer": length_summary(answer)}
    return stats
