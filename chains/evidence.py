"""Evidence, not chunks: retrieved chunks split into quotable passages with pinpoint citations.

A chunk is cut along the regulation's own structure: one passage per lettered/numbered
paragraph ((b), (b)(1), (e)(1)(ii)), per table row (with its header as `context`) and per
sentence of a long paragraph. Each passage is a verbatim slice of the chunk text (`span`),
labelled with a human pinpoint (`§ 97.313(b)`, `kdb_447498_rf_exposure.pdf, p. 3`).

`rank_passages` scores passages against a question: MiniLM cosine (one encode call, cached)
plus lexical signals. Scale of `Passage.score`: 0.6 * cosine + 0.3 * keyword overlap
+ 0.1 * [a quantity of the question is in the passage] + 0.15 * [the question names the
passage's section] (+0.1 more when it names its paragraph too): about -0.2 .. 1.25; a
passage that answers a question typically scores 0.55 or more. `Passage.dense_score` keeps
the plain cosine (-1 .. 1, the retrieval's `dense_score` scale). With the retrieved chunks'
order given, + 0.15 / rank of the passage's chunk.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePath
from typing import Any

import numpy as np

from chains.qualifiers import expand_abbreviations, qualifier_match, question_qualifiers
from chains.quantities import (
    asked_bound,
    asked_units,
    extract_quantities,
    quantity_supported,
    stated_bounds,
    states_amount,
    wants_amount,
)
from ingest.chunking import (
    ParagraphStart,
    definition_resets,
    path_breaks,
    scan_paragraphs,
    split_units,
)

# Ranking weights (see the module docstring for the resulting scale).
W_DENSE = 0.6
W_LEXICAL = 0.3
W_QUANTITY = 0.1
W_SECTION = 0.15
W_PARAGRAPH = 0.1
W_CHUNK_RANK = 0.15  # / the chunk's retrieval rank (rank_passages)
W_AMOUNT = 0.1  # the question asks for an amount and the passage states one
# The question asks for a maximum and the passage states a ceiling ("not exceed"), or a
# minimum and a floor: § 97.313(a) "must use the minimum power necessary" outranked (b)
# "exceeding 1.5 kW PEP" for "What is the maximum transmitter power ...?" on cosine alone.
W_BOUND = 0.1
# A list intro alone ("... 200 W PEP:") quotes half a rule: the items say where it applies.
W_LIST_INTRO = -0.05
# The passage names the case the question asks about (its band, a range holding its frequency,
# its class: chains.qualifiers), or only another case of that kind (-1 x the weight).
W_QUALIFIER = 0.15
# The question's adjacent content words found adjacent in the passage ("two conditions",
# "conditions of operation"): asked for Part 15's two conditions of operation, a labelling-table
# row sharing the loose words "part 15 ... operation ... condition" outranked § 15.5(b).
W_PHRASE = 0.15
# Asked what a term is ("What is a third-party communication?", "What does PEP mean?"), the
# passage that defines it (§ 97.3(a)(47) "Third party communications. A message from ...")
# is the answer; § 97.115(a)(2), which uses the words most, outranked it (`defines`).
W_DEFINITION = 0.3
# Kept items of one list within this of the best passage's score: the ranking could not tell
# which answers, so the list is quoted whole (with_whole_lists); as verify.QUOTE_MARGIN.
LIST_MARGIN = 0.1
# A paragraph longer than this is quoted sentence by sentence (under the same pinpoint).
LONG_PARAGRAPH_CHARS = 240
# A sentence quoted from such a paragraph is read with its neighbours, up to this many
# characters: the sentence that ranks best is often only the lead-in or the gloss of the answer. Asked for the two
# tones of the radiotelephone alarm signal, § 80.317(b)'s first sentence ("consists of two ...
# tones transmitted alternately") ranked first and the next ("One tone must have a frequency of
# 2200 Hertz and the other ... 1300 Hertz") was not shown; asked for an amplifier's gain limit,
# § 97.317(a)(2)'s definition of gain was shown, not the sentence before it ("by more than 15 dB").
PARAGRAPH_QUOTE_CHARS = 720
# A "sentence" shorter than this (a paragraph heading like "Fixed point-to-point
# operation.") stays with the sentence after it.
MIN_SENTENCE_CHARS = 40
ELLIPSIS = " … "  # joins a passage's context and its text in quotes

_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were which with what when where who how does do can may must shall any all each not no "
    "than then there these those such under i me my we our you your he she they them their "
    "if so about into over also only other more most some there's what's would should could "
    "will been being did done up out per via".split()
)
_WORD = re.compile(r"[^\W_]+(?:[.'’][^\W_]+)*", re.UNICODE)
_SECTION_ID = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,4}[a-z]?)((?:\([a-zA-Z0-9]{1,6}\))*)")
_SOURCE_NOTE = re.compile(r"^\[[^\[\]]*\]\.?$")  # "[54 FR 25857, ...]", "[Reserved]"
_MD_HEADING_LINE = re.compile(r"^#{1,6}\s")
_MD_SEPARATOR = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$")
_COLUMN_GAP = re.compile(r"(?<=\S)(?: {2,}|\t)(?=\S)")
_NUMERIC_CELL = re.compile(r"^[-−+*<>≤≥~]?\s*\d")

# Sentence ends: ".", "!" or "?" (and closing quotes/brackets), then space and a capital.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z])")
_ABBREVIATIONS = frozenset(
    "e.g i.e etc no nos u.s sec secs fig figs inc corp co ltd mr mrs ms dr st vs approx al "
    "ref vol pp p cf pub stat jan feb mar apr jun jul aug sep sept oct nov dec para paras "
    "u.s.c c.f.r art arts".split()
)


@dataclass
class Passage:
    text: str  # verbatim slice of the chunk text: chunk.text[span[0]:span[1]]
    pinpoint: str  # human label: "§ 97.313(b)", "kdb_447498_rf_exposure.pdf, p. 3"
    section: str | None
    paragraph: str | None  # "(b)(1)"; None at section level
    source: str | None
    page: int | None
    span: tuple[int, int]  # offsets in the chunk text
    source_span: tuple[int, int] | None  # offsets in the source segment (chunk char_start known)
    chunk_id: str | None
    score: float = 0.0  # set by rank_passages (scale in the module docstring)
    n: int | None = None  # the number shown to the model; set by the caller
    # Verbatim lead-in the text needs to be read right: a table row's header, the intro of
    # the list a fragment like "On the 10.10-10.15 MHz segment;" belongs to. Not in `span`.
    context: str | None = None
    heading: str | None = None  # the chunk's heading ("§ 97.313 Transmitter power standards.")
    dense_score: float | None = None  # cosine(question, passage), set by rank_passages
    likelihood: float | None = None  # log P(question | passage) per token, set by chains.rerank
    part: str | None = None  # the part of a two-part question it answers (answer_each_part)
    # The pinpoint of the table row that cites this paragraph for its standards ("20 m | ... |
    # RTTY, data | (f)(3)."): quoted with the row (`RagChain._with_cited_standards`).
    standard_of: str | None = None

    @property
    def evidence(self) -> str:
        """What the passage says, with its context: the text that is scored and verified."""
        return f"{self.context}\n{self.text}" if self.context else self.text

    @property
    def quote(self) -> str:
        """The verbatim words to quote: context and text joined by an ellipsis."""
        quote = f"{self.context}{ELLIPSIS}{self.text}" if self.context else self.text
        return " ".join(quote.split())  # PDF line wraps are not part of the words

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["span"] = list(self.span)
        data["source_span"] = list(self.source_span) if self.source_span else None
        data["quote"] = self.quote
        return data


# Tokens and embeddings -------------------------------------------------------------------


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """Lowercased, lightly stemmed words and numbers, stopwords dropped, in order."""
    words = (w.lower().replace("’", "'").removesuffix("'s") for w in _WORD.findall(text))
    return [_stem(w) for w in words if w not in _STOPWORDS]


def content_tokens(text: str) -> set[str]:
    """Lowercased, lightly stemmed words and numbers, stopwords dropped."""
    return set(content_words(text))


def word_pairs(text: str) -> set[tuple[str, str]]:
    """Adjacent content words (stopwords between them skipped): phrases, loosely."""
    words = content_words(text)
    return set(zip(words, words[1:], strict=False))


# Passage vectors, shared by ranking and verification (same text: one encode).
_CACHE: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
_CACHE_SIZE = 8192
_CACHE_LOCK = threading.Lock()  # chains run in worker threads


def default_embedder():
    from core.store import get_sentence_model

    return get_sentence_model()


def encode_texts(texts: Sequence[str], embedder=None) -> np.ndarray:
    """Unit vectors for `texts`, in one encode call for the ones not seen before."""
    model = embedder if embedder is not None else default_embedder()
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    with _CACHE_LOCK:
        known = {t: _CACHE[(id(model), t)] for t in texts if (id(model), t) in _CACHE}
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    if missing:
        vectors = model.encode(
            missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        with _CACHE_LOCK:
            for text, vector in zip(missing, vectors, strict=True):
                known[text] = _CACHE[(id(model), text)] = np.asarray(vector, dtype=np.float32)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return np.stack([known[t] for t in texts])


# Sentences --------------------------------------------------------------------------------


def _abbreviation_before(text: str, end: int) -> bool:
    """Is the period at `end` the end of "e.g.", "No.", "U.S.", "Sec." and the like?"""
    start = end
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    word = text[start:end].lower().strip(".")
    return word in _ABBREVIATIONS


def sentence_spans(
    text: str, start: int = 0, end: int | None = None, min_chars: int = MIN_SENTENCE_CHARS
) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets in text[start:end]; decimals, "§ 97.3", "e.g." stay whole.

    A fragment shorter than `min_chars` is joined to the sentence after it (or, at the end,
    to the one before).
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if text[match.start()] == "." and _abbreviation_before(text, match.start()):
            continue
        cut = match.start() + len(match.group(0).rstrip())
        spans.append((cursor, cut))
        cursor = match.end()
    if text[cursor:end].strip():
        spans.append((cursor, len(text[:end].rstrip())))
    merged: list[tuple[int, int]] = []
    for span in spans:
        if merged and merged[-1][1] - merged[-1][0] < min_chars:
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < min_chars:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


# Splitting a chunk --------------------------------------------------------------------------


def _meta(chunk: Any) -> dict:
    return dict(getattr(chunk, "metadata", None) or {})


def _label(source: str | None) -> str:
    return PurePath(source).name if source else "source"


def make_pinpoint(
    section: str | None, paragraph: str | None, source: str | None, page, heading
) -> str:
    if section:
        return f"§ {section}{paragraph or ''}"
    label = _label(source)
    if page is not None:
        label = f"{label}, p. {page}"
    elif heading:
        label = f"{label}, {heading.lstrip('# ').strip()}"
    return f"{label}, ¶ {paragraph}" if paragraph else label


def _heading_starts(text: str, heading: str | None, section: str | None) -> tuple[set, set, set]:
    """Offsets of the heading lines of a chunk text (never passages), of those that close
    all paragraphs, and of the unmarked definitions that do (`definition_resets`)."""
    markdown = any(_MD_HEADING_LINE.match(line) for line in text.splitlines())
    units = split_units(text, markdown, in_rules=bool(section))
    breaks = path_breaks(units)
    resets = definition_resets(text, units, heading)
    starts = {u.start for u in units if u.kind == "section" or u.start in breaks}
    if heading:
        bare = heading.lstrip("# ").strip()
        position = 0
        for line in text.splitlines(keepends=True):
            if line.strip().lstrip("# ").strip() == bare:
                starts.add(position + len(line) - len(line.lstrip()))
            position += len(line)
    return starts, breaks, resets


def _cells(line: str) -> list[str]:
    if "|" in line:
        return [c.strip() for c in line.strip().strip("|").split("|")]
    return [c.strip() for c in re.split(r"\t| {2,}", line.strip())]


def _is_row(line: str) -> bool:
    """A table row: cells split by "|" or tabs, or three or more space-aligned columns."""
    stripped = line.strip()
    if "|" in stripped or "\t" in stripped:
        return len([c for c in _cells(stripped) if c]) >= 2
    return len(_COLUMN_GAP.findall(stripped)) >= 2


def _is_header(row: str, following: str | None) -> bool:
    if following is not None and _MD_SEPARATOR.match(following.strip()):
        return True
    cells = [c for c in _cells(row) if c]
    if any(_NUMERIC_CELL.match(c) for c in cells):
        return False
    return max(len(c.split()) for c in cells) <= 6


@dataclass
class _Block:
    start: int
    end: int
    path: list[str]
    kind: str  # "para" (paragraph text) | "row" (table row)
    first: bool = False  # the first block of its paragraph (the one that holds its marker)
    context: str | None = None


@dataclass
class _Cursor:
    """The walk through a chunk's lines: the open paragraph and table."""

    path: list[str]
    block: _Block | None = None
    header: str | None = None  # header row of the table being read
    caption: str | None = None  # a short line right above: the title of a table below it
    caption_end: int = -1
    blocks: list[_Block] = field(default_factory=list)

    def close(self) -> None:
        if self.block is not None:
            self.blocks.append(self.block)
            self.block = None


