"""`finetune data from-docs`: question/answer pairs generated from the documents themselves.

Rule-based, no LLM. Each document is read the way ingestion reads it (`ingest.loaders.load_file`,
`ingest.chunking.Chunker` with the embedder's tokenizer) and cut into evidence passages the way
the chain quotes them (`chains.evidence.split_passages`: one per paragraph (b), (b)(1), table
row, sentence of a long paragraph, each with its pinpoint "§ 97.313(b)"). Each statement of a
passage may give a question:

- a limit: a number with a unit after "must not exceed", "no more than", "at least", ...
  ("The peak output power must not exceed 1 W." -> "What is the maximum peak output power
  under § 15.247?");
- a definition: "X means ...", "X is a/an ...", "Term. A ..." in a definitions section;
- an obligation or prohibition: "must", "shall", "may not", "is required to" ("Who must ...?"
  when a party is the subject, "What must X do ...?", "What does § N prohibit for X?");
- a time fact: "within 30 days", "at least every 10 minutes", "for 2 years";
- a table row: "What is the <column> for <first cell> under § N?".

The answer is the statement itself (whitespace normalised: PDF line wraps are spaces), a
verbatim slice of the document, so every pair is grounded by construction. Questions are
deduplicated: a repeated question is made specific with the paragraph pinpoint, then dropped.
The category is the part/subpart ("part15_subpart_b") or, for a document without CFR
structure, the document's name; the difficulty is a heuristic (length, conditions, quantities).

Layering: finetune may use ingest and chains.evidence (below it); chains is imported inside
functions only, as in `finetune.corpus`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "question",
    "answer",
    "category",
    "difficulty",
    "source",
    "section",
    "pinpoint",
    "kind",
)
KINDS = ("limit", "definition", "obligation", "prohibition", "who", "time", "table")

# Statements shorter or longer than this (characters) make poor answers.
MIN_STATEMENT_CHARS = 25
MAX_STATEMENT_CHARS = 420
MAX_SUBJECT_WORDS = 16

# Quantities ---------------------------------------------------------------------------------

_NUMBER = r"\d[\d,]*(?:\.\d+)?(?:\s*(?:-|–|to)\s*\d[\d,]*(?:\.\d+)?)?"
_UNIT_KINDS: list[tuple[str, str]] = [
    (r"W/kg", "SAR"),
    (r"mW/cm(?:2|²)|W/m(?:2|²)", "power density"),
    (r"dB[µu]V/m|[µu]V/m|mV/m|V/m", "field strength"),
    (r"dB[µu]V", "conducted level"),
    (r"dBm|dBW|[kKmMµunG]?W(?:atts?)?|watts?|milliwatts?|kilowatts?", "power"),
    (r"[kMG]Hz|Hz|kilohertz|megahertz|gigahertz", "frequency"),
    (r"dB", "level"),
    (r"%|percent", "percentage"),
    (r"words per minute|wpm", "speed"),
    (r"(?:milli)?seconds?|ms|minutes?|hours?|days?|weeks?|months?|years?", "time"),
    (r"cm|mm|km|m|meters?|metres?|centimeters?|centimetres?|inches|feet|ft", "distance"),
    (r"grams?|g\b|kg", "mass"),
]
_UNIT = "|".join(f"(?:{pattern})" for pattern, _ in _UNIT_KINDS)
QUANTITY = re.compile(
    rf"(?<![\w.])({_NUMBER})\s?({_UNIT})(?![\w/])(?:\s+(PEP|EIRP|ERP|e\.i\.r\.p\.))?"
)
_TIME_UNITS = re.compile(
    r"^(?:(?:milli)?seconds?|ms|minutes?|hours?|days?|weeks?|months?|years?)$", re.IGNORECASE
)

_MAX_TRIGGER = re.compile(
    r"\b(?:(?:must|shall|may|does|do|will|can)\s+not\s+exceed|cannot\s+exceed|not\s+to\s+exceed|"
    r"not\s+exceeding|exceeding|no\s+(?:more|greater|higher)\s+than|not\s+(?:be\s+)?(?:more|greater|higher)\s+than|"
    r"up\s+to|(?:a\s+)?maximum\s+(?:of\s+)?|at\s+most|limited\s+to)\s*$",
    re.IGNORECASE,
)
_MIN_TRIGGER = re.compile(
    r"\b(?:at\s+least|not\s+(?:be\s+)?less\s+than|no\s+less\s+than|(?:a\s+)?minimum\s+(?:of\s+)?|"
    r"no\s+(?:shorter|lower|closer)\s+than)\s*$",
    re.IGNORECASE,
)

# Sentences ----------------------------------------------------------------------------------

_MODAL = re.compile(
    r"\b(must\s+not|shall\s+not|may\s+not|must|shall|(?:is|are)\s+required\s+to|may)\b",
    re.IGNORECASE,
)
_SUBORDINATE = re.compile(
    r"^(?:if|when|where|whenever|except|unless|for|before|after|although|in|under|once|as|"
    r"with|upon|during|because|since|until|while|to)\b",
    re.IGNORECASE,
)
_PRONOUN = re.compile(r"^(?:it|they|this|that|these|those|which|such|he|she|each of them)\b", re.I)
_DETERMINER = re.compile(r"^(?:the|a|an|each|any|every|all|no|such)\s+", re.IGNORECASE)
_PARTY = re.compile(
    r"\b(?:licensee|grantee|responsible party|manufacturer|importer|applicant|operator|"
    r"control operator|party|TCB|Commission|licensee|holder|station licensee|user|seller|"
    r"dealer|installer|owner|master|captain|laboratory)s?$",
    re.IGNORECASE,
)
_MEANS = re.compile(
    r"^(?:the\s+term\s+)?[\"“']?(?P<term>[A-Za-z][\w\s\-'’/().,]{1,70}?)[\"”']?\s+"
    r"(?:means|is\s+defined\s+as|refers\s+to)\b",
    re.IGNORECASE,
)
_IS_A = re.compile(
    r"^(?P<term>(?:[A-Z][\w\-'’/()]*|[a-z][\w\-'’/()]*)(?:\s+[\w\-'’/()]+){0,6}?)\s+"
    r"(?:is|are)\s+(?:a|an|the)\s+(?:\w+\s+){0,3}?"
    r"(?:procedure|authorization|device|devices|system|systems|station|stations|equipment|"
    r"transmitter|transmitters|radiator|radiators|body|entity|document|process|method|"
    r"apparatus|term|category|service|emission|limit|distance|rate|measure|measurement|"
    r"person|party|agency|organization|program|grant|statement|label|identifier)\b"
)
_TERM_DOT = re.compile(
    r"^(?!(?:The|This|These|Those|Only|Each|All|Any|No)\s)(?P<term>[A-Z][\w\-'’/()]*(?:\s+[\w\-'’/()]+){0,6})"
    r"\.\s+(?:An?|The|Any|Each|Devices?|Equipment|Systems?)\s"
)
_DURATION = re.compile(
    r"\b(?:within|for|after|before|at\s+least\s+every|every|no\s+later\s+than|period\s+of|"
    r"intervals?\s+of|not\s+to\s+exceed)\s+(?:a\s+period\s+of\s+)?(?:one|two|three|\d[\d,.]*)\s+"
    r"(?:(?:milli)?seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b",
    re.IGNORECASE,
)
_VERB_START = re.compile(
    r"\s+(?:must|shall|may|will|can|is|are|was|were|does|do|has|have|should|"
    r"cannot|need|needs|requires?|applies|apply)\b",
    re.IGNORECASE,
)
_SECTION_PREFIX = re.compile(r"^§+\s*\d{1,3}\.\d{1,4}[a-z]?\s*")
_MEASURE_WORD = re.compile(
    r"power|strength|level|distance|frequency|rate|density|time|bandwidth|voltage|current|"
    r"height|gain|output|emission|limit|separation|SAR|duty|speed|deviation",
    re.IGNORECASE,
)
_THING_WORD = re.compile(r"(?:system|device|radiator|station|transmitter)s?$", re.IGNORECASE)
_NUMBERED_PREFIX = re.compile(r"^\d{1,2}(?:\.\d{1,2})*\.?\s+")
# A "subject" holding one of these is a clause, not a noun phrase.
_NOT_A_SUBJECT = re.compile(
    r"\b(?:is|are|was|were|be|been|not|no|must|shall|may|will|can|cannot|does|do|has|have|"
    r"that|which|who|whose|if|when|than)\b|[?:]",
    re.IGNORECASE,
)


@dataclass
class QAPair:
    question: str
    answer: str
    category: str
    difficulty: str
    source: str
    section: str | None
    pinpoint: str
    kind: str
    # Not written to the CSV: for tests and for making a question specific.
    raw: str = field(default="", repr=False)
    page: int | None = field(default=None, repr=False)

    def row(self) -> dict[str, str]:
        values = asdict(self)
        return {key: "" if values[key] is None else str(values[key]) for key in CSV_COLUMNS}


@dataclass
class GenerationReport:
    out: Path | None
    files: int = 0
    passages: int = 0
    statements: int = 0
    pairs: list[QAPair] = field(default_factory=list)
    duplicates: int = 0
    skipped_files: list[str] = field(default_factory=list)

    @property
    def by_kind(self) -> Counter:
        return Counter(p.kind for p in self.pairs)

    def format(self) -> str:
        by_category = Counter(p.category for p in self.pairs)
        by_difficulty = Counter(p.difficulty for p in self.pairs)
        by_source = Counter(p.source for p in self.pairs)
        lines = [
            f"{self.out or 'pairs'}: {len(self.pairs)} question/answer pairs from {self.files} "
            f"file(s), {self.passages} passages, {self.statements} statements "
            f"({self.duplicates} duplicate questions dropped)",
            "by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())),
            "by category: " + ", ".join(f"{k} {n}" for k, n in sorted(by_category.items())),
            "by difficulty: " + ", ".join(f"{k} {n}" for k, n in sorted(by_difficulty.items())),
            "by source: " + ", ".join(f"{k} {n}" for k, n in sorted(by_source.items())),
        ]
        lines += [f"  skipped: {s}" for s in self.skipped_files]
        return "\n".join(lines)


# Reading documents ----------------------------------------------------------------------------


@dataclass
class _Doc:
    source: str
    title: str
    doc_type: str
    text: str  # the loaded text (all segments), for checks


def _chunker(settings=None):
    from core.settings import get_settings
    from core.store import get_sentence_model
    from ingest.chunking import Chunker

    settings = settings or get_settings()
    model = get_sentence_model(settings)
    tokenizer = model.tokenizer
    window = min(model.max_seq_length or 512, tokenizer.model_max_length or 512)
    return Chunker(tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens, window)


def discover_files(paths: Sequence[str | Path]) -> list[Path]:
    """Supported files under the paths (folders recursively), in a stable order."""
    from ingest.loaders import is_supported

    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and is_supported(p) and not p.name.startswith(".")
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def document_passages(path: Path, chunker=None) -> tuple[_Doc, list[Any]]:
    """(the document, its evidence passages) as ingestion and the chain see them."""
    from chains.evidence import split_passages
    from ingest.loaders import load_file

    loaded = load_file(path, path.read_bytes())
    chunker = chunker or _chunker()
    doc = _Doc(path.name, loaded.title, loaded.doc_type, "\n".join(s.text for s in loaded.segments))
    passages = []
    for index, chunk in enumerate(chunker.chunk(loaded)):
        metadata = {
            "source": path.name,
            "page": chunk.page,
            "section": chunk.section,
            "part": chunk.part,
            "subpart": chunk.subpart,
            "heading": chunk.heading,
            "char_start": chunk.char_start,
            "para_path": chunk.para_path,
            "title": loaded.title,
            "doc_type": loaded.doc_type,
        }
        record = SimpleNamespace(text=chunk.text, metadata=metadata, id=f"{path.name}#{index}")
        for passage in split_passages(record):
            passage.part, passage.subpart = chunk.part, chunk.subpart  # for the category
            passages.append(passage)
    return doc, passages


def collection_passages(collection: str | None = None) -> dict[str, tuple[_Doc, list[Any]]]:
    """Passages of every chunk of an ingested collection, by source."""
    from chains.evidence import split_passages
    from core.records import RetrievedChunk
    from core.settings import get_settings
    from core.store import get_client

    settings = get_settings()
    name = collection or settings.collection_name
    client = get_client(settings)
    if not client.collection_exists(name):
        raise ValueError(f"Collection {name!r} does not exist; ingest documents first.")
    chunks: list[RetrievedChunk] = []
    offset = None
    while True:
        records, offset = client.scroll(
            name, limit=256, offset=offset, with_payload=True, with_vectors=False
        )
        chunks += [RetrievedChunk.from_record(r) for r in records]
        if offset is None:
            break
    chunks.sort(key=lambda c: (c.source or "", c.metadata.get("root") or "", c.chunk_index or 0))
    out: dict[str, tuple[_Doc, list[Any]]] = {}
    for chunk in chunks:
        source = chunk.source or "unknown"
        if source not in out:
            meta = chunk.metadata
            out[source] = (
                _Doc(source, meta.get("title") or source, meta.get("doc_type", ""), ""),
                [],
            )
        doc, passages = out[source]
        doc.text += chunk.text + "\n"
        for passage in split_passages(chunk):
            passage.part = chunk.metadata.get("part")
            passage.subpart = chunk.metadata.get("subpart")
            passages.append(passage)
    return out


# Statements -----------------------------------------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(text.split())


def statements(passage: Any) -> list[tuple[str, str]]:
    """(raw, normalised) sentences of a passage that can be read alone."""
    from chains.evidence import sentence_spans

    text = passage.text
    if getattr(passage, "context", None) and not text.rstrip().endswith((".", "!", "?")):
        return []  # a list fragment ("On the 10.10-10.15 MHz segment;") needs its lead-in
    spans = [(0, len(text))] if len(text) <= 240 else sentence_spans(text)
    out = []
    for start, end in spans:
        raw = text[start:end].strip()
        normal = _normal(raw)
        if MIN_STATEMENT_CHARS <= len(normal) <= MAX_STATEMENT_CHARS and re.search(
            r"[a-z]", normal
        ):
            out.append((raw, normal))
    return out


def _heading_subject(heading: str | None) -> str | None:
    if not heading:
        return None
    text = _SECTION_PREFIX.sub("", heading.lstrip("# ").strip())
    text = _NUMBERED_PREFIX.sub("", text).strip().rstrip(".:")
    if not text or len(text.split()) > 12 or text.endswith("?"):
        return None
    return _lower_first(text)


def _lower_first(text: str) -> str:
    """Lowercase the first word unless it is an acronym or a name-like token ("FCC", "SDoC")."""
    if not text:
        return text
    first = text.split()[0]
    if sum(c.isupper() for c in first) > 1 or any(c.isdigit() for c in first):
        return text
    return text[0].lower() + text[1:]


def _ref(passage: Any, doc: _Doc, specific: bool = False) -> str:
    """ "under § 97.313" (or "§ 97.313(b)" when specific); for other documents their title."""
    if passage.section:
        return f"under {passage.pinpoint}" if specific else f"under § {passage.section}"
    subject = _heading_subject(passage.heading)
    title = doc_label(doc)
    where = f"in {title}"
    if subject and subject.lower() not in title.lower():
        where += f" ({subject})"
    if specific and passage.page is not None:
        where += f", p. {passage.page}"
    return where


def doc_label(doc: _Doc) -> str:
    """A short name for a document: its title up to a dash or colon ("KDB 447498 D01")."""
    title = re.sub(r"\s*\((?:sample|draft)[^)]*\)", "", _normal(doc.title), flags=re.I)
    short = re.split(r"\s+[—–-]\s+|:\s", title)[0].strip()
    if len(short.split()) >= 2:
        return short
    return title or Path(doc.source).stem


def _clean_subject(text: str) -> str | None:
    """The noun phrase a statement is about, determiners dropped; None when unusable."""
    text = text.strip(" ,;:")
    text = re.sub(r"^\([a-z0-9]{1,4}\)\s*", "", text)  # a paragraph marker
    text = re.sub(r"^(?:and|or|but|then|also|however|thus|therefore)\s+", "", text, flags=re.I)
    if not text or _PRONOUN.match(text) or _SUBORDINATE.match(text):
        return None
    determiner = _DETERMINER.match(text)
    bare = text[determiner.end() :] if determiner else text
    words = bare.split()
    if (
        not words
        or len(words) > MAX_SUBJECT_WORDS
        or not re.search(r"[A-Za-z]{3}", bare)
        or bare.lower() in ("and", "or", "but", "the", "this", "part", "section")
    ):
        return None
    if determiner:  # "The grantee" -> "the grantee"; "No station" -> "a station"
        word = determiner.group(0).strip().lower()
        if word in ("no", "such", "all"):
            word = "any" if word == "no" else word
        text = f"{word} {bare}"
    if text.count("(") != text.count(")") or _NOT_A_SUBJECT.search(text):
        return None
    return _lower_first(text)


def _clause_before(text: str, end: int) -> str:
    """The clause that ends at `end`: after the last comma/semicolon/colon before it, unless
    what precedes that comma is the main clause's subject."""
    head = text[:end]
    cut = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
    if cut >= 0:
        before = head[:cut]
        if _SUBORDINATE.match(before.strip()) or len(head) - cut < len(before):
            return head[cut + 2 :]
    return head


