"""Generate, then verify: the user gets only what the passages support.

Each sentence of the model's draft is scored against every passage (`support_score`: MiniLM
cosine combined with the share of the sentence's claim, i.e. its words and numbers that the
question does not already state, found in the passage; about -0.2 .. 1, 1.0 for a verbatim
copy). A sentence is kept when its best passage reaches SUPPORT_THRESHOLD *and* every number
in it appears in that passage after unit normalisation (1.5 kW == 1500 W): a hard gate, since
a paraphrase with the wrong number scores high on meaning. Sentences that only restate the
question, loop, or were cut off are dropped before scoring. Kept sentences end with the
`[n]` of their passage (the model's own marker when it is right). When nothing survives,
the answer is the best passage quoted verbatim with its pinpoint:

    § 97.313(b): "No station may transmit with a transmitter power exceeding 1.5 kW PEP." [1]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from chains.citations import MARKER, marker_numbers
from chains.evidence import Passage, content_tokens, encode_texts, rank_passages, sentence_spans

# Support needed to keep a sentence, on the `support_score` scale (with the question
# given). Measured on eCFR §§ 97.215, 97.313, 80.215 with MiniLM: faithful paraphrases
# 0.49-0.97 (most above 0.56), verbatim copies 1.0, sentences about something else or
# restating the question 0.11-0.47, a contradiction 0.37. Errs strict: a dropped true
# sentence costs little (the answer falls back to the verbatim quote), a kept false one
# misleads. Wrong numbers are the numbers gate's job, not this one's. Calibrate on gold data.
SUPPORT_THRESHOLD = 0.5
# Weights of `support_score`: meaning (cosine) and wording (share of the sentence's words
# found in the passage, which rewards quoting and punishes invented details).
W_COSINE = 0.6
W_CONTAINMENT = 0.4
# The model's own [n] is kept when its passage scores within this of the best one.
MARKER_MARGIN = 0.05
# A second quote in an extractive answer: only this close to the first one's score.
QUOTE_MARGIN = 0.05
MAX_SENTENCES = 24  # a looping 135M model writes hundreds; more are not checked
MAX_SENTENCE_CHARS = 500  # longer "sentences" are run-on garbage
MIN_WORDS = 3

# Numbers and units ----------------------------------------------------------------------

_UNITS: list[tuple[str, str, float]] = [  # (pattern, canonical unit, factor to it)
    (r"dB[µμu]V/m", "dBuV/m", 1),
    (r"dB[µμu]V", "dBuV", 1),
    (r"dBm", "dBm", 1),
    (r"dBW", "dBW", 1),
    (r"dBi", "dBi", 1),
    (r"dBd", "dBd", 1),
    (r"dBc", "dBc", 1),
    (r"dB", "dB", 1),
    (r"[µμu]V/m", "V/m", 1e-6),
    (r"mV/m", "V/m", 1e-3),
    (r"V/m", "V/m", 1),
    (r"(?i:micro-?volts?\s*(?:/|per)\s*met(?:er|re))", "V/m", 1e-6),
    (r"(?i:milli-?volts?\s*(?:/|per)\s*met(?:er|re))", "V/m", 1e-3),
    (r"(?i:volts?\s*(?:/|per)\s*met(?:er|re))", "V/m", 1),
    (r"A/m", "A/m", 1),
    (r"mW/cm(?:²|2|\^2)", "mW/cm2", 1),
    (r"W/m(?:²|2|\^2)", "W/m2", 1),
    (r"W/kg", "W/kg", 1),
    (r"kW", "W", 1e3),
    (r"MW", "W", 1e6),
    (r"mW", "W", 1e-3),
    (r"[µμu]W", "W", 1e-6),
    (r"nW", "W", 1e-9),
    (r"W", "W", 1),
    (r"(?i:kilo-?watts?)", "W", 1e3),
    (r"(?i:mega-?watts?)", "W", 1e6),
    (r"(?i:milli-?watts?)", "W", 1e-3),
    (r"(?i:micro-?watts?)", "W", 1e-6),
    (r"(?i:watts?)", "W", 1),
    (r"THz", "Hz", 1e12),
    (r"GHz", "Hz", 1e9),
    (r"MHz", "Hz", 1e6),
    (r"kHz", "Hz", 1e3),
    (r"Hz", "Hz", 1),
    (r"(?i:gigahertz)", "Hz", 1e9),
    (r"(?i:megahertz)", "Hz", 1e6),
    (r"(?i:kilohertz)", "Hz", 1e3),
    (r"(?i:hertz)", "Hz", 1),
    (r"kV", "V", 1e3),
    (r"mV", "V", 1e-3),
    (r"[µμu]V", "V", 1e-6),
    (r"(?i:kilo-?volts?)", "V", 1e3),
    (r"(?i:milli-?volts?)", "V", 1e-3),
    (r"(?i:micro-?volts?)", "V", 1e-6),
    (r"(?i:volts?)", "V", 1),
    (r"V", "V", 1),
    (r"%", "%", 1),
    (r"(?i:per\s?cent)", "%", 1),
    (r"km", "m", 1e3),
    (r"cm", "m", 1e-2),
    (r"mm", "m", 1e-3),
    (r"(?i:kilomet(?:er|re)s?)", "m", 1e3),
    (r"(?i:centimet(?:er|re)s?)", "m", 1e-2),
    (r"(?i:millimet(?:er|re)s?)", "m", 1e-3),
    (r"(?i:met(?:er|re)s?)", "m", 1),
    (r"m", "m", 1),
    (r"(?i:miles?)", "mi", 1),
    (r"(?i:feet|foot|ft)", "ft", 1),
    (r"(?i:inch(?:es)?)", "in", 1),
    (r"ms", "s", 1e-3),
    (r"[µμu]s", "s", 1e-6),
    (r"(?i:milliseconds?)", "s", 1e-3),
    (r"(?i:microseconds?)", "s", 1e-6),
    (r"(?i:seconds?|secs?)", "s", 1),
    (r"s", "s", 1),
    (r"(?i:minutes?|mins?)", "s", 60),
    (r"(?i:hours?|hrs?)", "s", 3600),
    (r"(?i:days?)", "day", 1),
    (r"(?i:months?)", "month", 1),
    (r"(?i:years?)", "year", 1),
    (r"kg", "g", 1e3),
    (r"(?i:grams?)", "g", 1),
    (r"g", "g", 1),
    (r"°", "deg", 1),
    (r"(?i:degrees?)", "deg", 1),
]
_UNIT_GROUP = "|".join(f"(?P<u{i}>{pattern})" for i, (pattern, _, _) in enumerate(_UNITS))
_NUMBER = r"(?:(?<![^\s(\[=<>≤≥~])[-−])?(?<![\w.,/])\d+(?:,\d{3})*(?:\.\d+)?"
_RANGE = r"\s*(?:-|–|—|\bto\b|\bthrough\b)\s*"
_QUANTITY = re.compile(
    rf"(?P<a>{_NUMBER})(?:{_RANGE}(?P<b>{_NUMBER}))?(?:\s?(?:{_UNIT_GROUP})(?![A-Za-z0-9]))?"
)
_WORD_VALUES = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "twenty-five": 25,
    "fifty": 50, "one hundred": 100, "a hundred": 100, "hundred": 100,
}  # fmt: skip
_WORD_QUANTITY = re.compile(
    r"(?i:\b(?P<w>twenty-five|one hundred|a hundred|"
    + "|".join(w for w in _WORD_VALUES if " " not in w and w != "twenty-five")
    + rf"))\s+(?:{_UNIT_GROUP})(?![A-Za-z0-9])"
)
_UNIT_ANY = "|".join(pattern for pattern, _, _ in _UNITS)
_ID = r"\d{1,3}\.\d{1,4}[a-z]?(?:\([a-zA-Z0-9]{1,6}\))*"
_ID_ONLY = re.compile(r"\d{1,3}\.\d{1,4}[a-z]?")
# Another id of a list ("§§ 15.211, 15.213, and 15.221"), but not "§ 97.313, 1.5 kW".
_MORE_IDS = (
    rf"(?:\s*,?\s*(?:and|or|through|to|-|–)?\s*(?:§\s*)?{_ID}"
    rf"(?!\s?(?:{_UNIT_ANY})(?![A-Za-z0-9])))"
)
# "§ 97.313(b)", "§§ 15.211, 15.213, and 15.221", "Sections 2.1091 and 2.1093", "47 CFR 97.313"
_SECTION_REF = re.compile(
    rf"(?:§§?|\b(?i:sections?|secs?\.)|\b\d{{1,2}}\s*C\.?F\.?R\.?\s*(?:§§?)?)\s*"
    rf"(?P<ids>{_ID}{_MORE_IDS}*)"
)
_CFR_TITLE = re.compile(r"\b\d{1,2}\s*C\.?F\.?R\.?")
_PART_REF = re.compile(r"\b(?i:parts?)\s+(?P<ids>\d{1,3}(?:\s*(?:,|and|or)\s*\d{1,3})*)\b")
_PARAGRAPH_REF = re.compile(
    r"\b(?i:paragraphs?)\s+(?:\([a-zA-Z0-9]{1,6}\))+"
    r"(?:\s*(?:,|and|or|through)\s*(?:\([a-zA-Z0-9]{1,6}\))+)*"
)
# "(g)(4)", "(1)" as paragraph markers (not amounts).
_MARKER_CHAIN = re.compile(r"(?:(?<=\))|(?<!\S))(?:\([a-zA-Z0-9]{1,4}\)){1,6}(?=[\s,.;:)]|$)")


@dataclass(frozen=True)
class Quantity:
    text: str  # as written: "1.5 kW"
    value: float  # normalised to `unit`: 1500.0
    unit: str | None  # canonical unit ("W", "Hz", "dBm"); None for a bare number
    raw: float  # the number as written: 1.5
    kind: str = "quantity"  # "quantity" | "number" | "section" | "part"
    ref: str | None = None  # "97.313" for a section, "15" for a part
    span: tuple[int, int] = (0, 0)  # where it is written in the text


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _unit_of(match: re.Match) -> tuple[str, float] | None:
    for index, (_, canonical, factor) in enumerate(_UNITS):
        if match.group(f"u{index}") is not None:
            return canonical, factor
    return None


def _to_float(number: str) -> float:
    return float(number.replace(",", "").replace("−", "-"))


def _ref(match: re.Match, kind: str, ref: str) -> Quantity:
    return Quantity(match.group(0).strip(), 0.0, None, 0.0, kind, ref, match.span())


def _references(text: str) -> tuple[str, list[Quantity]]:
    """Section, part and paragraph references found and blanked out (they are not amounts)."""
    refs: list[Quantity] = []
    for match in list(_SECTION_REF.finditer(text)):
        for section in _ID_ONLY.findall(match.group("ids")):
            refs.append(_ref(match, "section", section))
        text = _blank(text, match.start(), match.end())
    for match in list(_PART_REF.finditer(text)):
        for part in re.findall(r"\d{1,3}", match.group("ids")):
            refs.append(_ref(match, "part", part))
        text = _blank(text, match.start(), match.end())
    for pattern in (_CFR_TITLE, _PARAGRAPH_REF, _MARKER_CHAIN):
        for match in list(pattern.finditer(text)):
            text = _blank(text, match.start(), match.end())
    return text, refs


def extract_quantities(text: str) -> list[Quantity]:
    """Numbers of a text, with units normalised ("1.5 kW" -> 1500 W; "156-162 MHz" -> two).

    Citation markers, section/part ids and paragraph markers are references, not amounts:
    they come back as kind "section"/"part" (or not at all).
    """
    text = MARKER.sub(lambda m: " " * len(m.group(0)), text or "")
    text, found = _references(text)
    for match in _WORD_QUANTITY.finditer(text):
        unit, factor = _unit_of(match) or (None, 1.0)
        raw = float(_WORD_VALUES[match.group("w").lower()])
        found.append(Quantity(match.group(0), raw * factor, unit, raw, span=match.span()))
    for match in _QUANTITY.finditer(text):
        after = text[match.end() : match.end() + 1]
        unit_factor = _unit_of(match)
        if unit_factor is None and after.isalpha():  # "3rd", "5G": not an amount
            continue
        unit, factor = unit_factor or (None, 1.0)
        for key in ("a", "b"):
            if match.group(key):
                raw = _to_float(match.group(key))
                kind = "quantity" if unit else "number"
                written = match.group(0).strip()
                found.append(Quantity(written, raw * factor, unit, raw, kind, span=match.span()))
    return found


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@dataclass
class PassageFacts:
    """What a passage states, for the numbers gate."""

    quantities: list[Quantity]
    units: set[str]  # canonical units named anywhere (table headers: "Quasi-peak (dBμV)")
    sections: set[str]
    parts: set[str]


_UNIT_MENTION = re.compile(rf"(?<![A-Za-z0-9'’])(?:{_UNIT_GROUP})(?![A-Za-z0-9])")


def passage_facts(passage: Any) -> PassageFacts:
    text = "\n".join(t for t in (getattr(passage, "heading", None), passage.evidence) if t)
    found = extract_quantities(text)
    units = {u for m in _UNIT_MENTION.finditer(text) if (u := (_unit_of(m) or (None,))[0])}
    sections = {q.ref for q in found if q.kind == "section" and q.ref}
    section = getattr(passage, "section", None)
    if section:
        sections.add(section)
    parts = {q.ref for q in found if q.kind == "part" and q.ref}
    if section and "." in section:
        parts.add(section.split(".", 1)[0])
    amounts = [q for q in found if q.kind in ("quantity", "number")]
    return PassageFacts(amounts, units, sections, parts)


def quantity_supported(quantity: Quantity, passage: Any, facts: PassageFacts | None = None) -> bool:
    """Does the passage state this number (same value after unit normalisation)?"""
    facts = facts or passage_facts(passage)
    if quantity.kind == "section":
        return quantity.ref in facts.sections
    if quantity.kind == "part":
        return quantity.ref in facts.parts or any(
            q.unit is None and _close(q.raw, float(quantity.ref or 0)) for q in facts.quantities
        )
    if quantity.unit is None:  # a bare number: any mention of the value, or the section id
        if quantity.text in facts.sections:
            return True
        return any(
            _close(q.raw, quantity.raw) or _close(q.value, quantity.raw) for q in facts.quantities
        )
    for q in facts.quantities:
        if q.unit == quantity.unit and _close(q.value, quantity.value):
            return True
        # A table cell "66" under a header "(dBμV)" states 66 dBμV.
        if q.unit is None and quantity.unit in facts.units and _close(q.raw, quantity.raw):
            return True
    return False


# Bound qualifiers: "at least 8 but not more than 25 watts" makes 8 W a floor and 25 W a
# ceiling. A sentence that calls a floor the maximum (a real SmolLM2 draft: "Maximum power of
# a ship station on 156-162 MHz is 8 Watts") states a number the passage holds, wrongly.
_LOWER_BOUND = (
    r"at\s+least|not\s+less\s+than|no\s+less\s+than|minimum(?:\s+of)?|min\.|as\s+low\s+as"
)
_UPPER_BOUND = (
    r"not\s+more\s+than|no\s+more\s+than|not\s+(?:to\s+)?exceed(?:ing)?|exceeding|"
    r"maximum(?:\s+of)?|max\.|up\s+to|at\s+most|limited\s+to|no\s+greater\s+than"
)
_BOUND = re.compile(rf"(?P<low>\b(?:{_LOWER_BOUND}))|(?P<high>\b(?:{_UPPER_BOUND}))", re.I)
PASSAGE_BOUND_WINDOW = 40  # characters before a passage's number that qualify it


def bound_of(text: str, quantity: Quantity, window: int | None = None) -> str | None:
    """ "floor", "ceiling" or None: the nearest bound qualifier before the number."""
    start = quantity.span[0]
    before = text[max(0, start - window) : start] if window else text[:start]
    found = None
    for match in _BOUND.finditer(before):
        found = "floor" if match.group("low") else "ceiling"
    return found


def bound_conflicts(sentence: str, passage: Any) -> list[Quantity]:
    """The sentence's numbers that the passage states with the opposite bound."""
    text = passage.evidence
    stated = [q for q in extract_quantities(text) if q.kind in ("quantity", "number")]
    conflicts = []
    for quantity in extract_quantities(sentence):
        claimed = bound_of(sentence, quantity) if quantity.kind == "quantity" else None
        if claimed is None:
            continue
        for q in stated:
            same = q.unit == quantity.unit and _close(q.value, quantity.value)
            # "at least 8 but not more than 25 watts": the 8 takes the unit written after it.
            if same or (q.unit is None and _close(q.raw, quantity.raw)):
                held = bound_of(text, q, PASSAGE_BOUND_WINDOW)
                if held is not None and held != claimed:
                    conflicts.append(quantity)
                    break
    return conflicts