def _has_alnum(text: str) -> bool:
    return bool(re.search(r"[^\W_]", text))


def _lines(text: str) -> Iterable[tuple[int, int, str]]:
    """(start, end, stripped line) with offsets of the stripped text."""
    position = 0
    for line in text.splitlines(keepends=True):
        start, position = position, position + len(line)
        stripped = line.strip()
        if stripped:
            offset = start + len(line) - len(line.lstrip())
            yield offset, offset + len(stripped), stripped
        else:
            yield start, start, ""


def _blocks(
    text: str,
    starts: list[ParagraphStart],
    headings: tuple[set[int], set[int]],
    path: list[str],
    mid: bool,
) -> list[_Block]:
    """Paragraph and row blocks of a chunk text, with the paragraph path of each.

    `headings`: offsets of heading lines, and of those that close all paragraphs. `mid`: the
    chunk starts inside its source, so a row on its first line is no header.
    """
    heading_lines, breaks = headings
    cursor = _Cursor(path=list(path))
    by_offset = {start.start: start for start in starts if not start.heading}
    marks = sorted(by_offset)
    lines = list(_lines(text))
    for index, (begin, end, line) in enumerate(lines):
        following = next((ln for _, _, ln in lines[index + 1 :] if ln), None)
        if not line:  # a blank line ends a paragraph block
            cursor.close()
            continue
        if begin in heading_lines or begin in breaks:
            cursor.close()
            cursor.header, cursor.caption = None, None
            if begin in breaks:
                cursor.path = []
            continue
        if _SOURCE_NOTE.match(line) or _MD_SEPARATOR.match(line) or not _has_alnum(line):
            cursor.close()  # a source note, a table rule, a bullet glyph of a PDF list
            continue
        inline = [m for m in marks if begin <= m < end]
        if inline:
            _marker_line(cursor, end, inline, by_offset)
        elif _is_row(line):
            if mid and begin == len(text) - len(text.lstrip()):
                cursor.header = ""  # cut from a table whose header is in an earlier chunk
            _row_line(cursor, begin, end, line, following)
        else:
            cursor.header = None
            if cursor.block is None or cursor.block.kind != "para":
                cursor.close()
                # "60 M Band Frequencies (kHz)": a short line without a full stop.
                titled = len(line) <= 120 and not line.endswith((".", ":", ";"))
                cursor.caption, cursor.caption_end = (line if titled else None), end
                cursor.block = _Block(begin, end, list(cursor.path), "para")
            else:
                cursor.block.end = end  # a wrapped line (PDF text) continues the paragraph
    cursor.close()
    return cursor.blocks