def _subject_of_modal(text: str) -> tuple[str | None, re.Match | None]:
    match = _MODAL.search(text)
    if match is None:
        return None, None
    return _clean_subject(_clause_before(text, match.start())), match


def _unit_kind(unit: str) -> str:
    for pattern, kind in _UNIT_KINDS:
        if re.fullmatch(pattern, unit):
            return kind
    return "value"


def _limit_question(text: str, ref: str, heading: str | None) -> str | None:
    for quantity in QUANTITY.finditer(text):
        before = text[: quantity.start()]
        kind = (
            "maximum"
            if _MAX_TRIGGER.search(before)
            else "minimum"
            if _MIN_TRIGGER.search(before)
            else None
        )
        if kind is None:
            continue
        trigger = (_MAX_TRIGGER if kind == "maximum" else _MIN_TRIGGER).search(before)
        measure = _unit_kind(quantity.group(2))
        if measure == "time":
            return None  # a time fact (see _time_question)
        clause = _clause_before(before, trigger.start())
        modal = _VERB_START.search(clause)
        tail = re.search(r"\b(?:with|at|of)\s+(?:a|an|the)?\s*([\w\s\-]{3,60}?)\s*$", clause)
        candidates = [clause[: modal.start()] if modal else clause, tail.group(1) if tail else ""]
        subject = next(
            (
                cleaned
                for cleaned in map(_clean_subject, candidates)
                if cleaned and _MEASURE_WORD.search(cleaned) and not _THING_WORD.search(cleaned)
            ),
            None,
        )
        if subject is None:
            topic = f" for {heading}" if heading else ""
            subject = f"{measure}{topic}"
        return f"What is the {kind} {_DETERMINER.sub('', subject)} {ref}?"
    return None


