"""The case a question asks about, and whether a passage states the rule for that case.

A rule often gives one limit per case: § 97.313 says 1.5 kW PEP in general, 200 W PEP "on the
10.10-10.15 MHz segment", 100 W PEP "on the 60 m band", 10 W PEP for "a SS emission type". On
similarity alone the neighbouring rows win (asked for the 60 m limit, the eCFR evaluation
quoted the 76-81 GHz row). The question's qualifiers pick the row:

- a band by name: "60 m band", "the 2-meter band", "(2200 m) band";
- a frequency, inside a passage's range: 10.140 MHz is on "10.10-10.15 MHz";
- a class: "Technician Class", "Novice operator", "Class B";
- a term the documents abbreviate, read from the documents themselves: "spread spectrum" is
  "SS" in § 97.3(c)(8) ("(8) SS. Spread spectrum emissions ..."), "ERP" is "effective radiated
  power (ERP)" in § 97.313(i). No hand-written list: `find_abbreviations` reads the collection;
- a counted set: "the two conditions of operation" is the paragraph that says "two conditions"
  (§ 15.5(b)), not the one that mentions "conditions" once (§ 15.1(a) lost to it on similarity).

`qualifier_match` is +1 when a passage names the asked case, -1 when it names another case of
the same kind and not the asked one (another band, a range without the frequency, another
class), 0 when it says nothing of the kind (a general rule), averaged over the asked kinds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from chains.quantities import extract_quantities

# "60 m band", "2-meter band", "60 meter ham band", "(2200 m) band", "23 cm band"
_BAND = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*-?\s*(m|cm|mm|met(?:er|re)s?|centimet(?:er|re)s?|"
    r"millimet(?:er|re)s?)\)?(?:\s+[A-Za-z]+){0,2}?\s+bands?\b",
    re.IGNORECASE,
)
# "Technician Class", "General class operator", "Class B", "Novice operator"
_CLASS_AFTER = re.compile(r"\b([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\s+[Cc]lass\b")
_CLASS_BEFORE = re.compile(r"\b[Cc]lass\s+([A-Z]{1,2})\b")
_OPERATOR = re.compile(r"\b([A-Z][a-z]+)\s+(?:[Cc]lass\s+)?(?:operator|licensee)s?\b")
# Capitalised words that start a sentence or a heading, not names of a class.
_NOT_CLASSES = frozenset(
    "The A An Each Any Every No Which What Who This That Such Its Their Same Other Another "
    "Control Station Amateur Radio".split()
)
# "(8) SS. Spread spectrum emissions ...": a definitions list entry.
_DEFINED = re.compile(r"\(\d{1,3}\)\s+([A-Z][A-Z0-9]{1,5})\.\s+([A-Z][\w-]*(?:\s+[\w-]+){0,5})")
# "effective radiated power (ERP)", "Digital Selective Calling (DSC)"
_SPELLED = re.compile(r"((?:[A-Za-z][\w-]*\s+){1,6})\(([A-Z][A-Z0-9]{1,5})\)")
_HZ = "Hz"
_COUNT_WORDS = {
    word: str(n)
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()
    )
}
_REFERENCE_BEFORE = re.compile(r"(?:\b(?:part|parts|subpart|section|channel)|§)\s*$", re.I)
# "two conditions", "3 requirements", "the following four items": a count and what it counts.
_COUNTED = re.compile(
    rf"\b({'|'.join(_COUNT_WORDS)}|\d{{1,2}})\s+(?:(?:[a-z]+-)?[a-z]+\s+)?([a-z]{{3,}}s)\b", re.I
)


@dataclass
class Qualifiers:
    bands: set[str] = field(default_factory=set)  # "60m", "23cm"
    frequencies: list[float] = field(default_factory=list)  # Hz
    classes: set[str] = field(default_factory=set)  # "technician", "b"
    # Terms the documents define, as (abbreviation, long form): ("SS", "spread spectrum").
    terms: list[tuple[str, str]] = field(default_factory=list)
    counts: set[tuple[str, str]] = field(default_factory=set)  # ("2", "condition")
    # The asked bands' frequencies (Hz), from the band plan (`with_band_frequencies`).
    band_ranges: list[tuple[float, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.bands or self.frequencies or self.classes or self.terms or self.counts)


def _band_key(number: str, unit: str) -> str:
    """ "60", "meter" -> "60m"; "23", "cm" -> "23cm"."""
    unit = unit.lower()
    short = "cm" if unit.startswith("c") else "mm" if unit.startswith(("mm", "milli")) else "m"
    return f"{float(number):g}{short}"


def bands_as_written(text: str) -> str:
    """Band names in the rules' own form: "the 2200 meter band" -> "the 2200 m band".

    The rules write "2200 m band", "23 cm band"; askers write "2200 meter band", "10-meter
    band". As keywords, "meter" matched Part 80's antenna heights in meters, so asked for the
    power "on the 2200 meter band", the answer quoted a ship earth station's e.i.r.p.
    (§ 80.215(k)) instead of § 97.313(k), "1 W EIRP" in the "135.7-137.8 kHz (2200 m) band"."""

    def written(match: re.Match) -> str:
        number, unit = _band_parts(_band_key(match.group(1), match.group(2)))
        rest = match.group(0)[match.end(2) - match.start(0) :]  # ") band", " ham band"
        return f"{number} {unit}{rest}"

    return _BAND.sub(written, text)


# A band-plan table row (§ 97.301): "20 m | 14.00-14.35 | 14.00-14.35 | ..."; "Do" (ditto)
# continues the band above it ("1.25 m | | 219-220", then "Do | | 222-225").
_BAND_ROW = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*(m|cm|mm)|Do)\s*\|(.*)$")
_NUMBER_RANGE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)(?![\d.])")
_FREQUENCY_UNITS = {"kHz": 1e3, "MHz": 1e6, "GHz": 1e9}
# "5330.5-5406.4 kHz band (60 m band)", "135.7-137.8 kHz (2200 m) band"
_NAMED_BAND = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*(kHz|MHz|GHz)\s+(?:band\s+)?"
    r"\((\d+(?:\.\d+)?)\s*(m|cm|mm)(?:\s+band)?\)"
)
_SPEED_OF_LIGHT = 299_792_458.0  # m/s


def _band_parts(key: str) -> tuple[str, str]:
    """ "2200m" -> ("2200", "m"), "70cm" -> ("70", "cm")."""
    number = key.rstrip("cm")
    return number, key[len(number) :]


def _wavelength(key: str) -> float:
    """ "20m" -> 20.0, "70cm" -> 0.7, "6mm" -> 0.006 (meters)."""
    number, unit = _band_parts(key)
    return float(number) / {"m": 1, "cm": 100, "mm": 1000}[unit]


def find_band_ranges(texts: Iterable[str]) -> dict[str, tuple[float, float]]:
    """{"20m": (14.0e6, 14.35e6), "2200m": (135.7e3, 137.8e3)}: the frequencies (Hz) the
    documents' band-plan tables give each band, all rows and regions together.

    A row names a band and its ranges without a unit (the unit is a header row, often in
    another chunk); the unit is the one (kHz, MHz, GHz) that puts the range nearest the band's
    own frequency, c / wavelength: "14.00-14.35" is MHz for the 20 m band (c / 20 m is 15
    MHz). A range more than 1.6 times off in every unit is not read.

    The rules also name a band beside its range in running text: "In the 5330.5-5406.4 kHz
    band (60 m band)" (§ 97.303(h): the 60 m band is in no table), "the 472-479 kHz (630 m)
    band". Asked about "the 60 m band", § 97.303(r)'s 5 cm band was quoted before (h)."""
    found: dict[str, tuple[float, float]] = {}

    def add(band: str, low: str, high: str, units: Iterable[float]) -> None:
        nominal = _SPEED_OF_LIGHT / _wavelength(band)
        middle = (float(low) + float(high)) / 2
        scale = min(units, key=lambda u: abs(math.log(middle * u / nominal)))
        if abs(math.log(middle * scale / nominal)) > math.log(1.6):
            return
        lo, hi = float(low) * scale, float(high) * scale
        known = found.get(band, (lo, hi))
        found[band] = (min(known[0], lo), max(known[1], hi))

    for text in texts:
        for named in _NAMED_BAND.finditer(text):
            low, high, unit, number, short = named.groups()
            add(_band_key(number, short), low, high, [_FREQUENCY_UNITS[unit]])
        band = None
        for line in text.splitlines():
            row = _BAND_ROW.match(line)
            if not row:
                continue
            band = _band_key(row.group(1), row.group(2)) if row.group(1) else band
            if band is None:
                continue
            for low, high in _NUMBER_RANGE.findall(row.group(3)):
                add(band, low, high, _FREQUENCY_UNITS.values())
    return found


