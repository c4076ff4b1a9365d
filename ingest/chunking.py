"""Structure-aware chunking, measured in the embedding model's own tokens.

A segment's text is cut into units first: section headings (`§ 97.313 ...`), Markdown
headings, lettered paragraphs `(a)`, numbered/roman sub-paragraphs and blank-line blocks.
Units are packed into chunks of at most `chunk_tokens` tokens; headings are hard
boundaries (a chunk never spans two sections), and a lettered paragraph with its
sub-paragraphs starts a new chunk when it would not fit into the current one. A unit longer
than a chunk is cut into token windows with `chunk_overlap_tokens` overlap, ending at a
line or sentence end where one is near.

Chunk text is always a verbatim slice of the segment (`char_start` says where), and
`para_path` is the paragraph-marker path open where it starts, so a chunk that begins at
"(2)" can still be cited as "(b)(2)" (chains.evidence). The text that is embedded gets the
chunk's heading in front (`§ 15.109 Radiated emission limits.`) unless the chunk starts
with it, so a paragraph like "(c) ... 40 dBµV/m" is still found by its section.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.documents import LoadedFile

SPECIAL_TOKENS = 2  # [CLS] and [SEP]

_SECTION_LINE = re.compile(r"^§\s*(\d{1,3})\.(\d{1,4}[a-z]?(?:-\d+)?)\s+[\[A-Z(\"'“]")
_SECTION_IN_HEADING = re.compile(
    r"^(?:§\s*|sec(?:tion|\.)\s*)?(\d{1,3})\.(\d{1,4}[a-z]?)(?=[\s.:,—–-]|$)", re.IGNORECASE
)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# "2. Device exposure categories" on a line of its own in PDFs and text files.
_NUMBERED_HEADING = re.compile(r"^\d{1,2}(?:\.\d{1,2}){0,3}\.?\s+[A-Z][^.!?:;|]{1,78}[^.!?:;,|\s]$")
_MARKER = re.compile(r"^\(([a-z]{1,2}|\d{1,3}|[ivxl]{1,5})\)\s")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A definitions section ("§ 97.3 Definitions.", "§ 15.3 Definitions") and one of its entries:
# "(38) Repeater. An amateur station ...", "Underway. A vessel is underway ...": a term of at
# most a few words, a period, then its definition.
_DEFINITIONS_HEADING = re.compile(r"\bDefinitions?\b")
_DEFINITION_ENTRY = re.compile(
    r"^\W*(?:\(\w{1,4}\)\s*)*(?P<term>[A-Z][^.:;]{0,80}?)\.\s+(?:\(\w{1,4}\)\s*)?[A-Z]"
)
_ROMAN_AFTER = {"i": "h", "v": "u", "x": "w", "l": "k"}


@dataclass
class Chunk:
    text: str  # verbatim slice of the source text
    embed_text: str  # what is embedded and keyword-indexed: heading prefix + text
    page: int | None
    section: str | None
    part: str | None
    subpart: str | None
    heading: str | None
    tokens: int  # embedder tokens of embed_text, special tokens included
    char_start: int = 0  # offset of `text` in its segment's text
    # Paragraph markers open where the chunk starts: ["(b)"] for a chunk that starts at
    # "(2)" under (b), ["(b)", "(2)"] for one that starts inside (b)(2)'s text; [] at a heading.
    para_path: list[str] = field(default_factory=list)


@dataclass
class _Unit:
    start: int
    end: int
    kind: str  # "section" | "heading" | "letter" | "para"
    section: str | None = None
    heading: str | None = None
    level: int | None = None  # Markdown heading level; None for plain lines
    tokens: int = 0


@dataclass
class _Piece:
    text: str
    state: _State
    page: int | None
    start: int  # offset of text in the segment
    para_path: list[str]


@dataclass
class _State:
    section: str | None = None
    section_level: int | None = None
    heading: str | None = None
    part: str | None = None
    subpart: str | None = None


def part_of(section: str | None) -> str | None:
    return section.split(".", 1)[0] if section and "." in section else None


def _heading_section(text: str) -> str | None:
    if text.startswith("§§"):
        return None
    match = _SECTION_IN_HEADING.match(text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _is_letter(marker: str, last_letter: str | None) -> bool:
    if not marker.isalpha():
        return False
    if marker in _ROMAN_AFTER or all(c in "ivxl" for c in marker):
        return last_letter == _ROMAN_AFTER.get(marker, "")  # (i) after (h) is a letter
    return True


def split_units(text: str, markdown_headings: bool, in_rules: bool = False) -> list[_Unit]:
    """Cut text into structural units (character spans of `text`).

    `in_rules`: the text is (part of) a rule section. A rule's structure is its paragraph
    markers, so from a section line on, a bare numbered line is no heading: in § 97.303 the
    table caption "60 M Band Frequencies (kHz)" was taken for one and became the heading of
    the section's later chunks, so paragraphs (i) to (r) (the 5 cm band ...) read as being
    about the 60 m band, and were quoted for questions about it. A KDB's "2. Requirements"
    stays a heading."""
    units: list[_Unit] = []
    position = 0
    last_letter: str | None = None
    in_fence = False
    current: _Unit | None = None

    def close(end: int) -> None:
        nonlocal current
        if current is not None:
            current.end = end
            if text[current.start : current.end].strip():
                units.append(current)
            current = None

    lines = text.splitlines(keepends=True)

    def numbered_heading(index: int, stripped: str) -> bool:
        if in_rules or markdown_headings or not _NUMBERED_HEADING.match(stripped):
            return False
        following = next((line.strip() for line in lines[index + 1 :] if line.strip()), "")
        return bool(following) and not _NUMBERED_HEADING.match(following)

    for index, line in enumerate(lines):
        start, position = position, position + len(line)
        stripped = line.strip()
        line_end = start + len(line.rstrip())
        if not stripped:
            close(start)
            continue
        if markdown_headings and _FENCE.match(line):
            in_fence = not in_fence
        heading = _MD_HEADING.match(stripped) if markdown_headings and not in_fence else None
        section_line = None if heading or in_fence else _SECTION_LINE.match(stripped)
        marker = None if heading or section_line or in_fence else _MARKER.match(stripped)
        if heading:
            close(start)
            title = heading.group(2).strip()
            section = _heading_section(title)
            in_rules = in_rules or bool(section)
            units.append(
                _Unit(
                    start + len(line) - len(line.lstrip()),
                    line_end,
                    "section" if section else "heading",
                    section=section,
                    heading=title,
                    level=len(heading.group(1)),
                )
            )
            last_letter = None
        elif section_line and len(stripped) <= 300:
            close(start)
            in_rules = True
            section = f"{section_line.group(1)}.{section_line.group(2)}"
            units.append(
                _Unit(
                    start + len(line) - len(line.lstrip()), line_end, "section", section, stripped
                )
            )
            last_letter = None
        elif not marker and numbered_heading(index, stripped):
            close(start)
            units.append(
                _Unit(start + len(line) - len(line.lstrip()), line_end, "heading", heading=stripped)
            )
            last_letter = None
        elif marker:
            close(start)
            letter = _is_letter(marker.group(1), last_letter)
            if letter:
                last_letter = marker.group(1)
            current = _Unit(
                start + len(line) - len(line.lstrip()), line_end, "letter" if letter else "para"
            )
        elif current is None:
            current = _Unit(start + len(line) - len(line.lstrip()), line_end, "para")
        current_end = line_end
        if current is not None:
            current.end = current_end
    close(len(text.rstrip()))
    return units


class Chunker:
    """Chunks LoadedFiles with one tokenizer; one instance per ingest run."""

    def __init__(self, tokenizer, chunk_tokens: int, overlap_tokens: int, window: int):
        self.tokenizer = tokenizer
        # Texts longer than the window are measured on purpose (to split them): no warning.
        getattr(tokenizer, "deprecation_warnings", {})[
            "sequence-length-is-longer-than-the-specified-maximum"
        ] = True
        self.window = window
        self.budget = max(16, min(chunk_tokens, window - SPECIAL_TOKENS))
        self.overlap = max(0, min(overlap_tokens, self.budget // 2))
        # Room for the heading prefix of the embedded text.
        self.prefix_budget = max(0, window - SPECIAL_TOKENS - self.budget - 1)

    def _encode(self, texts: list[str], offsets: bool = False):
        return self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=offsets,
            return_attention_mask=False,
            return_token_type_ids=False,
        )

    def chunk(self, loaded: LoadedFile) -> list[Chunk]:
        state = _State()
        path: list[str] = []  # paragraph path carried from page to page of unstructured files
        pieces: list[_Piece] = []
        for segment in loaded.segments:
            if segment.structured:
                state = _State(
                    segment.section, None, segment.heading, segment.part, segment.subpart
                )
                path = []
            units = split_units(
                segment.text, loaded.markdown_headings, in_rules=bool(segment.section)
            )
            if not units:
                continue
            encoded = self._encode([segment.text[u.start : u.end] for u in units])
            for unit, ids in zip(units, encoded["input_ids"], strict=True):
                unit.tokens = len(ids)
            packed, state = self._pack(segment.text, units, state, segment.structured)
            starts = scan_paragraphs(
                segment.text,
                path,
                path_breaks(units),
                resets=definition_resets(segment.text, units, segment.heading),
            )
            for text, unit_state, start in packed:
                para_path = path_at(starts, start, path)
                pieces.append(_Piece(text, unit_state, segment.page, start, para_path))
            path = path_at(starts, len(segment.text) + 1, path)
            if segment.structured:
                state = _State()
        return self._finish(pieces, loaded.title)

    def _advance(self, state: _State, unit: _Unit, structured: bool) -> _State:
        if structured or unit.kind not in ("section", "heading"):
            return state
        if unit.kind == "section":
            return _State(unit.section, unit.level, unit.heading, part_of(unit.section), None)
        reset = (
            state.section_level is not None
            and unit.level is not None
            and unit.level <= state.section_level
        )
        if reset:
            return _State(None, None, unit.heading, None, None)
        return _State(state.section, state.section_level, unit.heading, state.part, state.subpart)

    def _pack(self, text, units, state, structured):
        """(chunk text, state of its content) for one segment, and the state after it."""
        budget = self.budget
        current: list[int] = []
        current_tokens = 0
        out: list[tuple[str, _State, int]] = []  # (chunk text, state, offset in text)

        def flush():
            nonlocal current, current_tokens
            if current:
                first, last = units[current[0]], units[current[-1]]
                out.append((text[first.start : last.end], chunk_state, first.start))
            current, current_tokens = [], 0

        chunk_state = state
        group_sizes = self._group_sizes(units)
        in_entries = False  # past the first entry of a definitions section
        for index, unit in enumerate(units):
            is_heading = unit.kind in ("section", "heading")
            only_headings = all(units[i].kind in ("section", "heading") for i in current)
            holds_section = any(units[i].kind == "section" for i in current)
            entry = not is_heading and _definition_entry(text[unit.start : unit.end], state.heading)
            if (
                is_heading
                and current
                and (not only_headings or unit.kind == "section" and holds_section)
                or (entry and in_entries and current)
                or (
                    unit.kind == "letter"
                    and current
                    and current_tokens + group_sizes[index] > budget
                    and group_sizes[index] <= budget
                    and current_tokens >= budget // 4
                )
            ):
                flush()
            state = self._advance(state, unit, structured)
            if unit.tokens > budget:
                start = units[current[0]].start if current and only_headings else unit.start
                if current and not only_headings:
                    flush()
                current, current_tokens = [], 0
                chunk_state = state
                for piece, piece_start in self._windows(text, start, unit.end):
                    out.append((piece, state, piece_start))
                continue
            if current_tokens + unit.tokens > budget:
                flush()
            in_entries = not is_heading and (in_entries or entry)
            current.append(index)
            current_tokens += unit.tokens
            chunk_state = state
        flush()
        return out, state

    @staticmethod
    def _group_sizes(units: list[_Unit]) -> list[int]:
        """Tokens of each lettered paragraph together with its sub-paragraphs."""
        sizes = [0] * len(units)
        running = 0
        for index in range(len(units) - 1, -1, -1):
            unit = units[index]
            if unit.kind in ("section", "heading"):
                running = 0
                continue
            running += unit.tokens
            sizes[index] = running
            if unit.kind == "letter":
                running = 0
        return sizes

    def _windows(self, text: str, start: int, end: int) -> list[tuple[str, int]]:
        """Cut text[start:end] into windows of at most `budget` tokens with overlap.

        Each window comes with its offset in `text`."""
        span = text[start:end]
        offsets = self._encode([span], offsets=True)["offset_mapping"][0]
        count = len(offsets)
        budget = self.budget

        def word_start(i: int) -> bool:
            return i == 0 or offsets[i][0] > offsets[i - 1][1]

        pieces: list[tuple[str, int]] = []
        first = 0
        while first < count:
            last = min(first + budget, count)  # exclusive
            if last < count:
                last = self._cut_point(span, offsets, first, last, word_start)
            raw = span[offsets[first][0] : offsets[last - 1][1]]
            lead = len(raw) - len(raw.lstrip())
            pieces.append((raw.strip(), start + offsets[first][0] + lead))
            if last >= count:
                break
            first = self._overlap_start(span, offsets, first, last, word_start)
        return [(piece, offset) for piece, offset in pieces if piece]

    def _overlap_start(self, span, offsets, first, last, word_start) -> int:
        """Where the next window starts: `overlap` tokens back, moved to a line or word start."""
        target = max(last - self.overlap, first + 1)
        if self.overlap == 0:
            return last
        lines = [
            i
            for i in range(max(target - 16, first + 1), last)
            if "\n" in span[offsets[i - 1][1] : offsets[i][0]]
        ]
        if lines:
            return min(lines, key=lambda i: abs(i - target))
        for back in range(target, max(target - 12, first + 1) - 1, -1):
            if word_start(back):
                return back
        return target

    @staticmethod
    def _cut_point(span, offsets, first, last, word_start) -> int:
        budget = last - first

        def gap(i: int) -> str:
            return span[offsets[i - 1][1] : offsets[i][0]]

        for i in range(last, first + budget // 2, -1):
            if "\n" in gap(i):
                return i
        for i in range(last, first + (budget * 3) // 5, -1):
            if gap(i) and span[offsets[i - 1][0] : offsets[i - 1][1]] in {".", ";", ":", "?", "!"}:
                return i
        for i in range(last, first + budget // 2, -1):
            if word_start(i):
                return i
        return last

    def _finish(self, pieces: list[_Piece], title: str) -> list[Chunk]:
        if not pieces:
            return []
        prefixes = [self._prefix(piece.state, title) for piece in pieces]
        texts = [piece.text for piece in pieces]
        distinct = sorted({p for p in prefixes if p})
        prefix_tokens = {}
        if distinct:
            encoded = self._encode(distinct, offsets=True)
            for prefix, offsets in zip(distinct, encoded["offset_mapping"], strict=True):
                if len(offsets) > self.prefix_budget:
                    cut = offsets[self.prefix_budget - 1][1] if self.prefix_budget else 0
                    prefix_tokens[prefix] = prefix[:cut].rstrip()
                else:
                    prefix_tokens[prefix] = prefix
        embed_texts = []
        for text, prefix in zip(texts, prefixes, strict=True):
            short = prefix_tokens.get(prefix, "") if prefix else ""
            if short and not _starts_with_heading(text, prefix):
                embed_texts.append(f"{short}\n{text}")
            else:
                embed_texts.append(text)
        lengths = [len(ids) + SPECIAL_TOKENS for ids in self._encode(embed_texts)["input_ids"]]
        for i, (tokens, embed_text) in enumerate(zip(lengths, embed_texts, strict=True)):
            if tokens > self.window and embed_text != texts[i]:
                # A window cut inside a very long word can re-tokenize a little longer.
                embed_texts[i] = texts[i]
                lengths[i] = len(self._encode([texts[i]])["input_ids"][0]) + SPECIAL_TOKENS
        chunks = []
        for piece, embed_text, tokens in zip(pieces, embed_texts, lengths, strict=True):
            state = piece.state
            if tokens > self.window:
                raise AssertionError(
                    f"chunk of {tokens} tokens exceeds the embedder window of {self.window}: "
                    f"{embed_text[:80]!r}"
                )
            chunks.append(
                Chunk(
                    text=piece.text,
                    embed_text=embed_text,
                    page=piece.page,
                    section=state.section,
                    part=state.part or part_of(state.section),
                    subpart=state.subpart,
                    heading=state.heading,
                    tokens=tokens,
                    char_start=piece.start,
                    para_path=piece.para_path,
                )
            )
        return chunks

    @staticmethod
    def _prefix(state: _State, title: str) -> str:
        return (state.heading or title or "").strip()


def _definition_entry(text: str, heading: str | None) -> bool:
    """Is the unit an entry of a definitions section ("(38) Repeater. An amateur station ..."
    under "§ 97.3 Definitions.")? Each entry is chunked alone: among six definitions in one
    chunk, "Underway. A vessel is underway when ..." was found for no question about it
    (§ 80.5), its words a sixth of the chunk's vector."""
    if not heading or not _DEFINITIONS_HEADING.search(heading):
        return False
    match = _DEFINITION_ENTRY.match(text)
    return bool(match) and len(match.group("term").split()) <= 8