def _definition_question(text: str, ref: str, heading: str | None) -> str | None:
    defining = bool(heading and re.search(r"definition|terms|meaning", heading, re.I))
    match = _MEANS.match(text)
    if match:
        term = _clean_subject(match.group("term"))
        if term and len(term.split()) <= 8:
            return f"What does {term} mean {ref}?"
    if defining:
        match = _TERM_DOT.match(text)
        if match and len(match.group("term").split()) <= 8:
            return f"What is {_article(match.group('term'))} {ref}?"
    match = _IS_A.match(text)
    if match:
        term = _clean_subject(match.group("term"))
        if term and len(term.split()) <= 7 and not _MODAL.search(match.group("term")):
            return f"What is {_article(term)} {ref}?"
    return None


def _article(term: str) -> str:
    term = _lower_first(term.strip())
    if _DETERMINER.match(term):
        return term
    if term.endswith("s") and not term.endswith("ss") or re.match(r"^[A-Z]{2,}", term):
        return term
    return f"{'an' if term[:1].lower() in 'aeiou' else 'a'} {term}"


def _predicate(text: str, start: int) -> str | None:
    rest = text[start:].strip()
    rest = re.split(r"[;:]|,\s|\s+(?:and|or)\s+(?:must|shall|may)\b|\.$", rest)[0].strip()
    words = rest.split()
    if not words or len(words) > 14:
        words = words[:10]
    phrase = " ".join(words).rstrip(".,")
    return phrase or None


