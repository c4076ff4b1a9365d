"""Numbers with units in regulatory text: extraction, unit normalisation, and whether a
passage states a number (the verifier's numbers gate, and a ranking signal).

"1.5 kW" == "1500 W"; "156-162 MHz" is two quantities; "§ 97.313", "Part 15", "(b)(1)" and
citation markers are references, not amounts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from chains.citations import MARKER

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
_BETWEEN_AND = re.compile(
    rf"(\bbetween\s+{_NUMBER}\s+)and(\s+{_NUMBER}\s?(?:{_UNIT_GROUP})(?![A-Za-z0-9]))", re.I
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


def blank_span(text: str, start: int, end: int) -> str:
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
        text = blank_span(text, match.start(), match.end())
    for match in list(_PART_REF.finditer(text)):
        for part in re.findall(r"\d{1,3}", match.group("ids")):
            refs.append(_ref(match, "part", part))
        text = blank_span(text, match.start(), match.end())
    for pattern in (_CFR_TITLE, _PARAGRAPH_REF, _MARKER_CHAIN):
        for match in list(pattern.finditer(text)):
            text = blank_span(text, match.start(), match.end())
    return text, refs


def extract_quantities(text: str) -> list[Quantity]:
    """Numbers of a text, with units normalised ("1.5 kW" -> 1500 W; "156-162 MHz" -> two).

    Citation markers, section/part ids and paragraph markers are references, not amounts:
    they come back as kind "section"/"part" (or not at all).
    """
    text = MARKER.sub(lambda m: " " * len(m.group(0)), text or "")
    text, found = _references(text)
    # "between 28.300 and 28.500 MHz" is the range "28.300 to 28.500 MHz" (same length: spans hold).
    text = _BETWEEN_AND.sub(lambda m: f"{m.group(1)}to {m.group(2)}", text)
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


def same_value(a: float, b: float) -> bool:
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
            q.unit is None and same_value(q.raw, float(quantity.ref or 0)) for q in facts.quantities
        )
    if quantity.unit is None:  # a bare number: any mention of the value, or the section id
        if quantity.text in facts.sections:
            return True
        return any(
            same_value(q.raw, quantity.raw) or same_value(q.value, quantity.raw)
            for q in facts.quantities
        )
    for q in facts.quantities:
        if q.unit == quantity.unit and same_value(q.value, quantity.value):
            return True
        # A table cell "66" under a header "(dBμV)" states 66 dBμV.
        if q.unit is None and quantity.unit in facts.units and same_value(q.raw, quantity.raw):
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
            same = q.unit == quantity.unit and same_value(q.value, quantity.value)
            # "at least 8 but not more than 25 watts": the 8 takes the unit written after it.
            if same or (q.unit is None and same_value(q.raw, quantity.raw)):
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


# Questions that ask for an amount: "how much/many/long/often/fast", "what is the maximum",
# "what power/frequency/limit". Their answer states a number; a passage or a sentence
# without one does not answer them (measured on the eCFR gold set: the top passage of
# "What is the maximum transmitter power any amateur station may use?" was § 97.313(a),
# "must use the minimum transmitter power necessary", not (b)'s 1.5 kW PEP).
_WANTS_AMOUNT = re.compile(
    r"\bhow\s+(?:much|many|long|often|fast|far|high|low|old|soon|large|big|wide)\b|"
    r"\bthe\s+(?:most|least|highest|lowest|longest|shortest)\b|"
    r"\b(?:maximum|minimum|max|min|limit|limits|power|frequency|frequencies|band|"
    r"distance|duration|deadline|rate|level|tolerance|bandwidth|field strength|speed)\b",
    re.IGNORECASE,
)


def wants_amount(question: str) -> bool:
    """Does the question ask for a number (a limit, a count, a time, a frequency)?"""
    return bool(_WANTS_AMOUNT.search(question or ""))


def states_amount(text: str, units: set[str] | None = None) -> bool:
    """Does the text state an amount (of one of `units`, when given)?"""
    return any(
        q.kind in ("quantity", "number") and (units is None or q.unit in units)
        for q in extract_quantities(text)
    )


# The unit an amount question asks for, from its words (None: any amount).
_ASKED_UNITS: list[tuple[re.Pattern, set[str]]] = [
    # First: "how much gain may an RF power amplifier provide" asks for dB, not watts.
    (re.compile(r"\b(?:dB|gain|attenuat\w*|below\s+the\s+(?:mean|fundamental))\b", re.I),
     {"dB", "dBc", "dBi", "dBd"}),
    (re.compile(r"\b(?:power|watts?|output|PEP|ERP|EIRP|e\.i\.r\.p)\b", re.I), {"W", "dBW", "dBm"}),
    (re.compile(r"\b(?:how\s+long|period|days?|years?|months?|minutes?|hours?|seconds?|"
                r"retain|kept|valid|term|expire|within\s+how)\b", re.I),
     {"s", "day", "month", "year"}),
    (re.compile(r"\b(?:frequency|frequencies|bandwidth|band|segment|channel|Hz)\b", re.I),
     {"Hz"}),
    (re.compile(r"\b(?:how\s+far|distance|height|radius|miles?|km|feet|meters?\s+of)\b", re.I),
     {"m", "ft", "mi"}),
]  # fmt: skip


def asked_units(question: str) -> set[str] | None:
    """The units an amount question asks for, by its words; None when it names no kind."""
    for pattern, units in _ASKED_UNITS:
        if pattern.search(question):
            return units
    return None


_ASKS_CEILING = re.compile(
    r"\b(?:maximum|max|limit|limits|exceed|most|how\s+(?:much|high|fast|long))\b", re.I
)
_ASKS_FLOOR = re.compile(r"\b(?:minimum|min|at\s+least|how\s+(?:low|soon))\b", re.I)


def asked_bound(question: str) -> str | None:
    """ "ceiling" for "What is the maximum ...", "floor" for "the minimum ...", else None."""
    if _ASKS_FLOOR.search(question or ""):
        return "floor"
    if _ASKS_CEILING.search(question or ""):
        return "ceiling"
    return None


def stated_bounds(text: str) -> set[str]:
    """The bound qualifiers a text uses: {"floor"}, {"ceiling"}, both or none."""
    return {"floor" if m.group("low") else "ceiling" for m in _BOUND.finditer(text or "")}