def missing_quantities(
    text: str, passage: Any, facts: PassageFacts | None = None
) -> list[Quantity]:
    facts = facts or passage_facts(passage)
    return [q for q in extract_quantities(text) if not quantity_supported(q, passage, facts)]


# Support --------------------------------------------------------------------------------


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def _words_outside(text: str, quantities: list[Quantity]) -> set[str]:
    """Content words of `text` that are not part of a number, unit or section reference."""
    for quantity in quantities:
        text = _blank(text, *quantity.span)
    return content_tokens(text)


# Words that point at the answer's form, not at a rule ("... can be determined by the table
# below", "the source mentioned earlier"): no claim, so no evidence of support either.
_META = content_tokens(
    "below above following table tables listed list shown show given determined determine "
    "refer refers see source sources number numbers information answer question based "
    "provided according mentioned earlier example detail details cited citing"
)


def _same(a: Quantity, b: Quantity) -> bool:
    if a.kind in ("section", "part") or b.kind in ("section", "part"):
        return a.kind == b.kind and a.ref == b.ref
    return a.unit == b.unit and _close(a.value, b.value)


@dataclass
class _Sentence:
    """A sentence prepared for scoring against many passages.

    Its claim is what it adds to the question: words and numbers it restates from the
    question are no evidence of support ("No power limit applies on the 60 m band." adds
    only "no"); every number still passes the numbers gate.
    """

    text: str
    norm: str
    words: set[str]  # content words not in the question (nor in a number or reference)
    quantities: list[Quantity]  # all of them: the numbers gate
    claims: list[Quantity]  # those the question does not state

    @classmethod
    def of(cls, text: str, question: str = "") -> _Sentence:
        quantities = extract_quantities(text)
        asked = extract_quantities(question)
        words = _words_outside(text, quantities) - _words_outside(question, asked) - _META
        claims = [q for q in quantities if not any(_same(q, a) for a in asked)]
        return cls(text, _normalised(text), words, quantities, claims)

    @property
    def restates(self) -> bool:
        """Says nothing the question does not: no claim to verify."""
        return not self.words and not self.claims