def _obligation_question(text: str, ref: str) -> tuple[str, str] | None:
    subject, modal = _subject_of_modal(text)
    if subject is None or modal is None:
        return None
    word = " ".join(modal.group(1).lower().split())
    after = text[modal.end() :].strip()
    passive = after.lower().startswith("be ")
    if word in ("must not", "shall not", "may not"):
        return "prohibition", f"What does {_bare(ref)} prohibit for {subject}?"
    if word == "may":
        if passive:
            return None
        return "obligation", f"What may {subject} do {ref}?"
    if _PARTY.search(subject) and not passive:
        predicate = _predicate(text, modal.end())
        if predicate:
            verb = "must" if word in ("must", "shall") else "is required to"
            return "who", f"Who {verb} {predicate} {ref}?"
    if passive:
        return "obligation", f"What is required of {subject} {ref}?"
    return "obligation", f"What must {subject} do {ref}?"


def _bare(ref: str) -> str:
    """ "under § 97.313" -> "§ 97.313"; "in KDB ..." -> "KDB ..."."""
    return ref.removeprefix("under ").removeprefix("in ")


def _time_question(text: str, ref: str) -> str | None:
    if not _DURATION.search(text):
        return None
    subject, _ = _subject_of_modal(text)
    if subject is None:
        match = _VERB_START.search(text)
        subject = _clean_subject(text[: match.start()]) if match else None
    if subject is None:
        return None
    where = _bare(ref)
    if re.search(r"\bevery\b|\bintervals?\b", text, re.I):
        return f"How often does {where} require {subject}?"
    return f"What time limit does {where} set for {subject}?"