def definition_resets(text: str, units: list[_Unit], heading: str | None = None) -> set[int]:
    """Offsets of the unmarked entries of a definitions section ("Underway. A vessel is ..."):
    each closes the paragraphs before it. § 80.5 lists its terms without markers, and a few
    have numbered sub-paragraphs; without the reset, every term after "Urgency signal. (1)
    ... (4) ..." was read as its paragraph (4)."""
    resets: set[int] = set()
    for unit in units:
        if unit.kind in ("section", "heading"):
            heading = unit.heading
            continue
        body = text[unit.start : unit.end]
        if not _MARKER.match(body) and _definition_entry(body, heading):
            resets.add(unit.start)
    return resets


def _starts_with_heading(text: str, heading: str) -> bool:
    return text.lstrip("# ").startswith(heading[: max(8, len(heading) // 2)])


# Paragraph paths ------------------------------------------------------------------------
# eCFR paragraph levels: (a) (1) (i) (A) (1) (i). Level 1 letters and level 3 roman numerals
# share "(i)", "(v)", "(x)", "(l)": the sequence decides ("(i)" after "(h)" is a letter,
# "(i)" under "(1)" is roman), and where both fit, the next marker does ("(ii)" follows a
# roman "(i)", "(j)" or "(1)" a lettered one).

_MARKER_TEXT = r"(?:[a-z]{1,2}|[ivxl]{3,6}|[A-Z]{1,2}|\d{1,3})"
# "(b)", "(c)(1)", "(i)(A)" at the start of a line.
_MARKER_CHAIN = re.compile(rf"(?:\({_MARKER_TEXT}\))+(?=\s|$)")
_ONE_MARKER = re.compile(r"\(([^()]+)\)")
# "(1) Fixed point-to-point operation. (i) Systems ...", "(h) 60 m band: (1) In the ...":
# a paragraph heading, then a marker.
_INLINE_MARKER = re.compile(rf"[A-Z0-9][^.;:()]{{0,80}}[.:]\s+(\({_MARKER_TEXT}\))\s")


def _roman(number: int) -> str:
    out = ""
    for value, digits in ((50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv")):
        while number >= value:
            out, number = out + digits, number - value
    return out + "i" * number


_ROMAN_VALUE = {_roman(n): n for n in range(1, 90)}


def _letter_value(marker: str) -> int | None:
    """a=1 ... z=26, aa=27, bb=28 (the eCFR's doubled letters); None if not letters."""
    lower = marker.lower()
    if len(lower) == 1 and lower.isalpha():
        return ord(lower) - 96
    if len(lower) == 2 and lower[0] == lower[1] and lower.isalpha():
        return 26 + ord(lower[0]) - 96
    return None


def _candidate_levels(marker: str) -> tuple[int, ...]:
    if marker.isdigit():
        return (2, 5)
    if marker.isupper():
        return (4,)
    if marker in _ROMAN_VALUE:
        return (1, 3, 6) if _letter_value(marker) else (3, 6)
    return (1,)


def _marker_value(marker: str, level: int) -> int | None:
    if level in (2, 5):
        return int(marker) if marker.isdigit() else None
    if level in (3, 6):
        return _ROMAN_VALUE.get(marker)
    return _letter_value(marker)


def _roman_by_lookahead(marker: str, next_marker: str | None, after_colon: bool) -> bool:
    """Is an ambiguous "(i)" roman? "(ii)" or "(A)" next says yes; "(j)" or "(1)" says no."""
    value = _ROMAN_VALUE[marker]
    if next_marker is not None:
        if _ROMAN_VALUE.get(next_marker) == value + 1 or next_marker == "A":
            return True
        if _letter_value(next_marker) == (_letter_value(marker) or 0) + 1:
            return False
    return after_colon  # "The plan must include:" introduces sub-items


class ParagraphPath:
    """The open paragraph path, e.g. (b)(1)(i), as the markers of a section are read in order."""

    def __init__(self, path: Sequence[str] = ()):
        self.stack: list[tuple[int, str]] = []  # (level 1-6, marker without parentheses)
        for marker in path:  # ancestors: each one a level below the one before
            self.push(marker.strip("()"), deeper=True)

    @property
    def path(self) -> list[str]:
        return [f"({marker})" for _, marker in self.stack]

    @property
    def depth(self) -> int:
        return self.stack[-1][0] if self.stack else 0

    def push(
        self,
        marker: str,
        next_marker: str | None = None,
        after_colon: bool = False,
        deeper: bool = False,
    ) -> int:
        """Open `marker` (closing its siblings' subtrees); `deeper`: it is a child of the path."""
        level = self._level(marker, next_marker, after_colon, deeper)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, marker))
        return level

    def _parent_open(self, level: int) -> bool:
        levels = {lvl for lvl, _ in self.stack}
        if level == 1 or not self.stack:
            return True
        if level == 3:  # "(a) ...: (i) ..." skips the numbered level now and then
            return bool(levels & {1, 2})
        return level - 1 in levels

    def _continues(self, level: int, marker: str) -> bool:
        value = _marker_value(marker, level)
        if value is None or not self._parent_open(level):
            return False
        current = next((m for lvl, m in self.stack if lvl == level), None)
        if current is None:
            return value == 1
        return value == (_marker_value(current, level) or 0) + 1

    def _level(self, marker: str, next_marker: str | None, after_colon: bool, deeper: bool) -> int:
        candidates = _candidate_levels(marker)
        if deeper:
            below = [level for level in candidates if level > self.depth]
            if below:
                return below[0]
        fits = [level for level in candidates if self._continues(level, marker)]
        if not self.stack and 1 in candidates and 3 in candidates:
            fits = [1, 3]  # a text that starts at "(i)": the next marker tells
        if len(fits) == 1:
            return fits[0]
        if 1 in fits and 3 in fits:
            return 3 if _roman_by_lookahead(marker, next_marker, after_colon) else 1
        if fits:
            return fits[-1]  # "(2)" continuing both (1) lists: the inner one
        # No sequence fits: skipped letters ((b) then (f) in definitions), a list cut apart.
        if marker.isdigit():
            return 5 if self.depth >= 4 else 2
        if 3 in candidates and (1 not in candidates or len(marker) > 1):
            return 6 if self.depth >= 5 else 3
        return candidates[0]


@dataclass
class ParagraphStart:
    """Where a paragraph (or a heading, which closes all paragraphs) starts in a text."""

    start: int  # offset of its first marker (or of the heading)
    body: int  # offset of its own text, after the markers
    parent: list[str]  # the path it is opened under: ["(b)"] for "(2)" under (b)
    path: list[str]  # the path it opens: ["(b)", "(2)"]; [] for a heading
    heading: bool = False


def line_markers(line: str) -> tuple[list[str], int]:
    """Markers that open a line ("(c)(1) The ..." -> ["c", "1"]) and where its text starts."""
    match = _MARKER_CHAIN.match(line)
    if not match:
        return [], 0
    markers = _ONE_MARKER.findall(match.group(0))
    return markers, match.end() + (len(line[match.end() :]) - len(line[match.end() :].lstrip()))


def _marker_spots(text: str, headings: set[int]) -> list[tuple[int, int, list[str], bool]]:
    """(start, body, markers, after_colon) per marker line; markers [] for a heading line."""
    spots: list[tuple[int, int, list[str], bool]] = []
    previous = ""
    position = 0
    for line in text.splitlines(keepends=True):
        start, position = position, position + len(line)
        stripped = line.strip()
        if not stripped:
            continue
        offset = start + len(line) - len(line.lstrip())
        if offset in headings:
            spots.append((offset, offset, [], False))
        else:
            markers, body = line_markers(stripped)
            if markers:
                spots.append((offset, offset + body, markers, previous.endswith(":")))
                inline = _INLINE_MARKER.match(stripped, body)
                if inline:
                    marker_at = offset + inline.start(1)
                    spots.append((marker_at, offset + inline.end(), [inline.group(1)[1:-1]], False))
        previous = stripped
    return spots


def scan_paragraphs(
    text: str,
    start_path: Sequence[str] = (),
    headings: set[int] | None = None,
    first_is_child: bool = False,
    resets: set[int] | None = None,
) -> list[ParagraphStart]:
    """Every paragraph start of `text` with its full path, in order.

    `start_path` is the path open where `text` begins; `headings` the offsets of heading lines
    (which close every paragraph). `first_is_child`: a marker at the very start of `text` opens
    a child of `start_path` (how a chunk's `para_path` is meant; [] there: a top paragraph).
    `resets`: offsets of unmarked paragraphs that close every paragraph (`definition_resets`).
    """
    spots = _marker_spots(text, headings or set())
    spots += [(offset, offset, None, False) for offset in sorted(resets or ())]
    spots.sort(key=lambda spot: spot[0])
    tracker = ParagraphPath(start_path)
    begin = len(text) - len(text.lstrip())
    out: list[ParagraphStart] = []
    for index, (start, body, markers, after_colon) in enumerate(spots):
        if markers is None:  # an unmarked top paragraph
            tracker = ParagraphPath()
            out.append(ParagraphStart(start, body, [], []))
            continue
        if not markers:
            tracker = ParagraphPath()
            out.append(ParagraphStart(start, body, [], [], heading=True))
            continue
        following = next((s[2][0] for s in spots[index + 1 :] if s[2]), None)
        for position, marker in enumerate(markers):
            next_marker = markers[position + 1] if position + 1 < len(markers) else following
            deeper = first_is_child and start == begin and position == 0
            tracker.push(marker, next_marker, after_colon and position == 0, deeper)
        path = tracker.path
        out.append(ParagraphStart(start, body, path[: max(0, len(path) - len(markers))], path))
    return out


def path_breaks(units: list[_Unit]) -> set[int]:
    """Offsets of the headings that close all paragraphs (every heading: inside a rule, a
    bare numbered line is a table caption, no heading; `split_units`)."""
    return {u.start for u in units if u.kind in ("section", "heading")}


def path_at(starts: list[ParagraphStart], offset: int, before: Sequence[str] = ()) -> list[str]:
    """The paragraph path open at `offset`: a paragraph's parent where it starts right there."""
    index = bisect_right([s.start for s in starts], offset) - 1
    if index < 0:
        return list(before)
    start = starts[index]
    return list(start.parent if start.start == offset else start.path)