def _frequency_text(hertz: float) -> tuple[str, str]:
    unit = "GHz" if hertz >= 1e9 else "MHz" if hertz >= 1e6 else "kHz"
    return f"{hertz / _FREQUENCY_UNITS[unit]:g}", unit


# "the 30 meter band (10.1-10.15 MHz)": a band with the band plan's frequencies after it.
_ANNOTATED = re.compile(r"\s*\((\d+(?:\.\d+)?)-(\d+(?:\.\d+)?) (kHz|MHz|GHz)\)")


def _band_annotations(question: str) -> tuple[str, list[tuple[float, float]]]:
    """The question without the band plan's annotations, and their ranges (Hz): the
    frequencies say which passages are about the band, not a frequency the asker named."""
    ranges: list[tuple[float, float]] = []
    out, last = [], 0
    for band in _BAND.finditer(question):
        note = _ANNOTATED.match(question, band.end())
        if note:
            scale = _FREQUENCY_UNITS[note.group(3)]
            ranges.append((float(note.group(1)) * scale, float(note.group(2)) * scale))
            out.append(question[last : band.end()])
            last = note.end()
    out.append(question[last:])
    return "".join(out), ranges


def with_band_frequencies(question: str, band_ranges: dict[str, tuple[float, float]]) -> str:
    """The question with the documents' frequencies after each band it names: "on the 30
    meter band" -> "on the 30 meter band (10.1-10.15 MHz)". A rule often states its case by
    frequency alone: § 97.313(c)(1) limits "the 10.10-10.15 MHz segment" to 200 W PEP and
    never says "30 m"; ranked with the frequencies, the asked case is read there too
    (`question_qualifiers`: a frequency inside a passage's range)."""
    if not band_ranges or any(frequency_spans(question)):  # it states its frequency itself
        return question

    def annotated(match: re.Match) -> str:
        key = _band_key(match.group(1), match.group(2))
        if key not in band_ranges:
            return match.group(0)
        (low, unit), (high, _) = (_frequency_text(f) for f in band_ranges[key])
        return f"{match.group(0)} ({low}-{high} {unit})"

    return _BAND.sub(annotated, question)