def _table_question(passage: Any, ref: str) -> tuple[str, str] | None:
    """A table row with its header: "What is the <column 2> for <cell 1> under § N?"."""
    header = (passage.context or "").strip().splitlines()
    if not header:
        return None
    cells = _cells(passage.text)
    columns = _cells(header[-1])
    if len(cells) < 2 or len(columns) != len(cells) or len(cells) > 4:
        return None
    key, value = cells[0], " | ".join(cells[1:])
    if not key or not value or any(_NOT_A_SUBJECT.search(c) for c in columns[1:]):
        return None
    answer = passage.text.strip().strip("|").strip()
    if len(cells) == 2:
        column = _lower_first(columns[1])
        if len(column.split()) > 8:
            return None
        return f"What is the {column} for {key} {ref}?", answer
    return f"What does the table {ref} give for {key}?", answer


def _cells(line: str) -> list[str]:
    if "|" in line:
        return [c.strip() for c in line.strip().strip("|").split("|")]
    return [c.strip() for c in re.split(r"\t| {2,}", line.strip()) if c.strip()]


def questions_for(passage: Any, doc: _Doc) -> list[tuple[str, str, str, str]]:
    """(kind, question, answer, raw answer) for one passage; at most one per statement."""
    ref = _ref(passage, doc)
    heading = _heading_subject(passage.heading)
    if getattr(passage, "context", None) and _cells(passage.text) and "|" in passage.text:
        table = _table_question(passage, ref)
        if table:
            return [("table", table[0], _normal(table[1]), table[1])]
        return []
    out = []
    for raw, text in statements(passage):
        found = None
        question = _definition_question(text, ref, heading)
        if question:
            found = ("definition", question)
        if found is None:
            question = _limit_question(text, ref, heading)
            if question:
                found = ("limit", question)
        if found is None:
            question = _time_question(text, ref)
            if question:
                found = ("time", question)
        if found is None:
            found = _obligation_question(text, ref)
        if found is not None:
            out.append((found[0], _tidy_question(found[1]), text, raw))
    return out