def _containment(sentence: _Sentence, passage_words: set[str], supported: int) -> float:
    """Share of the sentence's claim (new words and numbers) that the passage has (0 .. 1);
    a number counts when the passage states its value (1.5 kW for 1500 watts)."""
    total = len(sentence.words) + len(sentence.claims)
    if not total:
        return 0.0
    return (len(sentence.words & passage_words) + supported) / total


def _support_text(passage: Any) -> str:
    heading = (getattr(passage, "heading", None) or "").lstrip("# ").strip()
    return f"{heading}\n{passage.evidence}" if heading else passage.evidence


def _combine(sentence: _Sentence, passage_norm: str, cosine: float, contained: float) -> float:
    if len(sentence.norm) >= 20 and f" {sentence.norm} " in f" {passage_norm} ":
        return 1.0  # a verbatim quote (markers and punctuation aside)
    return W_COSINE * cosine + W_CONTAINMENT * contained


def support_score(
    sentence: str,
    passage: Any,
    embedder=None,
    cosine: float | None = None,
    question: str = "",
) -> float:
    """How well `passage` supports `sentence`: about -0.2 .. 1 (1.0: a verbatim copy).

    W_COSINE * MiniLM cosine(sentence, heading + passage) + W_CONTAINMENT * the share of the
    sentence's claim (its words and numbers not already in `question`) found in heading +
    passage. The numbers gate is separate (`missing_quantities`). `cosine` may be given by
    batch callers.
    """
    prepared = _Sentence.of(strip_markers(sentence), question)
    if not prepared.norm:
        return 0.0
    passage_text = _support_text(passage)
    if cosine is None:
        vectors = encode_texts([prepared.text, passage_text], embedder)
        cosine = float(vectors[0] @ vectors[1])
    facts = passage_facts(passage)
    supported = sum(quantity_supported(q, passage, facts) for q in prepared.claims)
    contained = _containment(prepared, content_tokens(passage_text), supported)
    return _combine(prepared, _normalised(passage_text), cosine, contained)