def bands(text: str) -> set[str]:
    return {_band_key(m.group(1), m.group(2)) for m in _BAND.finditer(text)}


def classes(text: str) -> set[str]:
    found = {m.group(1) for m in _CLASS_AFTER.finditer(text)}
    found |= {m.group(1) for m in _CLASS_BEFORE.finditer(text)}
    found |= {m.group(1) for m in _OPERATOR.finditer(text)}
    names = set()
    for name in found:
        words = [w for w in name.split() if w not in _NOT_CLASSES]
        if words:
            names.add(" ".join(words).lower())
    return names


def counted(text: str) -> set[tuple[str, str]]:
    """The counted sets a text names: "two conditions" -> {("2", "condition")}. A count with a
    unit ("two years", "10 watts") is an amount, not a set, and is left out."""
    amounts = [q.span for q in extract_quantities(text) if q.unit and q.span]
    found = set()
    for match in _COUNTED.finditer(text):
        if any(a <= match.start() < b for a, b in amounts) or _REFERENCE_BEFORE.search(
            text[: match.start()]
        ):
            continue
        count = match.group(1).lower()
        found.add((_COUNT_WORDS.get(count, count), match.group(2).lower()[:-1]))
    return found


def frequency_spans(text: str) -> tuple[list[float], list[tuple[float, float]]]:
    """Single frequencies and ranges ("10.10-10.15 MHz": one range) a text states, in Hz."""
    by_span: dict[tuple[int, int], list[float]] = {}
    for quantity in extract_quantities(text):
        if quantity.unit == _HZ and quantity.span is not None:
            by_span.setdefault(quantity.span, []).append(quantity.value)
    singles, ranges = [], []
    for values in by_span.values():
        if len(values) == 2:
            ranges.append((min(values), max(values)))
        else:
            singles.extend(values)
    return singles, ranges


def _names_term(text: str, abbreviation: str, long: str) -> bool:
    return bool(re.search(rf"\b{re.escape(abbreviation)}\b", text)) or long in text.lower()


def question_qualifiers(question: str, abbreviations: dict[str, str] | None = None) -> Qualifiers:
    """The question's cases; with the documents' abbreviations, the defined terms it names
    ("spread spectrum" or "SS": a passage naming either is about that case)."""
    question, band_ranges = _band_annotations(question)
    singles, ranges = frequency_spans(question)
    frequencies = singles + [value for pair in ranges for value in pair]
    terms = [
        (abbreviation, long)
        for abbreviation, long in (abbreviations or {}).items()
        if _names_term(question, abbreviation, long)
    ]
    return Qualifiers(
        bands(question), frequencies, classes(question), terms, counted(question), band_ranges
    )


