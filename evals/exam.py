"""Exam-style multiple-choice items, and whether an answer text picks the right choice.

An exam item (data/eval/ecfr_exam.jsonl, one JSON object a line)::

    {"id": "x001", "question": "...", "choices": ["...", "...", "...", "..."], "answer": 2,
     "sections": ["97.313"], "paragraph": "(j)", "answerable": true}

The chain is asked the stem alone (as a user would ask it), never the choices. Its answer is
**answered right** when it supports the correct choice more than every distractor:

- a choice's *distinctive words* are its content tokens that occur in no other choice;
- its *support* is the share of its distinctive words present in the answer text;
- right iff the correct choice's support is strictly greater than every distractor's
  (ties count wrong, 0 = 0 included: an answer that names none of the choices is wrong).

Content tokens (`content_tokens`): the text after `evals.metrics.normalize_text` (lowercase,
number words as digits, canonical unit spellings), without paragraph markers "(b)(1)",
section pinpoints "§ 97.313(b)", citation markers and the weak-match note; stopwords and
single letters dropped; plurals lightly stemmed ("persons" = "person"). A number with a unit
is ONE token holding its value in base units (`chains.quantities.extract_quantities`), so
"1.5 kW" = "1500 W" and "ten seconds" = "10 s"; it is also found when the answer writes the
same range written without a unit (tables give the unit in their header: a choice
"144-148 MHz" is found in the row "2 m | 144-146 | 144-148 |").
Choices such as "all of these" or "both A and B" cannot be scored this way (the data check
refuses them).

Baselines scored with the same metric, over the same collection:

- `bm25_top3`: every evidence passage of the collection (`chains.evidence.split_passages`,
  deduplicated), ranked by a plain Okapi BM25 (k1 1.2, b 0.75, `core.store.keyword_tokens`
  over the passage's heading and quote) against the stem; the top 3 quotes joined are the
  "answer";
- `section_text`: all chunks of the item's section joined, a ceiling (an item it cannot get
  right has a correct choice whose distinctive words are not in the rule text, or
  distractors that the rule text supports as much: values of neighbouring paragraphs);
- `paragraph_text`: the passages of the item's cited paragraph (and its subparagraphs), the
  evidence an ideal retriever would quote.

Check a file: ``python -m evals.exam check data/eval/ecfr_exam.jsonl --corpus DIR ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from evals import metrics
from evals.schema import EvaluationError

CHOICES = 4
BM25_TOP = 3
BM25_K1 = 1.2
BM25_B = 0.75
BASELINES = ("bm25_top3", "section_text", "paragraph_text")
# Choices the word metric cannot score (they name other choices, not a fact).
_UNSCORABLE_CHOICE = re.compile(
    r"\b(?:all|none|both|neither) of (?:these|them|those)\b|\bboth [a-d] and [a-d]\b"
    r"|\b(?:all|none|both|neither) of the above\b",
    re.IGNORECASE,
)

# Items -------------------------------------------------------------------------------------


@dataclass
class ExamItem:
    id: str
    question: str
    choices: list[str]
    answer: int
    sections: list[str]
    paragraph: str | None = None
    answerable: bool = True
    line: int = 0

    @property
    def correct(self) -> str:
        return self.choices[self.answer]


def _check_record(record: Any) -> list[str]:
    if not isinstance(record, dict):
        return ["each line must be a JSON object"]
    found = []
    for key in ("id", "question"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            found.append(f"'{key}' must be a non-empty string")
    choices = record.get("choices")
    if not (
        isinstance(choices, list)
        and len(choices) == CHOICES
        and all(isinstance(c, str) and c.strip() for c in choices)
    ):
        found.append(f"'choices' must be a list of {CHOICES} non-empty strings")
    else:
        if len({" ".join(c.lower().split()) for c in choices}) < CHOICES:
            found.append("the choices must be distinct")
        found += [
            f"choice {c!r} cannot be scored by words"
            for c in choices
            if _UNSCORABLE_CHOICE.search(c)
        ]
    answer = record.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < CHOICES:
        found.append(f"'answer' must be the index of the correct choice (0-{CHOICES - 1})")
    elif not found and not distinctive_tokens(choices)[answer][0]:
        # "Only from a fixed location" beside "From any fixed, portable or mobile location":
        # every word of it is in another choice, so no answer can support it more.
        found.append("the correct choice has no word that the other choices lack: reword one")
    sections = record.get("sections")
    if not (
        isinstance(sections, list)
        and sections
        and all(isinstance(s, str) and s.strip() for s in sections)
    ):
        found.append("'sections' must be a non-empty list of section ids")
    paragraph = record.get("paragraph")
    if paragraph is not None and not (isinstance(paragraph, str) and paragraph.strip()):
        found.append("'paragraph' must be a string like \"(b)(1)\" or null")
    if not isinstance(record.get("answerable", True), bool):
        found.append("'answerable' must be true or false")
    return found


def load_exam(path: Path | str) -> tuple[list[ExamItem], list[str]]:
    """Read and validate an exam JSONL file: the valid items and one message per problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvaluationError(f"Cannot read {path}: {error}") from error
    items: list[ExamItem] = []
    problems: list[str] = []
    ids: dict[str, int] = {}
    questions: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{where}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        found = _check_record(record)
        if not found:
            key = " ".join(record["question"].lower().split())
            if record["id"] in ids:
                found.append(f"duplicate id {record['id']!r} (first on line {ids[record['id']]})")
            if key in questions:
                found.append(f"duplicate question (first on line {questions[key]})")
        if found:
            problems += [f"{where}: {message}" for message in found]
            continue
        ids[record["id"]] = questions[key] = number
        items.append(
            ExamItem(
                record["id"].strip(),
                record["question"].strip(),
                [c.strip() for c in record["choices"]],
                record["answer"],
                [s.strip() for s in record["sections"]],
                record.get("paragraph"),
                record.get("answerable", True),
                number,
            )
        )
    return items, problems