# Drafts ---------------------------------------------------------------------------------


def strip_markers(text: str) -> str:
    """The text without [n] markers: "like [1], [2], and [3] helps" -> "like, and helps"."""
    text = re.sub(r"[ \t]{2,}", " ", MARKER.sub("", text))
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return re.sub(r",(?:\s*,)+", ",", text).strip()


_FINISHED = set('.!?…:;"”’)]')  # how a finished sentence (or its [n]) ends
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_LEAD = re.compile(r"^\s*(?i:answer|response)\s*:\s*")
# "... 1 W. [1] Next" -> "... 1 W [1]. Next": the marker stays with its sentence.
_MARKER_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[[^\]\n]{1,20}\])+)")


@dataclass
class _Candidate:
    text: str  # markers stripped
    cited: list[int]  # the model's markers in it


def _draft_sentences(draft: str) -> tuple[list[_Candidate], list[dict]]:
    """Unique, checkable sentences of a draft, and the ones dropped before scoring."""
    draft = _MARKER_AFTER_STOP.sub(r"\2\1", draft or "")
    # Generation cut at the token limit stops mid-sentence: that last piece is no claim.
    cut = bool(draft.strip()) and draft.rstrip()[-1] not in _FINISHED
    lines = [_LEAD.sub("", _BULLET.sub("", line)) for line in draft.splitlines()]
    last_line = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    candidates: list[_Candidate] = []
    dropped: list[dict] = []
    seen: set[str] = set()
    for index, line in enumerate(lines):
        spans = sentence_spans(line, min_chars=0)
        for position, (start, end) in enumerate(spans):
            raw = line[start:end].strip()
            text = strip_markers(raw)
            key = _normalised(text)
            if not key or key in seen:
                continue  # the small model loops: each sentence once
            seen.add(key)
            unfinished = cut and index == last_line and position == len(spans) - 1
            reason = "unfinished sentence" if unfinished else _unusable(text, key)
            if reason:
                dropped.append({"text": text[:300], "reason": reason})
                continue
            cited = [n for m in MARKER.finditer(raw) for n in marker_numbers(m.group(1))]
            candidates.append(_Candidate(text, cited))
    if len(candidates) > MAX_SENTENCES:
        rest = candidates[MAX_SENTENCES:]
        dropped.append({"text": rest[0].text[:300], "reason": f"{len(rest)} more not checked"})
        candidates = candidates[:MAX_SENTENCES]
    return candidates, dropped