def _tidy_question(question: str) -> str:
    question = " ".join(question.split()).replace(" ?", "?")
    return question[0].upper() + question[1:]


# Labels -----------------------------------------------------------------------------------------


def category_of(passage: Any, doc: _Doc) -> str:
    """part15_subpart_b, part97, or the document's name when it has no CFR structure."""
    part = getattr(passage, "part", None)
    if not part and passage.section:
        part = passage.section.split(".")[0]
    if part:
        label = f"part{str(part).strip().lower().removeprefix('part').strip()}"
        subpart = getattr(passage, "subpart", None)
        if subpart:
            label += f"_subpart_{str(subpart).strip().lower().removeprefix('subpart').strip()}"
        return re.sub(r"[^0-9a-z_]+", "_", label).strip("_")
    return re.sub(r"[^0-9a-z_]+", "_", Path(doc.source).stem.lower()).strip("_") or "general"


_CONDITIONS = re.compile(
    r"\b(?:except|unless|provided that|other than|however|if|whichever|notwithstanding)\b", re.I
)


def difficulty_of(kind: str, answer: str) -> str:
    """easy: a short definition or fact; hard: long, conditional or several quantities."""
    words = len(answer.split())
    quantities = len(QUANTITY.findall(answer))
    if _CONDITIONS.search(answer) or quantities >= 2 or words > 40:
        return "hard"
    if words <= 15 or (kind in ("definition", "table") and words <= 30):
        return "easy"
    return "medium"