def _marker_line(
    cursor: _Cursor, end: int, marks: list[int], by_offset: dict[int, ParagraphStart]
) -> None:
    """One block per paragraph that starts on this line ("(1) Heading. (i) Text" has two)."""
    cursor.close()
    cursor.header = cursor.caption = None
    for position, mark in enumerate(marks):
        start = by_offset[mark]
        cursor.path = list(start.path)
        stop = marks[position + 1] if position + 1 < len(marks) else end
        cursor.block = _Block(start.body, stop, list(start.path), "para", first=True)
        cursor.close()
    cursor.block = None


def _row_line(cursor: _Cursor, begin: int, end: int, line: str, following: str | None) -> None:
    cursor.close()
    if cursor.header is None and _is_header(line, following):
        caption = cursor.caption
        if caption and cursor.blocks and cursor.blocks[-1].end == cursor.caption_end:
            cursor.blocks.pop()  # "Class B conducted limits": the table's title, not a passage
        cursor.header = f"{caption}\n{line}" if caption and caption != line else line
        return
    header = cursor.header or None
    cursor.blocks.append(_Block(begin, end, list(cursor.path), "row", context=header))


def is_lead_in(text: str) -> bool:
    """Does the text introduce a list or table ("... in the following form:", "Radiotelegraphy:")?"""
    return text.rstrip().endswith(":")