def _unusable(text: str, key: str) -> str | None:
    words = key.split()
    if len(text) > MAX_SENTENCE_CHARS:
        return "too long to check"
    if len(words) < MIN_WORDS:
        return "too short"
    if len(words) >= 8 and len(set(words)) / len(words) < 0.5:
        return "repetitive"
    return None


# Verification ---------------------------------------------------------------------------


@dataclass
class SupportedSentence:
    text: str  # the sentence, markers stripped
    n: int  # the passage that supports it
    score: float  # support_score against that passage
    model_n: list[int] = field(default_factory=list)  # the markers the model gave it


@dataclass
class Verification:
    answer: str  # kept sentences with [n], or verbatim quotes
    sentences: list[SupportedSentence] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # {"text", "reason"}
    fallback: bool = False  # True: the answer is quoted passages, not the model's sentences
    cited: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def number_passages(passages: Sequence[Passage]) -> list[Passage]:
    """Give passages without `n` the next free number (1-based); returns them in order."""
    used = {p.n for p in passages if p.n is not None}
    free = (i for i in range(1, 10_000) if i not in used)
    for passage in passages:
        if passage.n is None:
            passage.n = next(free)
    return list(passages)


def _choose(
    candidate: _Candidate,
    scores: np.ndarray,
    missing: list[list[Quantity]],
    passages: Sequence[Passage],
    threshold: float,
) -> tuple[int | None, str | None]:
    """Index of the passage that supports the sentence, or the reason there is none."""
    order = [int(i) for i in np.argsort(-scores)]
    above = [i for i in order if scores[i] >= threshold]
    eligible = [i for i in above if not missing[i]]
    if not eligible:
        best = above[0] if above else order[0]
        n, score = passages[best].n, scores[best]
        if missing[best]:  # the closest passage states other numbers: say which is unsupported
            return (
                None,
                f"number {missing[best][0].text} not in passage [{n}] (support {score:.2f})",
            )
        return None, f"no supporting passage (best [{n}]: {score:.2f})"
    top = eligible[0]
    for index in eligible:  # the model's own marker, when it is (nearly) as good
        if passages[index].n in candidate.cited and scores[index] >= scores[top] - MARKER_MARGIN:
            return index, None
    return top, None