# Generation -----------------------------------------------------------------------------------


def _question_key(question: str) -> str:
    return " ".join(question.casefold().split()).rstrip("?")


def pairs_from_passages(
    doc: _Doc, passages: Iterable[Any], seen: dict[str, QAPair], report: GenerationReport
) -> None:
    for passage in passages:
        report.passages += 1
        report.statements += len(statements(passage))
        for kind, question, answer, raw in questions_for(passage, doc):
            key = _question_key(question)
            if key in seen:
                specific = _ref(passage, doc, specific=True)
                general = _ref(passage, doc)
                if specific != general:
                    question = question.replace(general, specific)
                    key = _question_key(question)
            if key in seen:
                report.duplicates += 1
                continue
            pair = QAPair(
                question=question,
                answer=answer,
                category=category_of(passage, doc),
                difficulty=difficulty_of(kind, answer),
                source=doc.source,
                section=passage.section,
                pinpoint=passage.pinpoint,
                kind=kind,
                raw=raw,
                page=passage.page,
            )
            seen[key] = pair
            report.pairs.append(pair)


def generate_pairs(
    paths: Sequence[str | Path] = (),
    collection: str | None = None,
    progress: bool = True,
) -> GenerationReport:
    """Question/answer pairs from files (folders recursively) and/or an ingested collection."""
    from tqdm.auto import tqdm

    from ingest.documents import SkipFile

    report = GenerationReport(out=None)
    seen: dict[str, QAPair] = {}
    files = discover_files(paths) if paths else []
    if files:
        chunker = _chunker()
        for path in tqdm(files, desc="documents", unit="file", disable=not progress):
            try:
                doc, passages = document_passages(path, chunker)
            except SkipFile as error:
                report.skipped_files.append(f"{path}: {error}")
                continue
            report.files += 1
            pairs_from_passages(doc, passages, seen, report)
    if collection is not None:
        by_source = collection_passages(collection)
        for doc, passages in tqdm(
            by_source.values(), desc="documents", unit="doc", disable=not progress
        ):
            report.files += 1
            pairs_from_passages(doc, passages, seen, report)
    if not files and collection is None:
        raise ValueError("Give document files or folders, or --collection.")
    return report


def write_pairs(pairs: Sequence[QAPair], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for pair in pairs:
            writer.writerow(pair.row())
    return out


def build_docs_qa(
    paths: Sequence[str | Path],
    out: str | Path,
    collection: str | None = None,
    progress: bool = True,
) -> GenerationReport:
    """`finetune data from-docs`: generate, deduplicate, write the CSV; return the report."""
    report = generate_pairs(paths, collection, progress)
    report.out = write_pairs(report.pairs, out)
    return report