def _frequency_match(asked: list[float], text: str) -> int:
    singles, ranges = frequency_spans(text)
    if not singles and not ranges:
        return 0
    inside = any(lo * 0.999999 <= f <= hi * 1.000001 for f in asked for lo, hi in ranges)
    equal = any(abs(f - s) <= 1e-6 * max(f, 1.0) for f in asked for s in singles)
    return 1 if inside or equal else -1


def _band_match(qualifiers: Qualifiers, text: str) -> int:
    """+1 the passage names an asked band or states a frequency inside one ("On the
    10.10-10.15 MHz segment" is on the 30 m band), -1 it names only other bands or ranges
    outside them, else 0."""
    stated = bands(text)
    if qualifiers.bands & stated:
        return 1
    if qualifiers.band_ranges:
        singles, ranges = frequency_spans(text)
        inside = any(lo <= f <= hi for f in singles for lo, hi in qualifiers.band_ranges) or any(
            a <= hi and lo <= b for a, b in ranges for lo, hi in qualifiers.band_ranges
        )
        if inside:
            return 1
        if ranges:  # "Within the 1626.5-1646.5 MHz band": another case of the kind
            return -1
    return -1 if stated else 0


def _set_match(asked: set[str], stated: set[str]) -> int:
    if not stated:
        return 0
    return 1 if asked & stated else -1


def qualifier_match(qualifiers: Qualifiers, text: str) -> float:
    """+1 the passage names the asked case, -1 only other cases of its kind, 0 neither;
    the mean over the kinds the question asks about (0.0 when it asks about none)."""
    if not qualifiers:
        return 0.0
    votes = []
    if qualifiers.bands:
        votes.append(_band_match(qualifiers, text))
    if qualifiers.frequencies:
        votes.append(_frequency_match(qualifiers.frequencies, text))
    if qualifiers.classes:
        stated = classes(text)
        named = {c for c in qualifiers.classes if re.search(rf"\b{re.escape(c)}\b", text, re.I)}
        votes.append(1 if named else _set_match(qualifiers.classes, stated))
    if qualifiers.terms:  # naming the term is a match; not naming it says nothing
        votes.append(int(any(_names_term(text, a, long) for a, long in qualifiers.terms)))
    if qualifiers.counts:  # saying "two conditions" is a match; not saying it says nothing
        votes.append(int(bool(qualifiers.counts & counted(text))))
    return sum(votes) / len(votes)


# Abbreviations the documents define ---------------------------------------------------------------


def _initials_prefix(words: list[str], abbreviation: str) -> str | None:
    """The shortest run of words whose initials spell the abbreviation ("Spread spectrum" for
    SS; hyphenated words count each part: "Single-sideband" for SS would be two)."""
    letters = abbreviation.lower()
    initials = ""
    for count, word in enumerate(words, 1):
        initials += "".join(part[:1].lower() for part in word.split("-") if part)
        if initials == letters:
            return " ".join(words[:count])
        if not letters.startswith(initials):
            return None
    return None


def find_abbreviations(texts: Iterable[str]) -> dict[str, str]:
    """{"SS": "spread spectrum", "ERP": "effective radiated power"} from definitions lists
    and spelled-out forms in the texts, where the words' initials spell the abbreviation."""
    found: dict[str, str] = {}
    for text in texts:
        for match in _DEFINED.finditer(text):
            long = _initials_prefix(match.group(2).split(), match.group(1))
            if long:
                found.setdefault(match.group(1), long.lower())
        for match in _SPELLED.finditer(text):
            abbreviation = match.group(2)
            words = match.group(1).split()
            for start in range(len(words)):
                long = _initials_prefix(words[start:], abbreviation)
                if long and len(long.split()) == len(words) - start:
                    found.setdefault(abbreviation, long.lower())
                    break
    return found


def expand_abbreviations(text: str, abbreviations: dict[str, str]) -> str:
    """The words a text means through the documents' abbreviations, both ways: "SS" adds
    "spread spectrum", "spread spectrum" adds "SS" (for keyword overlap)."""
    if not abbreviations:
        return ""
    lowered = text.lower()
    extra = []
    for abbreviation, long in abbreviations.items():
        if re.search(rf"\b{re.escape(abbreviation)}\b", text):
            extra.append(long)
        elif long in lowered:
            extra.append(abbreviation)
    return " ".join(extra)