def _scores(
    sentences: list[_Sentence], passages: Sequence[Passage], facts: list[PassageFacts], embedder
) -> tuple[np.ndarray, list[list[list[Quantity]]]]:
    """support_score of every sentence against every passage (one encode call), and the
    numbers of each sentence that each passage lacks."""
    texts = [_support_text(p) for p in passages]
    vectors = encode_texts([s.text for s in sentences] + texts, embedder)
    cosines = vectors[: len(sentences)] @ vectors[len(sentences) :].T
    passage_words = [content_tokens(t) for t in texts]
    passage_norms = [_normalised(t) for t in texts]
    scores = np.zeros((len(sentences), len(passages)))
    missing: list[list[list[Quantity]]] = []
    for i, sentence in enumerate(sentences):
        row = []
        for j, passage in enumerate(passages):
            lacking = [
                q for q in sentence.quantities if not quantity_supported(q, passage, facts[j])
            ]
            lacking += [q for q in bound_conflicts(sentence.text, passage) if q not in lacking]
            row.append(lacking)
            supported = sum(all(q is not m for m in lacking) for q in sentence.claims)
            contained = _containment(sentence, passage_words[j], supported)
            scores[i, j] = _combine(sentence, passage_norms[j], float(cosines[i, j]), contained)
        missing.append(row)
    return scores, missing