# The metric --------------------------------------------------------------------------------

STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were which with what when where who whom whose how does do can may must shall any all "
    "each not no than then there these those such i me my we our you your he she they them "
    "their if so about into also been being did done will would should could least per via "
    "s".split()
)
_PINPOINT = re.compile(r"§§?\s*\d+\.\d+[a-z]?(?:\([^()\s]{1,6}\))*")
_PARAGRAPH_MARKER = re.compile(r"\((?:[a-z]{1,2}|[ivxl]{1,5}|\d{1,2}|[A-Z])\)")
_SOURCE_NOTE = re.compile(r"\[[^\[\]]*\bFR\b[^\[\]]*\]")
_HYPHENATED = re.compile(r"(\d)-(?=[A-Za-z])")  # "a 10-year term" = "10 years"
_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b")


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _value(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _words(text: str) -> list[str]:
    words = []
    for word in metrics.normalize_text(text).split():
        if word in STOPWORDS or (len(word) == 1 and word.isalpha()):
            continue
        words.append(_stem(word) if word.isalpha() else word)
    return words


@dataclass
class Tokens:
    """A text's content tokens; `bare` holds its numbers written without a unit, and `raw`
    the number each quantity token was written with (for a unit-less match)."""

    words: set[str] = field(default_factory=set)
    bare: set[float] = field(default_factory=set)
    raw: dict[str, set[float]] = field(default_factory=dict)

    def has(self, token: str) -> bool:
        if token in self.words:
            return True
        return any(math.isclose(r, b) for r in self.raw.get(token, ()) for b in self.bare)


def clean_answer(text: str | None) -> str:
    """The answer as scored: no weak-match note, citation markers, pinpoints, or Federal
    Register source notes ("[54 FR 25857, June 20, 1989]": dates, not rule text)."""
    text = metrics.without_notes(text or "") or ""
    text = _SOURCE_NOTE.sub(" ", metrics.strip_citations(text))
    return _PINPOINT.sub(" ", text)


def content_tokens(text: str | None) -> Tokens:
    """Content tokens of a choice or an answer (module docstring)."""
    from chains.quantities import extract_quantities

    text = _HYPHENATED.sub(r"\1 ", _POSSESSIVE.sub("", clean_answer(text)))
    tokens = Tokens()
    spans: list[tuple[int, int]] = []
    quantities = extract_quantities(text)
    ranges = Counter(q.span for q in quantities if q.kind == "quantity")
    for quantity in quantities:
        if quantity.kind == "number":
            tokens.bare.add(quantity.raw)
        if quantity.kind != "quantity" or not quantity.unit:
            continue
        token = f"{_value(quantity.value)}{quantity.unit.lower()}"
        tokens.words.add(token)
        if ranges[quantity.span] > 1:  # "144-148 MHz": a table row may give "144-148"
            tokens.raw.setdefault(token, set()).add(quantity.raw)
        spans.append(quantity.span)
    rest, last = [], 0
    for start, end in sorted(set(spans)):
        if start >= last:
            rest.append(text[last:start])
            last = end
    rest.append(text[last:])
    tokens.words |= set(_words(_PARAGRAPH_MARKER.sub(" ", " ".join(rest))))
    return tokens


def distinctive_tokens(choices: Sequence[str]) -> list[tuple[set[str], Tokens]]:
    """For each choice, its tokens that no other choice has (and its Tokens)."""
    parsed = [content_tokens(choice) for choice in choices]
    result = []
    for i, tokens in enumerate(parsed):
        others = set().union(*(p.words for j, p in enumerate(parsed) if j != i))
        result.append((tokens.words - others, tokens))
    return result


def choice_support(answer: str | None, choices: Sequence[str]) -> list[float]:
    """Per choice: the share of its distinctive tokens found in the answer (0 without any)."""
    found = content_tokens(answer)
    supports = []
    for distinct, tokens in distinctive_tokens(choices):
        probe = Tokens(found.words, found.bare, {t: tokens.raw.get(t, set()) for t in distinct})
        supports.append(sum(probe.has(t) for t in distinct) / len(distinct) if distinct else 0.0)
    return supports


def answered_right(answer: str | None, choices: Sequence[str], correct: int) -> bool:
    """The answer supports the correct choice strictly more than every other choice."""
    support = choice_support(answer, choices)
    return all(support[correct] > s for i, s in enumerate(support) if i != correct)


def score_text(answer: str | None, item: ExamItem) -> dict[str, Any]:
    support = choice_support(answer, item.choices)
    right = all(support[item.answer] > s for i, s in enumerate(support) if i != item.answer)
    return {"support": [round(s, 4) for s in support], "right": right}


# BM25 over the collection's passages -------------------------------------------------------


class BM25:
    """Plain Okapi BM25 over token lists; a query's distinct terms each count once."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = BM25_K1, b: float = BM25_B):
        self.k1, self.b = k1, b
        self.lengths = [len(d) for d in documents]
        self.avg = sum(self.lengths) / len(documents) if documents else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for index, document in enumerate(documents):
            for term, count in Counter(document).items():
                self.postings[term].append((index, count))
        n = len(documents)
        self.idf = {
            term: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5))
            for term, p in self.postings.items()
        }

    def scores(self, query: Iterable[str]) -> dict[int, float]:
        totals: dict[int, float] = defaultdict(float)
        for term in set(query):
            for index, tf in self.postings.get(term, ()):
                norm = tf + self.k1 * (1 - self.b + self.b * self.lengths[index] / (self.avg or 1))
                totals[index] += self.idf[term] * tf * (self.k1 + 1) / norm
        return totals

    def top(self, query: Iterable[str], n: int) -> list[int]:
        scored = self.scores(query)
        return sorted(scored, key=lambda i: (-scored[i], i))[:n]


def read_chunks(collection: str) -> list[SimpleNamespace]:
    """Every chunk of the collection (text, metadata, id), in source and position order."""
    from core.store import CONTENT_KEY, METADATA_KEY, get_client

    client = get_client()
    chunks, offset = [], None
    while True:
        points, offset = client.scroll(
            collection,
            limit=1024,
            offset=offset,
            with_payload=[CONTENT_KEY, METADATA_KEY],
            with_vectors=False,
        )
        for point in points:
            payload = point.payload or {}
            chunks.append(
                SimpleNamespace(
                    id=point.id,
                    text=payload.get(CONTENT_KEY) or "",
                    metadata=dict(payload.get(METADATA_KEY) or {}),
                )
            )
        if offset is None:
            break

    def order(chunk):
        meta = chunk.metadata
        position = meta.get("char_start")
        position = position if isinstance(position, int) else meta.get("chunk_index") or 0
        return (str(meta.get("source")), meta.get("page") or 0, position, str(chunk.id))

    return sorted(chunks, key=order)


def corpus_passages(chunks: Sequence[Any]) -> list[Any]:
    """The evidence passages of all chunks, deduplicated within each source."""
    from chains.evidence import dedupe_passages, split_passages

    by_source: dict[str, list] = defaultdict(list)
    for chunk in chunks:
        for passage in split_passages(chunk):
            by_source[str(passage.source)].append(passage)
    return [p for source in sorted(by_source) for p in dedupe_passages(by_source[source])]


def section_texts(chunks: Sequence[Any]) -> dict[str, str]:
    """Section id -> the text of all its chunks joined (in position order)."""
    texts: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks:
        for key in metrics.chunk_keys(chunk.metadata.get("source"), chunk.metadata.get("section")):
            texts[key].append(chunk.text)
    return {key: "\n".join(parts) for key, parts in texts.items()}


def _passage_text(passage: Any) -> str:
    heading = (passage.heading or "").lstrip("# ").strip()
    return f"{heading}\n{passage.quote}" if heading else passage.quote


class Baselines:
    """BM25 top-3 passages and the section's whole text, for one collection."""

    def __init__(self, collection: str):
        from core.store import keyword_tokens

        chunks = read_chunks(collection)
        self.passages = corpus_passages(chunks)
        self.sections = section_texts(chunks)
        self.tokenize = keyword_tokens
        self.bm25 = BM25([keyword_tokens(_passage_text(p)) for p in self.passages])

    def bm25_top(self, question: str, n: int = BM25_TOP) -> list[Any]:
        return [self.passages[i] for i in self.bm25.top(self.tokenize(question), n)]

    def section_text(self, sections: Sequence[str]) -> str:
        return "\n".join(self.sections.get(metrics.gold_key(s), "") for s in sections)

    def paragraph_text(self, item: ExamItem) -> str:
        return "\n".join(p.quote for p in paragraph_passages(self.passages, item))


def paragraph_passages(passages: Sequence[Any], item: ExamItem) -> list[Any]:
    """The passages of the item's section in its cited paragraph (or all, without one)."""
    keys = _gold_keys(item)
    own = [p for p in passages if keys & metrics.chunk_keys(p.source, p.section)]
    if item.paragraph:
        own = [p for p in own if (p.paragraph or "").startswith(item.paragraph)]
    return own


# Running -----------------------------------------------------------------------------------


def _gold_keys(item: ExamItem) -> set[str]:
    return {metrics.gold_key(s) for s in item.sections}


def section_hits(sources: Sequence[dict], item: ExamItem) -> tuple[float, float]:
    """(the first listed source is in the item's section, any listed source is)."""
    wanted = _gold_keys(item)
    hits = [bool(wanted & metrics.chunk_keys(s.get("source"), s.get("section"))) for s in sources]
    return float(bool(hits) and hits[0]), float(any(hits))


def _answer_item(rag: Any, item: ExamItem, options: Any, answer_mode: str | None) -> dict:
    """The chain's answer to the stem (as evals.runner answers a gold item), scored."""
    from evals.gold import GoldItem
    from evals.runner import answer_one

    gold = GoldItem(item.id, item.question, item.sections, [], True)
    record = answer_one(rag, gold, options, answer_mode)
    text = "" if record["abstained"] else record["answer"]
    hit1, hit_any = section_hits(record["sources"], item)
    return {
        "answer": record["answer"],
        "abstained": record["abstained"],
        "weak_match": record["weak_match"],
        "error": record["error"],
        "sources": record["sources"],
        "timings": record["timings"],
        **score_text(text, item),
        "section_hit1": hit1,
        "section_hit_any": hit_any,
    }


@dataclass
class ExamRun:
    aggregate: dict[str, float | None]
    counts: dict[str, int]
    records: list[dict]
    problems: list[str]
    config: dict


def needs_model(options: Any) -> bool:
    from core.settings import get_settings

    modes = [mode or get_settings().answer_mode for _, _, mode in options.variants()]
    return any(mode != "extractive" for mode in modes)


def run_exam(options: Any, llm: Any, retriever: Any, collection: str, index: Any) -> ExamRun:
    """The exam over `options.exam`: the chain in each answer variant, and the baselines."""
    from chains.rag import RagChain
    from evals.gold import subsample
    from evals.runner import _adapter_swapper, _bar

    started = time.perf_counter()
    items, problems = load_exam(options.exam)
    unknown = [i for i in items if not all(index.knows(s) for s in i.sections)]
    problems += [
        f"{options.exam}:{i.line} ({i.id}): section(s) not in the corpus: {', '.join(i.sections)}"
        for i in unknown
    ]
    items = [i for i in items if i not in unknown and i.answerable]
    items = subsample(items, options.exam_limit)
    baselines = Baselines(collection)
    records = []
    for item in items:
        top = baselines.bm25_top(item.question)
        bm25_text = "\n".join(p.quote for p in top)
        hit1, hit_any = section_hits(
            [{"source": p.source, "section": p.section} for p in top], item
        )
        records.append(
            {
                **{k: v for k, v in asdict(item).items() if k != "line"},
                "variants": {},
                "bm25_top3": {
                    "passages": [p.pinpoint for p in top],
                    **score_text(bm25_text, item),
                    "section_hit1": hit1,
                    "section_hit_any": hit_any,
                },
                "section_text": score_text(baselines.section_text(item.sections), item),
                "paragraph_text": score_text(baselines.paragraph_text(item), item),
            }
        )
    by_id = {r["id"]: r for r in records}
    if items and not needs_model(options):
        # Extractive answers quote passages: the chain gets no model, so none can be called.
        for name, _, mode in options.variants():
            rag = RagChain(None, retriever)
            for item in _bar(items, options.progress, f"exam ({name})"):
                by_id[item.id]["variants"][name] = _answer_item(rag, item, options, mode)
    elif items:
        if llm is None:
            from chains.llm import QLoRAChatModel

            llm = QLoRAChatModel.load(temperature=0.0)
        use, restore = _adapter_swapper(llm)
        try:
            for name, adapter, mode in options.variants():
                use(adapter)
                rag = RagChain(llm, retriever)
                for item in _bar(items, options.progress, f"exam ({name})"):
                    by_id[item.id]["variants"][name] = _answer_item(rag, item, options, mode)
        finally:
            restore()
    aggregate, counts = aggregate_exam(records)
    config = {
        "exam_file": str(options.exam),
        "exam_items": len(items),
        "exam_passages": len(baselines.passages),
        "exam_seconds": round(time.perf_counter() - started, 2),
    }
    return ExamRun(aggregate, counts, records, problems, config)


def aggregate_exam(records: Sequence[dict]) -> tuple[dict[str, float | None], dict[str, int]]:
    """`exam.<variant>.answered_right`, `.section_hit1`, `.section_hit_any`,
    `.margin_over_bm25` (answered right minus BM25 top-3's, over the same items), and the
    baselines' `exam.bm25_top3.answered_right` (+ its section hits) and
    `exam.section_text.answered_right`, `exam.paragraph_text.answered_right`."""
    aggregate: dict[str, float | None] = {}
    counts: dict[str, int] = {}

    def put(key: str, values: list[float]) -> None:
        aggregate[key] = metrics.mean(values)
        counts[key] = len(values)

    if not records:
        return aggregate, counts
    bm25 = [float(r["bm25_top3"]["right"]) for r in records]
    put("exam.bm25_top3.answered_right", bm25)
    put("exam.bm25_top3.section_hit1", [r["bm25_top3"]["section_hit1"] for r in records])
    put("exam.section_text.answered_right", [float(r["section_text"]["right"]) for r in records])
    put(
        "exam.paragraph_text.answered_right",
        [float(r["paragraph_text"]["right"]) for r in records],
    )
    variants = list(dict.fromkeys(v for r in records for v in r["variants"]))
    for variant in variants:
        rows = [r for r in records if variant in r["variants"]]
        scored = [r["variants"][variant] for r in rows]
        put(f"exam.{variant}.answered_right", [float(s["right"]) for s in scored])
        put(f"exam.{variant}.section_hit1", [s["section_hit1"] for s in scored])
        put(f"exam.{variant}.section_hit_any", [s["section_hit_any"] for s in scored])
        margin = metrics.mean([float(s["right"]) for s in scored]) - metrics.mean(
            [float(r["bm25_top3"]["right"]) for r in rows]
        )
        aggregate[f"exam.{variant}.margin_over_bm25"] = margin
        counts[f"exam.{variant}.margin_over_bm25"] = len(rows)
    return aggregate, counts


# Report ------------------------------------------------------------------------------------


def render_exam(result: Any) -> list[str]:
    """The report's exam section: one row per answer variant and baseline."""
    agg, counts = result.aggregate, result.counts
    if not any(key.startswith("exam.") for key in agg):
        return []
    config = result.config
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    variants = list(
        dict.fromkeys(
            k.split(".")[1]
            for k in agg
            if k.startswith("exam.") and k.split(".")[1] not in BASELINES
        )
    )
    rows = [
        f"| {v} | {fmt(agg.get(f'exam.{v}.answered_right'))} | {fmt(agg.get(f'exam.{v}.section_hit1'))} "
        f"| {fmt(agg.get(f'exam.{v}.section_hit_any'))} | {fmt(agg.get(f'exam.{v}.margin_over_bm25'))} |"
        for v in variants
    ]
    rows.append(
        f"| BM25 top-3 passages | {fmt(agg.get('exam.bm25_top3.answered_right'))} "
        f"| {fmt(agg.get('exam.bm25_top3.section_hit1'))} | – | – |"
    )
    rows.append(
        f"| cited section's text (ceiling) | {fmt(agg.get('exam.section_text.answered_right'))} | – | – | – |"
    )
    rows.append(
        f"| cited paragraph's text | {fmt(agg.get('exam.paragraph_text.answered_right'))} | – | – | – |"
    )
    n = counts.get("exam.bm25_top3.answered_right", 0)
    lines = [
        "## Exam (multiple choice, the stem asked alone)",
        "",
        f"`{config.get('exam_file')}`: {n} items; {config.get('exam_passages')} passages for BM25; "
        f"{config.get('exam_seconds')} s.",
        "",
        "| answers | answered right | section hit@1 | section hit (any source) | margin over BM25 |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Answered right: the answer holds a larger share of the correct choice's distinctive "
        "words than of every distractor's (ties are wrong; `evals/exam.py`).",
        "",
    ]
    unseparated = [
        r["id"] for r in getattr(result, "exam", []) or [] if not r["section_text"]["right"]
    ]
    if unseparated:
        lines += [f"Not separated even by the section text: {', '.join(unseparated)}.", ""]
    return lines


# Data check --------------------------------------------------------------------------------


def corpus_sections(folders: Iterable[Path]) -> set[str]:
    """Section ids of corpus folders holding one `<section>.txt` per section."""
    return {path.stem for folder in folders for path in Path(folder).glob("*.txt")}


def check_file(path: Path, folders: Sequence[Path]) -> list[str]:
    """Problems of an exam file: malformed items, sections the corpus folders lack, and
    items whose own section's text cannot separate the right choice (warnings)."""
    items, problems = load_exam(path)
    if folders:
        from chains.evidence import split_passages

        known = corpus_sections(folders)
        texts = {
            p.stem: p.read_text(encoding="utf-8") for f in folders for p in Path(f).glob("*.txt")
        }
        chunks = [
            SimpleNamespace(id=stem, text=text, metadata={"section": stem, "source": f"{stem}.txt"})
            for stem, text in texts.items()
        ]
        passages = [p for chunk in chunks for p in split_passages(chunk)]
        for item in items:
            where = f"{path}:{item.line} ({item.id})"
            missing = [s for s in item.sections if metrics.gold_key(s) not in known]
            if missing:
                problems.append(f"{where}: unknown section(s) {', '.join(missing)}")
                continue
            own = paragraph_passages(passages, item)
            if not own:
                problems.append(f"{where}: no paragraph {item.paragraph} in {item.sections}")
                continue
            for name, text in (
                ("paragraph", "\n".join(p.quote for p in own)),
                ("section", "\n".join(texts[metrics.gold_key(s)] for s in item.sections)),
            ):
                scored = score_text(text, item)
                if not scored["right"]:
                    problems.append(
                        f"{where}: warning: the {name} text does not separate the right choice "
                        f"(support {scored['support']})"
                    )
    positions = Counter(item.answer for item in items)
    print(f"{len(items)} items; correct answer positions {dict(sorted(positions.items()))}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evals.exam", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate an exam JSONL file")
    check.add_argument("file", type=Path)
    check.add_argument("--corpus", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    problems = check_file(args.file, args.corpus)
    for problem in problems:
        print(problem)
    return 1 if any("warning:" not in p for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