def _fragment(text: str) -> bool:
    """A list item that cannot be read alone ("On the 10.10-10.15 MHz segment;", a row
    "100-160 kHz—80kW"). A lead-in ending in ":" ("Radiotelegraphy:") is none: it is read
    with what follows it."""
    if is_lead_in(text):
        return False
    stripped = text.rstrip()
    return not stripped.endswith((".", "!", "?", '."', ".”")) or stripped[:1].islower()


def _intro(text: str) -> str:
    """The last sentence of a paragraph's text: the lead-in of the list under it."""
    spans = sentence_spans(text)
    return text[spans[-1][0] : spans[-1][1]] if spans else text


def _contexts(text: str, blocks: list[_Block]) -> None:
    """Give fragments (list items, rows under "Radiotelegraphy:") the lead-in they need.

    A list continues its lead-in sentence when half or more of its items are fragments
    ("(1) On the 10.10-10.15 MHz segment;"); then every item gets the lead-in, "(3) The
    7.050-7.075 MHz segment ..." too. Items that are sentences of their own (§ 97.215(c))
    get none.
    """
    intros: dict[tuple[str, ...], str] = {}  # path -> last sentence of its first block
    votes: dict[tuple[str, ...], list[bool]] = {}  # parent -> is each item a fragment?
    for block in blocks:
        body = text[block.start : block.end].strip()
        if block.kind == "para" and block.first and not _SOURCE_NOTE.match(body):
            votes.setdefault(tuple(block.path[:-1]), []).append(_fragment(body))
    continued = {key for key, flags in votes.items() if 2 * sum(flags) >= len(flags)}
    for block in blocks:
        if block.kind != "para":
            continue
        key = tuple(block.path)
        body = text[block.start : block.end].strip()
        if block.first:  # "(1) On the ... segment;": read under its parent's lead-in
            if _fragment(body) or key[:-1] in continued:
                block.context = _lead_in(intros, key[:-1])
            intros[key] = _intro(body)
        elif key in intros:  # a later line of the paragraph: read under its own lead-in
            if _fragment(body):
                block.context = _lead_in(intros, key)
        else:  # the section's intro, or a paragraph whose marker is in an earlier chunk
            intros[key] = _intro(body)


def _lead_in(intros: dict[tuple[str, ...], str], key: tuple[str, ...]) -> str | None:
    """The nearest ancestor's intro; two of them when the nearest is a bare label."""
    found: list[str] = []
    for depth in range(len(key), -1, -1):
        intro = intros.get(key[:depth])
        if intro:
            found.insert(0, intro)
            if len(intro) >= 40 or len(found) == 2:
                break
    return ELLIPSIS.join(found) if found else None


def _keep(text: str, kind: str) -> bool:
    """Worth a passage: a table row with values, or text with words that is not a bare
    footnote number ("6"), a bullet glyph or "[Reserved]"."""
    if kind == "row":
        return bool(re.search(r"[^\W_]", text))
    bare = re.sub(r"^\d{1,2}\s+", "", text)  # "7 [Reserved]": a footnote's number
    return bool(re.search(r"[^\W\d_]{2,}", text)) and not _SOURCE_NOTE.match(bare)


def split_passages(chunk: Any) -> list[Passage]:
    """The quotable passages of a retrieved chunk (duck-typed: `.text`, `.metadata`, `.id`)."""
    text = getattr(chunk, "text", "") or ""
    meta = _meta(chunk)
    heading = meta.get("heading")
    char_start = meta.get("char_start")
    para_path = [str(p) for p in meta.get("para_path") or []]
    headings, breaks, resets = _heading_starts(text, heading, meta.get("section"))
    # With a para_path from ingestion, a marker opening the chunk is a child of that path.
    starts = scan_paragraphs(
        text, para_path, breaks, first_is_child="para_path" in meta, resets=resets
    )
    mid = isinstance(char_start, int) and char_start > 0
    blocks = _blocks(text, starts, (headings, breaks), para_path, mid)
    _contexts(text, blocks)
    passages: list[Passage] = []
    for block in blocks:
        pieces = [(block.start, block.end)]
        if block.kind == "para" and block.end - block.start > LONG_PARAGRAPH_CHARS:
            pieces = sentence_spans(text, block.start, block.end)
        for index, (start, end) in enumerate(pieces):
            piece = text[start:end]
            if not _keep(piece.strip(), block.kind):
                continue
            passage = _passage(chunk, meta, block, piece, start, char_start)
            if index:  # a lead-in reads with the first sentence of a long item, not the rest
                passage.context = None
            passages.append(passage)
    return passages


def _passage(
    chunk: Any, meta: dict, block: _Block, piece: str, start: int, char_start: Any
) -> Passage:
    lead = len(piece) - len(piece.lstrip())
    start, end = start + lead, start + lead + len(piece.strip())
    paragraph = "".join(block.path) or None
    section = meta.get("section")
    chunk_id = getattr(chunk, "id", None)
    known = isinstance(char_start, int)
    return Passage(
        text=piece.strip(),
        pinpoint=make_pinpoint(
            section, paragraph, meta.get("source"), meta.get("page"), meta.get("heading")
        ),
        section=section,
        paragraph=paragraph,
        source=meta.get("source"),
        page=meta.get("page"),
        span=(start, end),
        source_span=(start + char_start, end + char_start) if known else None,
        chunk_id=str(chunk_id) if chunk_id is not None else None,
        context=block.context,
        heading=meta.get("heading"),
    )


# Ranking ------------------------------------------------------------------------------------