def verify_answer(
    question: str,
    draft: str,
    passages: Sequence[Passage],
    embedder=None,
    threshold: float = SUPPORT_THRESHOLD,
) -> Verification:
    """Keep the draft's supported sentences (with the right [n]); else quote the best passage.

    Passages without `n` are numbered here (number_passages)."""
    passages = number_passages(passages)
    candidates, dropped = _draft_sentences(draft)
    if not passages:
        dropped += [{"text": c.text, "reason": "no passages"} for c in candidates]
        return Verification(answer="", dropped=dropped, fallback=True)
    if not candidates and not dropped:
        dropped.append({"text": (draft or "")[:300], "reason": "empty draft"})
    kept = _judge(question, candidates, passages, embedder, threshold, dropped)
    if not kept:
        quoted = extractive_answer(question, passages, max_quotes=1, embedder=embedder)
        quoted.dropped = dropped + quoted.dropped
        return quoted
    answer = " ".join(f"{s.text} [{s.n}]" for s in kept)
    cited = list(dict.fromkeys(s.n for s in kept))
    return Verification(answer=answer, sentences=kept, dropped=dropped, cited=cited)


def _judge(
    question: str,
    candidates: list[_Candidate],
    passages: Sequence[Passage],
    embedder,
    threshold: float,
    dropped: list[dict],
) -> list[SupportedSentence]:
    """The supported sentences; the others go to `dropped` with their reason."""
    claims: list[tuple[_Candidate, _Sentence]] = []
    for candidate in candidates:
        sentence = _Sentence.of(candidate.text, question)
        if sentence.restates:  # "No power limit applies on the 60 m band." adds only "no"
            dropped.append({"text": candidate.text, "reason": "restates the question"})
        else:
            claims.append((candidate, sentence))
    if not claims:
        return []
    facts = [passage_facts(p) for p in passages]
    scores, missing = _scores([s for _, s in claims], passages, facts, embedder)
    kept: list[SupportedSentence] = []
    for (candidate, _), row, lacking in zip(claims, scores, missing, strict=True):
        index, reason = _choose(candidate, row, lacking, passages, threshold)
        if index is None:
            dropped.append({"text": candidate.text, "reason": reason})
        else:
            n = passages[index].n
            kept.append(SupportedSentence(candidate.text, n, float(row[index]), candidate.cited))
    return kept