def _named_sections(question: str, amounts: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """(section, paragraph chain) the question names: "§ 97.313(b)" -> ("97.313", "(b)").

    An id that is an amount ("2.4 GHz", spans in `amounts`) names no section."""
    return [
        (m.group(1), m.group(2))
        for m in _SECTION_ID.finditer(question)
        if not any(a <= m.start() < b for a, b in amounts)
    ]


def _ranking_text(passage: Passage) -> str:
    heading = (passage.heading or "").lstrip("# ").strip()
    return f"{heading}\n{passage.evidence}" if heading else passage.evidence


def _overlap(a: Passage, b: Passage) -> bool:
    """Do two passages quote the same words of one source (overlapping chunk windows)?"""
    # Spans count from the start of their section: two sections of one file never overlap
    # (comparing them dropped 22 of 39 passages of part2_equipment_authorization.xml).
    if a.source != b.source or a.page != b.page or a.section != b.section:
        return False
    if a.source_span and b.source_span:
        shared = min(a.source_span[1], b.source_span[1]) - max(a.source_span[0], b.source_span[0])
        shorter = min(a.source_span[1] - a.source_span[0], b.source_span[1] - b.source_span[0])
        return shared > 0 and shared >= shorter / 2
    return " ".join(a.text.split()) in " ".join(b.text.split())


def dedupe_passages(passages: Sequence[Passage]) -> list[Passage]:
    """Drop passages that overlapping chunks repeat (the longer one stays), in input order."""
    kept: list[Passage] = []
    for passage in sorted(passages, key=lambda p: -len(p.text)):
        if not any(_overlap(passage, other) for other in kept):
            kept.append(passage)
    order = {id(p): i for i, p in enumerate(passages)}
    return sorted(kept, key=lambda p: order[id(p)])


def _paragraph_match(named: list[tuple[str, str]], passage: Passage) -> float:
    """1 when the question names the passage's paragraph (or one above it: "(c)" for
    "(c)(1)"), 0.5 when it names a paragraph inside the passage's ("(c)(1)" for "(c)")."""
    own = passage.paragraph or ""
    best = 0.0
    for section, paragraph in named:
        if section != passage.section or not paragraph:
            continue
        if own.startswith(paragraph):
            best = 1.0
        elif paragraph.startswith(own):
            best = max(best, 0.5)
    return best


# "What is a repeater?", "What is the definition of PEP?", "What does SS mean?", "Define ..."
_ASKS_DEFINITION = re.compile(
    r"^\W*(?:what\s+(?:is|are)\s+(?:the\s+definition\s+of\s+|meant\s+by\s+)?|"
    r"define\s+|what\s+does\s+)(?:an?\s+|the\s+)?(?P<term>[^?]+?)(?:\s+mean)?\s*\??\s*$",
    re.I,
)
# A definitions entry: "(47) Third party communications. A message ...", "PEP (peak envelope
# power). The average power ...": the defined words, then a period and a capital.
_DEFINITION = re.compile(r"^\W*(?:\(\w{1,4}\)\s*)*(?P<term>[A-Z][^.:;]{0,80}?)\.\s+[A-Z]")


def asked_term(question: str) -> set[str] | None:
    """The content words of the term a definition question asks about, or None."""
    match = _ASKS_DEFINITION.match(question or "")
    return content_tokens(match.group("term")) or None if match else None


def defines(text: str, term: set[str]) -> bool:
    """Is the passage the definition of `term`? Its defined words (or those in its
    parentheses: "PEP (peak envelope power)") are all in the term and make at least half of
    it: "a beacon station" is defined under "Beacon.", "a space station in the amateur
    service" under "Space station."."""
    match = _DEFINITION.match(text)
    if not match:
        return False
    defined = match.group("term")
    inside = " ".join(re.findall(r"\(([^()]*)\)", defined))
    outside = re.sub(r"\([^()]*\)", " ", defined)
    return any(
        words and words <= term and 2 * len(words) >= len(term)
        for words in (content_tokens(outside), content_tokens(inside))
    )


def score_passages(
    question: str,
    passages: Sequence[Passage],
    embedder=None,
    abbreviations: dict[str, str] | None = None,
) -> list[float]:
    """Set and return `score` (and `dense_score`) of each passage; one encode call.

    `abbreviations` (the documents' own, `chains.qualifiers.find_abbreviations`): a passage
    saying "SS" matches a question saying "spread spectrum", and the other way round."""
    if not passages:
        return []
    texts = [_ranking_text(p) for p in passages]
    vectors = encode_texts([question, *texts], embedder)
    dense = vectors[1:] @ vectors[0]
    asked_quantities = [q for q in extract_quantities(question) if q.kind == "quantity"]
    named = _named_sections(question, [q.span for q in asked_quantities])
    # Section ids and paragraph letters of the question count through W_SECTION/W_PARAGRAPH.
    unnamed = question
    for match in _SECTION_ID.finditer(question):
        if (match.group(1), match.group(2)) in named:
            unnamed = unnamed.replace(match.group(0), " ")
    asked = {t for t in content_tokens(unnamed) if len(t) > 1}
    amount = wants_amount(question)
    units = asked_units(question)  # a power question wants a power, not a frequency
    bound = asked_bound(question)
    qualifiers = question_qualifiers(question, abbreviations)
    phrases = word_pairs(unnamed)
    term = asked_term(question)
    scores = []
    pool_words = [
        content_tokens(f"{text} {expand_abbreviations(text, abbreviations or {})}")
        for text in texts
    ]
    idf = _pool_idf(asked, pool_words)
    for passage, cosine, text, words in zip(passages, dense, texts, pool_words, strict=True):
        lexical = _weighted_overlap(asked, words, idf)
        quantity = any(quantity_supported(q, passage) for q in asked_quantities)
        section = any(s == passage.section for s, _ in named)
        score = (
            W_DENSE * float(cosine)
            + W_LEXICAL * lexical
            + W_QUANTITY * quantity
            + W_SECTION * section
            + W_PARAGRAPH * _paragraph_match(named, passage)
            + W_AMOUNT * (amount and states_amount(passage.evidence, units))
            + W_BOUND * (bound is not None and bound in stated_bounds(passage.text))
            + W_LIST_INTRO * is_lead_in(passage.text)
            + W_QUALIFIER * qualifier_match(qualifiers, text)
            + W_PHRASE * (len(phrases & word_pairs(text)) / len(phrases) if phrases else 0.0)
            + W_DEFINITION * bool(term and defines(passage.text, term))
        )
        passage.dense_score, passage.score = float(cosine), float(score)
        scores.append(float(score))
    return scores


def _pool_idf(asked: set[str], pool_words: Sequence[set[str]]) -> dict[str, float]:
    """The idf among the candidate passages of each asked word some candidate holds: a word
    most candidates share tells them apart less than one few hold. Asked when a third party
    may "participate in stating" a message, § 97.115(a)(2) won on "third party", "message"
    and "station", words of most candidates; only (b), the answer, says "participate"."""
    held = {word: sum(word in words for words in pool_words) for word in asked}
    return {word: math.log(1 + len(pool_words) / n) for word, n in held.items() if n}


def _weighted_overlap(asked: set[str], words: set[str], idf: dict[str, float]) -> float:
    """The share of the asked words the passage holds, as before idf weighting (the words no
    candidate holds keep their share, which no passage gets), the rest weighted by `idf`."""
    if not asked or not idf:
        return 0.0
    matched = sum(weight for word, weight in idf.items() if word in words)
    return matched / sum(idf.values()) * len(idf) / len(asked)


def rank_passages(
    question: str,
    passages: Sequence[Passage],
    embedder=None,
    k: int = 3,
    chunk_order: Sequence[str] = (),
    abbreviations: dict[str, str] | None = None,
) -> list[Passage]:
    """The best `k` passages for the question, best first, with `score` set (deduplicated).

    `chunk_order`: the retrieved chunks' ids, best first. Passages of the r-th chunk get
    W_CHUNK_RANK / r on top: the chunk ranking (hybrid RRF over the whole chunk and its
    heading) knows things a lone sentence does not. Measured on the gold sets' answerable
    items (top passage in a gold section): eCFR 0.72 -> 0.84, sample 0.51 -> 0.60 at 0.15.
    """
    unique = dedupe_passages(passages)
    score_passages(question, unique, embedder, abbreviations)
    rank = {chunk_id: r for r, chunk_id in enumerate(chunk_order, 1)}
    for passage in unique:
        if passage.chunk_id in rank:
            passage.score += W_CHUNK_RANK / rank[passage.chunk_id]
    return sorted(unique, key=lambda p: -p.score)[:k]


# ", and how old must each be?": a second question joined to the first.
_PART_JOIN = re.compile(
    r",?\s+(?:and|or)\s+(?=(?:how|what|which|who|whom|when|where|why|at\s+what|for\s+how|"
    r"in\s+what|to\s+what)\b)",
    re.I,
)


def question_parts(question: str) -> list[str]:
    """The questions a question asks: "How many VEs must administer an exam, and how old must
    each be?" asks two. One part for most questions."""
    return [part.strip() for part in _PART_JOIN.split(question) if part.strip()]


def answer_each_part(
    question: str,
    kept: Sequence[Passage],
    candidates: Sequence[Passage],
    k: int,
    threshold: float,
    chunk_order: Sequence[str] = (),
    abbreviations: dict[str, str] | None = None,
) -> list[Passage]:
    """`kept`, with the best passage for each part of a two-part question added (marked with
    its `part`) when no kept passage is it: ranked against the whole question, the passage
    for one part loses to the other's. Asked how many VEs must give an exam "and how old
    must each be", the answer quoted § 97.509(a)'s "at least 3 VEs" twice and never (b)(2)'s
    "at least 18 years of age". Only from the kept passages' sections, where a second part is
    answered ("how old" alone would match any age rule), and only above `threshold`; the last
    unmarked passage makes room when `k` are kept."""
    parts = question_parts(question)
    if len(parts) < 2:
        return list(kept)
    sections = {p.section for p in kept if p.section}
    pool = [replace(p) for p in candidates if p.section in sections]  # scores are per question
    kept = list(kept)
    for part in parts:
        ranked = rank_passages(
            part, pool, k=1, chunk_order=chunk_order, abbreviations=abbreviations
        )
        if not ranked or ranked[0].score < threshold:
            continue
        best = ranked[0]
        if any(_overlap(p, best) for p in kept):
            continue
        if len(kept) >= k:
            unmarked = [i for i, p in enumerate(kept) if i and p.part is None]
            if not unmarked:
                continue
            kept.pop(unmarked[-1])
        kept.append(replace(best, part=part))
    return kept


def _adjacent(passage: Passage, candidates: Sequence[Passage], text: str, after: bool):
    """The candidate right after (or before) `passage` in its paragraph: same chunk and
    paragraph, only whitespace between."""
    for other in candidates:
        if other.chunk_id != passage.chunk_id or other.paragraph != passage.paragraph:
            continue
        if _is_row(other.text):  # a table's rows are quoted one by one, under their header
            continue
        gap = (passage.span[1], other.span[0]) if after else (other.span[1], passage.span[0])
        if gap[0] <= gap[1] and not text[gap[0] : gap[1]].strip():
            return other
    return None


def with_paragraph_sentences(
    kept: Sequence[Passage],
    candidates: Sequence[Passage],
    chunk_texts: dict[str, str],
    limit: int | None = None,
) -> list[Passage]:
    """The kept passages, each sentence of a long paragraph read with its neighbours there:
    the sentences after it, then those before it, while the quote stays within `limit`
    characters. The result is still a verbatim slice of the chunk; a kept passage it now
    holds is dropped. `limit`: PARAGRAPH_QUOTE_CHARS unless given."""
    limit = PARAGRAPH_QUOTE_CHARS if limit is None else limit
    extended: list[Passage] = []
    for passage in kept:
        text = chunk_texts.get(passage.chunk_id or "")
        if text is None or any(holds(done, passage) for done in extended):
            continue
        if _is_row(passage.text):
            extended.append(passage)
            continue
        first = last = passage
        for after in (True, False):
            while (near := _adjacent(last if after else first, candidates, text, after)) and (
                max(last.span[1], near.span[1]) - min(first.span[0], near.span[0]) <= limit
            ):
                first, last = (first, near) if after else (near, last)
        extended.append(_joined(passage, first, last, text))
    return extended


def widen_quotes(
    kept: Sequence[Passage], chunks: Sequence[Any], candidates: Sequence[Passage]
) -> list[Passage]:
    """What is quoted for the kept passages: a list item with its whole list, a sentence with
    its paragraph's neighbours (both within PARAGRAPH_QUOTE_CHARS); verbatim slices of the
    retrieved chunks, best first. `candidates`: the chunks' passages (split once, for ranking)."""
    texts = {str(getattr(c, "id", None)): getattr(c, "text", "") or "" for c in chunks}
    lists = with_whole_lists(kept, candidates, texts)
    return with_paragraph_sentences(lists, candidates, texts)


_LAST_MARKER = re.compile(r"\([^()]*\)$")


def with_whole_lists(
    kept: Sequence[Passage],
    candidates: Sequence[Passage],
    chunk_texts: dict[str, str],
    limit: int | None = None,
) -> list[Passage]:
    """The kept passages, with a list quoted whole where two or more of them are its items
    (or an item and its lead-in): the ranking could not tell which item answers, and an
    order, a sequence or a choice among the items is read off the whole list. The list is
    quoted from its first item to its last, pinpointed to its paragraph, when it fits in
    `limit` characters (PARAGRAPH_QUOTE_CHARS). Asked which communications come second in
    priority, § 80.91(a)(1) ("Distress calls ...") and the lead-in were quoted, not (2)
    ("Urgency communications"). A single kept item keeps its own pinpoint (§ 97.313(c)(1) for
    10.140 MHz). A kept passage the list holds is dropped. Only items scoring within
    LIST_MARGIN of the best count: asked the power on the 30 m band, § 97.313(c)(1) "On the
    10.10-10.15 MHz segment" led (b) and (d) by 0.17, and the whole of (a)-(d) was quoted."""
    limit = PARAGRAPH_QUOTE_CHARS if limit is None else limit
    whole = [p.score for p in kept if p.part is None]
    tied = [p for p in kept if not whole or p.score >= max(whole) - LIST_MARGIN]
    quoted = [
        _whole_list(p, tied, candidates, chunk_texts, limit) or _best_item(p, candidates) or p
        for p in kept
    ]
    shown: list[Passage] = []
    for passage in quoted:
        if not any(holds(other, passage) for other in shown):
            shown = [other for other in shown if not holds(passage, other)]
            shown.append(passage)
    return shown


def _parent(passage: Passage) -> str:
    """The paragraph a list item belongs to: "(a)" for "(a)(2)", "" for a top-level "(b)"."""
    return _LAST_MARKER.sub("", passage.paragraph or "")


def _in_list(passage: Passage, parent: str) -> bool:
    return bool(passage.paragraph) and passage.paragraph.startswith(parent)


def _whole_list(
    passage: Passage,
    kept: Sequence[Passage],
    candidates: Sequence[Passage],
    chunk_texts: dict[str, str],
    limit: int,
) -> Passage | None:
    text = chunk_texts.get(passage.chunk_id or "")
    if not text or not passage.paragraph:
        return None
    # A lead-in among the best ("... four levels of priority in the following order:") is half
    # a rule: its items say it.
    intro = is_lead_in(passage.text) and any(p is passage for p in kept)
    parent = passage.paragraph if intro else _parent(passage)
    items_kept = {
        p.paragraph for p in kept if p.chunk_id == passage.chunk_id and _in_list(p, parent)
    }
    if not intro and len(items_kept) < 2:  # two sentences of one item are no list
        return None
    items = [
        c
        for c in candidates
        if c.chunk_id == passage.chunk_id and _in_list(c, parent) and c.paragraph != parent
    ]
    if len({c.paragraph for c in items}) < 2:
        return None
    start, end = min(c.span[0] for c in items), max(c.span[1] for c in items)
    marker = _MARKER_BEFORE.search(text, 0, start)  # "(1) " of the first item
    start = marker.start() if marker else start
    if end - start > limit:
        return None
    return _resliced(
        passage,
        text,
        start,
        end,
        paragraph=parent or None,
        pinpoint=make_pinpoint(
            passage.section, parent or None, passage.source, passage.page, passage.heading
        ),
        context=next((c.context for c in items if c.context and _parent(c) == parent), None),
    )


def _best_item(lead_in: Passage, candidates: Sequence[Passage]) -> Passage | None:
    """For a lead-in that cannot be quoted with its whole list, its best-ranked item (or table
    row), quoted under it and ranked as it was where that is higher: the lead-in alone says
    nothing. Asked when a third party may take part in a message, § 97.115(a) "An amateur
    station may transmit messages for a third party to:" was quoted alone (its items run past
    PARAGRAPH_QUOTE_CHARS); asked for the General Class's 20 m segments, § 97.301(d)'s "... of
    General Class:" without its table (which begins the next chunk:
    `Retriever.with_continuations`). None for any other passage, or without an item."""
    if not is_lead_in(lead_in.text):
        return None
    items = [
        c
        for c in candidates
        if (c.source, c.section, c.heading) == (lead_in.source, lead_in.section, lead_in.heading)
        and (  # after it; in another chunk, only as an item of its (numbered) paragraph
            c.span[0] >= lead_in.span[1]
            if c.chunk_id == lead_in.chunk_id
            else lead_in.paragraph is not None
        )
        and (
            (c.paragraph != lead_in.paragraph and _in_list(c, lead_in.paragraph or ""))
            or (c.paragraph == lead_in.paragraph and _is_row(c.text) and _DIGIT.search(c.text))
        )
    ]
    if not items:
        return None
    best = max(items, key=lambda c: c.score)
    context, said = best.context or "", lead_in.text.strip()
    if not context or context in said:  # the item's context may be the lead-in's last sentence
        context = said
    elif said not in context:  # a row reads under its header, the header under the lead-in
        context = f"{said}{ELLIPSIS}{context}"
    return replace(best, context=context, score=max(best.score, lead_in.score))


_DIGIT = re.compile(r"\d")  # a table's data row, not a unit row ("LF | kHz | kHz |")
_MARKER_BEFORE = re.compile(r"(?:\([a-zA-Z0-9]{1,6}\))+\s*$")


def _joined(passage: Passage, first: Passage, last: Passage, text: str) -> Passage:
    if first is passage and last is passage:
        return passage
    return _resliced(passage, text, first.span[0], last.span[1], context=first.context)


def _resliced(passage: Passage, text: str, start: int, end: int, **changes: Any) -> Passage:
    """`passage` quoting chunk text[start:end] instead, its source span moved alike."""
    offset = passage.source_span[0] - passage.span[0] if passage.source_span else None
    source_span = (start + offset, end + offset) if offset is not None else None
    return replace(
        passage, text=text[start:end], span=(start, end), source_span=source_span, **changes
    )


def holds(outer: Passage, inner: Passage) -> bool:
    """`outer` quotes all of `inner` (same chunk, its span within)."""
    return (
        outer.chunk_id == inner.chunk_id
        and outer.span[0] <= inner.span[0]
        and inner.span[1] <= outer.span[1]
    )


_CHAIN = re.compile(r"(?:\([a-zA-Z0-9]{1,6}\))+")
_ONE_MARKER = re.compile(r"\([^()]+\)")


def paragraph_markers(paragraph: str) -> list[str]:
    """ "(f)(3)(i)" -> ["(f)", "(3)", "(i)"]."""
    return _ONE_MARKER.findall(paragraph)


def cited_paragraphs(row: str) -> list[str]:
    """The paragraphs a table row's last cell cites: "20 m | 14.00-14.15 MHz | RTTY, data |
    (f)(3), (9)." -> ["(f)(3)", "(f)(9)"] (a shorter chain continues the first one's parent).
    [] for a row whose last cell is anything else."""
    if not _is_row(row):
        return []
    cell = _cells(row)[-1].rstrip(".; ")
    chains = _CHAIN.findall(cell)
    if not chains or _CHAIN.sub("", cell).strip(" ,;and") != "":
        return []
    first = paragraph_markers(chains[0])
    cited = []
    for chain in chains:
        markers = paragraph_markers(chain)
        cited.append("".join(first[: max(0, len(first) - len(markers))] + markers))
    return cited


def passages_from_chunks(chunks: Iterable[Any]) -> list[Passage]:
    """All passages of several chunks, in chunk order."""
    return [passage for chunk in chunks for passage in split_passages(chunk)]


def select_evidence(
    question: str, chunks: Iterable[Any], embedder=None, k: int = 6
) -> list[Passage]:
    """Split retrieved chunks, rank their passages, and number the best `k` [1]..[k]."""
    ranked = rank_passages(question, passages_from_chunks(chunks), embedder, k=k)
    for n, passage in enumerate(ranked, 1):
        passage.n = n
    return ranked


def choose_passages(
    question: str,
    chunks: Sequence[Any],
    k: int,
    threshold: float,
    margin: float,
    embedder=None,
    abbreviations: dict[str, str] | None = None,
) -> tuple[list[Passage], float | None]:
    """The evidence a RAG answer is given: the passages of the retrieved chunks (best chunk
    first: its rank counts, `rank_passages`' chunk_order) ranked for the question, the best
    `k` kept, then those within `margin` of the best (and above `threshold`); none when the
    best is below `threshold`. Returns (passages best first, the best score or None).

    One choice for serving (`chains.rag`) and training (`finetune data from-corpus`), so an
    adapter trains on the evidence it will be served; `abbreviations`: the collection's
    (`Retriever.abbreviations`), as the chain ranks with them.
    """
    chunks = list(chunks)
    candidates = passages_from_chunks(chunks)
    ranked = rank_passages(
        question,
        candidates,
        embedder,
        k=k,
        chunk_order=[getattr(chunk, "id", None) for chunk in chunks],
        abbreviations=abbreviations,
    )
    best = ranked[0].score if ranked else None
    if best is None or best < threshold:
        return [], best
    floor = max(threshold, best - margin)
    return widen_quotes([p for p in ranked if p.score >= floor], chunks, candidates), best


def numbered_sources(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """The numbered entries the model sees for these passages, [1].. in order (`n` is set on
    each passage too): the fields `chains.prompts.format_source` reads, with the values
    `chains.rag.Source.from_passage` gives them (the text is the passage's quote)."""
    sources = []
    for n, passage in enumerate(passages, 1):
        passage.n = n
        sources.append(
            {
                "n": n,
                "source": passage.source,
                "page": passage.page,
                "section": passage.section,
                "pinpoint": passage.pinpoint,
                "text": passage.quote,
            }
        )
    return sources