def format_quote(passage: Passage) -> str:
    """`§ 97.313(b): "No station may ... 1.5 kW PEP." [1]`"""
    return f'{passage.pinpoint}: "{passage.quote}" [{passage.n}]'


def _ranked(question: str, passages: Sequence[Passage], embedder) -> list[Passage]:
    """Best first: by the scores rank_passages gave them (for this question, the caller's
    contract), else ranked now."""
    if any(p.dense_score is not None for p in passages):
        return sorted(passages, key=lambda p: -p.score)
    return rank_passages(question, passages, embedder, k=len(passages))


def extractive_answer(
    question: str, passages: Sequence[Passage], max_quotes: int = 2, embedder=None
) -> Verification:
    """Quotes only, no model: the top passage verbatim with its pinpoint and [n], and a
    second one when it scores within QUOTE_MARGIN of the first and is another paragraph."""
    passages = number_passages(passages)
    if not passages:
        return Verification(answer="", fallback=True)
    ranked = _ranked(question, passages, embedder)
    quotes = [ranked[0]]
    for passage in ranked[1:]:
        if len(quotes) >= max_quotes or passage.score < ranked[0].score - QUOTE_MARGIN:
            break
        if all((passage.section, passage.paragraph) != (q.section, q.paragraph) for q in quotes):
            quotes.append(passage)
    sentences = [SupportedSentence(p.quote, p.n, 1.0) for p in quotes]
    return Verification(
        answer="\n".join(format_quote(p) for p in quotes),
        sentences=sentences,
        fallback=True,
        cited=[p.n for p in quotes],
    )
