"""Evaluation metrics as pure functions: no models, no store, no I/O.

Text is compared after `normalize_text`, which makes "1.6 W/kg" equal "1.6 watts per
kilogram", "20 cm" equal "20 centimeters", "1,000" equal "1000" and "50 percent" equal
"50%". Retrieval metrics work on *keys*: each retrieved chunk is a set of strings that
name it (its section, its source path, the file name of its source), and a gold id
matches a chunk when it is one of those keys.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from chains.citations import MARKER as CITATION_MARKER
from chains.citations import marker_numbers
from chains.prompts import WEAK_MATCH_NOTE

# Text normalisation ------------------------------------------------------------------------

_CHAR_MAP = str.maketrans(
    {
        "\u03bc": "u",  # Greek mu (NFKC turns the micro sign into it)
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00d7": "x",
        "\u03a9": " ohm ",
        "\u2126": " ohm ",
        "\u00b0": " degrees ",
        "^": "",
    }
)

_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
}

# Unit spellings after a number -> canonical symbol. Multi-word forms are listed whole.
_UNIT_FORMS: dict[str, tuple[str, ...]] = {
    "%": ("percent", "per cent", "pct"),
    "w/kg": ("watts per kilogram", "watt per kilogram", "watts/kilogram", "watts/kg", "watt/kg"),
    "mw/cm2": (
        "milliwatts per square centimeter",
        "milliwatts per square centimetre",
        "milliwatt per square centimeter",
        "milliwatt per square centimetre",
        "mw per square centimeter",
        "milliwatts/cm2",
    ),
    "uv/m": ("microvolts per meter", "microvolts per metre", "microvolt per meter", "microvolts/m"),
    "v/m": ("volts per meter", "volts per metre", "volt per meter", "volt per metre"),
    "cm2": ("square centimeters", "square centimetres", "square centimeter", "square centimetre"),
    "w": ("watts", "watt"),
    "mw": ("milliwatts", "milliwatt"),
    "kw": ("kilowatts", "kilowatt"),
    "uw": ("microwatts", "microwatt"),
    "v": ("volts", "volt"),
    "mv": ("millivolts", "millivolt"),
    "uv": ("microvolts", "microvolt"),
    "a": ("amperes", "ampere", "amps", "amp"),
    "ma": ("milliamperes", "milliampere", "milliamps", "milliamp"),
    "cm": ("centimeters", "centimetres", "centimeter", "centimetre"),
    "mm": ("millimeters", "millimetres", "millimeter", "millimetre"),
    "km": ("kilometers", "kilometres", "kilometer", "kilometre"),
    "m": ("meters", "metres", "meter", "metre"),
    "ft": ("feet", "foot"),
    "inch": ("inches", "in."),
    "hz": ("hertz",),
    "khz": ("kilohertz",),
    "mhz": ("megahertz",),
    "ghz": ("gigahertz",),
    "db": ("decibels", "decibel"),
    "s": ("seconds", "second", "secs", "sec"),
    "ms": ("milliseconds", "millisecond", "msec"),
    "us": ("microseconds", "microsecond"),
    "min": ("minutes", "minute", "mins"),
    "h": ("hours", "hour", "hrs", "hr"),
    "kg": ("kilograms", "kilogram"),
    "g": ("grams", "gram"),
    "ohm": ("ohms",),
    "deg": ("degrees", "degree"),
}
_UNIT_CANONICAL = {form: symbol for symbol, forms in _UNIT_FORMS.items() for form in forms}
_UNIT_AFTER_NUMBER = re.compile(
    r"(\d) ("
    + "|".join(re.escape(f) for f in sorted(_UNIT_CANONICAL, key=len, reverse=True))
    + r")(?![a-z0-9])"
)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_BARE_DECIMAL = re.compile(r"(?<![\d.])\.(\d)")
_NUMBER_THEN_LETTER = re.compile(r"(\d)([a-z%])")
_SLASH_SPACES = re.compile(r"\s*/\s*")
_NUMBER_RANGE = re.compile(r"(\d)\s*-\s*(?=\d)")
_UNIT_PER_UNIT = re.compile(r"\b(w|mw|uw|kw|v|mv|uv|db|dbuv) per (kg|cm2|m|hz|khz|mhz)\b")
_NOT_KEPT = re.compile(r"[^a-z0-9.%/\- ]+")
_LOOSE_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_LOOSE_DASH = re.compile(r"(?<=[a-z0-9.])-|-(?!\d)")
_LOOSE_SLASH = re.compile(r"(?<![a-z0-9])/|/(?![a-z0-9])")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z]+")


def normalize_text(text: str | None) -> str:
    """Lowercase, canonical numbers and units, punctuation removed, single spaces.

    Section signs become the word "section"; paragraph letters lose their parentheses
    ("15.109(a)" -> "15.109 a"); number ranges read "30 to 88"; decimals and ratios
    ("w/kg") survive.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_MAP).casefold()
    text = text.replace("\u00a7", " section ")
    text = _THOUSANDS.sub("", text)
    text = _BARE_DECIMAL.sub(r"0.\1", text)
    text = _NUMBER_THEN_LETTER.sub(r"\1 \2", text)
    text = _WORD.sub(lambda m: _NUMBER_WORDS.get(m.group(0), m.group(0)), text)
    text = _SLASH_SPACES.sub("/", text)
    text = _SPACES.sub(" ", text)
    text = _UNIT_AFTER_NUMBER.sub(lambda m: f"{m.group(1)} {_UNIT_CANONICAL[m.group(2)]}", text)
    text = _UNIT_PER_UNIT.sub(r"\1/\2", text)
    text = _NUMBER_RANGE.sub(r"\1 to ", text)
    text = _NOT_KEPT.sub(" ", text)
    text = _LOOSE_DOT.sub(" ", text)
    text = _LOOSE_DASH.sub(" ", text)
    text = _LOOSE_SLASH.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


_ARTICLES = frozenset({"a", "an", "the"})


def tokens(text: str | None) -> list[str]:
    """Normalised tokens without citation markers and articles."""
    return [t for t in normalize_text(strip_citations(text or "")).split() if t not in _ARTICLES]


def strip_citations(text: str) -> str:
    return CITATION_MARKER.sub(" ", text)


def numbers_in(text: str | None) -> set[str]:
    """The numbers in a text after normalisation, citation markers excluded."""
    return set(re.findall(r"\d+(?:\.\d+)*", normalize_text(strip_citations(text or ""))))


# Answer metrics ----------------------------------------------------------------------------


def contains_fact(answer: str | None, fact: str) -> bool:
    """The normalised fact appears in the normalised answer as whole tokens."""
    needle = normalize_text(fact)
    if not needle:
        return True
    return f" {needle} " in f" {normalize_text(answer)} "


def key_fact_recall(answer: str | None, facts: Sequence[str]) -> float | None:
    """Share of facts found in the answer; None when there are no facts to find."""
    if not facts:
        return None
    return sum(contains_fact(answer, fact) for fact in facts) / len(facts)


def token_f1(prediction: str | None, reference: str | None) -> float | None:
    """SQuAD-style bag-of-tokens F1; None without a reference."""
    if reference is None:
        return None
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str | None, reference: str | None) -> dict[str, float]:
    """ROUGE-L precision, recall and F1 on normalised tokens (articles kept)."""
    cand = normalize_text(strip_citations(candidate or "")).split()
    ref = normalize_text(strip_citations(reference or "")).split()
    lcs = lcs_length(cand, ref)
    precision = lcs / len(cand) if cand else 0.0
    recall = lcs / len(ref) if ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if lcs else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# Citations ---------------------------------------------------------------------------------


def cited_numbers(answer: str | None) -> list[int]:
    """Every number in every [n], [n, m], [n-m] marker, in order, repeats kept."""
    numbers: list[int] = []
    for match in CITATION_MARKER.finditer(answer or ""):
        numbers.extend(marker_numbers(match.group(1)))
    return numbers


def citation_validity(answer: str | None, n_sources: int) -> float | None:
    """Share of citation markers pointing at a listed source (1..n); None without markers."""
    numbers = cited_numbers(answer)
    if not numbers:
        return None
    return sum(1 <= n <= n_sources for n in numbers) / len(numbers)


def citation_precision(
    answer: str | None, source_keys: Sequence[Iterable[str]], gold: Sequence[str]
) -> float | None:
    """Share of distinct validly cited sources that hold a gold section.

    `source_keys[i]` names listed source i+1. None without valid citations or without gold.
    """
    if not gold:
        return None
    cited = sorted({n for n in cited_numbers(answer) if 1 <= n <= len(source_keys)})
    if not cited:
        return None
    wanted = {gold_key(g) for g in gold}
    return sum(bool(wanted & set(source_keys[n - 1])) for n in cited) / len(cited)


# Abstention --------------------------------------------------------------------------------


def abstention_scores(records: Iterable[tuple[bool, bool]]) -> dict[str, float | None]:
    """From (answerable, abstained) pairs: accuracy on unanswerable items (share that
    abstained) and the false-abstention rate on answerable ones."""
    records = list(records)
    unanswerable = [abstained for answerable, abstained in records if not answerable]
    answerable = [abstained for answerable_, abstained in records if answerable_]
    return {
        "abstention_accuracy": mean(unanswerable),
        "false_abstention_rate": mean(answerable),
    }


_ABSTENTION = re.compile(
    r"\b(?:sources?|documents?|context|texts?|information|excerpts?|passages?)\b(?: \S+){0,6}? "
    r"(?:do|does|did) not (?:cover|contain|mention|address|say|specify|include|provide|answer)\b"
    r"|\bnot covered (?:by|in)\b|\b(?:cannot|can not|unable to) answer\b"
    r"|\bno information (?:about|on|regarding)\b"
)


_QUOTED = re.compile(r"[\"“][^\"”\n]*[\"”]")


def without_notes(answer: str | None) -> str | None:
    """The answer without the chain's weak-match note (a warning line, not a claim)."""
    if not answer or WEAK_MATCH_NOTE not in answer:
        return answer
    return "\n".join(line for line in answer.splitlines() if line.strip() != WEAK_MATCH_NOTE)


def without_pinpoints(text: str, labels: Iterable[str]) -> str:
    """The text without the listed sources' parenthesised pinpoints: a short answer's
    "(§ 97.313(j))" says where its words come from; it is not one of them (scored with it, every
    short answer "8 dBm (§ 15.247(e)) [1]" read as a sentence its passage does not back)."""
    for label in labels:
        if label:
            text = text.replace(f" ({label})", "")
    return text


def looks_like_abstention(answer: str | None) -> bool:
    """The answer declines ("the documents do not cover ...", "I cannot answer ...")
    instead of answering; an empty answer counts as declining too. Quoted rule text is the
    rule's words, not the answer's: § 15.103(h) quoted whole says "is not covered by this
    exemption", and the answer that quotes it answers."""
    text = normalize_text(strip_citations(_QUOTED.sub(" ", answer or "")))
    text = (
        text.replace("don t ", "do not ")
        .replace("doesn t ", "does not ")
        .replace("can t ", "cannot ")
    )
    return not text or bool(_ABSTENTION.search(text))


# Groundedness ------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"§\[])|\n+")
MIN_SENTENCE_TOKENS = 3


def split_sentences(text: str | None) -> list[str]:
    """Sentences and lines, citation markers kept (they say what each sentence cites)."""
    parts = _SENTENCE_END.split(text or "")
    return [p.strip(" -*\t") for p in parts if p and p.strip(" -*\t")]


def support(sentence: str, passage: str) -> float:
    """ROUGE-L precision of the sentence against the passage: the share of the sentence's
    tokens that appear, in order, in the passage."""
    return rouge_l(sentence, passage)["precision"]


def groundedness(
    answer: str | None, sources: Sequence[str], threshold: float = 0.5
) -> dict[str, float | int | None]:
    """Share of answer sentences supported (support >= threshold) by a passage.

    `sources` are the texts of the listed sources, numbered from 1 as in the answer's
    markers. `grounded_cited`: supported by a source that the answer cites somewhere (an
    answer without a valid citation scores 0). `grounded_retrieved`: supported by any listed
    source. Sentences under MIN_SENTENCE_TOKENS tokens are not scored; None when none is left.
    """
    scored = [s for s in split_sentences(answer) if len(tokens(s)) >= MIN_SENTENCE_TOKENS]
    if not scored:
        return {"grounded_cited": None, "grounded_retrieved": None, "sentences": 0}
    cited = {n for n in cited_numbers(answer) if 1 <= n <= len(sources)}
    by_cited = by_any = 0
    for sentence in scored:
        supported = {n for n, text in enumerate(sources, 1) if support(sentence, text) >= threshold}
        by_any += bool(supported)
        by_cited += bool(supported & cited)
    return {
        "grounded_cited": by_cited / len(scored),
        "grounded_retrieved": by_any / len(scored),
        "sentences": len(scored),
    }


def unsupported_numbers(answer: str | None, passages: Iterable[str]) -> list[str]:
    """Numbers in the answer that appear in none of the passages, sorted."""
    seen: set[str] = set()
    for passage in passages:
        seen |= numbers_in(passage)
    return sorted(numbers_in(answer) - seen)


def cited_sentences(answer: str | None) -> list[tuple[str, set[int]]]:
    """Each sentence with the passage numbers it cites. A sentence without a marker takes the
    markers of the next sentence on its line that has one (a citation at the end of a quoted
    passage covers the passage), else those of the previous one."""
    pairs: list[tuple[str, set[int]]] = []
    for line in (answer or "").splitlines():
        sentences = split_sentences(line)
        marks = [set(cited_numbers(s)) for s in sentences]
        for i, sentence in enumerate(sentences):
            found = marks[i] or next((m for m in marks[i + 1 :] if m), set())
            found = found or next((m for m in reversed(marks[:i]) if m), set())
            pairs.append((sentence, found))
    return pairs


def cited_support(
    answer: str | None,
    passages: Sequence[str],
    question: str = "",
    labels: Sequence[str] = (),
    threshold: float = 0.5,
) -> dict[str, Any]:
    """How well each answer sentence is backed by the passages it cites itself.

    `passages` are the listed sources' texts numbered from 1; `labels` their pinpoints
    ("§ 97.215(c)"), whose numbers a quote may repeat. A sentence is supported when its
    ROUGE-L precision against one of its own cited passages is >= threshold and every number
    in it is in that passage, the pinpoint or the question. `uncited_numbers`: numbers of the
    answer that no passage it cites (nor the question, nor a cited pinpoint) contains.
    """
    scored = [
        (s, cited) for s, cited in cited_sentences(answer) if len(tokens(s)) >= MIN_SENTENCE_TOKENS
    ]
    asked = numbers_in(question)
    supported, uncited = 0, set()
    for sentence, cited in scored:
        valid = [n for n in cited if 1 <= n <= len(passages)]
        allowed = asked | {x for n in valid for x in numbers_in(passages[n - 1])}
        allowed |= {x for n in valid if n <= len(labels) for x in numbers_in(labels[n - 1])}
        missing = numbers_in(sentence) - allowed
        uncited |= missing
        backed = any(support(sentence, passages[n - 1]) >= threshold for n in valid)
        supported += bool(backed and not missing)
    return {
        "supported_sentence_rate": supported / len(scored) if scored else None,
        "uncited_numbers": sorted(uncited),
        "sentences": len(scored),
    }


# Retrieval ---------------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\s*\(.*$")


def gold_key(gold_id: str) -> str:
    """A gold id as a chunk key: "§ 15.109(a)" -> "15.109"; file names unchanged."""
    key = gold_id.strip().removeprefix("\u00a7").strip()
    return _PARAGRAPH.sub("", key) if re.match(r"^\d", key) else key


def chunk_keys(source: str | None, section: str | None) -> set[str]:
    """The names a gold id may use for a chunk: its section, source path and file name."""
    keys = {k for k in (section, source) if k}
    if source:
        keys.add(PurePosixPath(source).name)
    return keys


def match_ranks(retrieved: Sequence[Iterable[str]], gold: Sequence[str]) -> dict[str, int | None]:
    """For each distinct gold id, the 1-based rank of the first chunk it matches (or None)."""
    ranks: dict[str, int | None] = {}
    keyed = [set(keys) for keys in retrieved]
    for gold_id in dict.fromkeys(gold):
        key = gold_key(gold_id)
        ranks[gold_id] = next((i for i, keys in enumerate(keyed, 1) if key in keys), None)
    return ranks


def retrieval_scores(
    retrieved: Sequence[Iterable[str]], gold: Sequence[str], k: int
) -> dict[str, float] | None:
    """hit@1, hit@k, recall@k (distinct gold ids found in the top k) and MRR@k for one query.

    None when there is no gold (an unanswerable question). Several chunks of the same
    section count once.
    """
    if not gold:
        return None
    ranks = [r for r in match_ranks(list(retrieved)[:k], gold).values()]
    found = [r for r in ranks if r is not None]
    first = min(found, default=None)
    return {
        "hit@1": float(first == 1),
        "hit@k": float(first is not None),
        "recall@k": len(found) / len(ranks),
        "mrr": 1.0 / first if first else 0.0,
    }


# Aggregation -------------------------------------------------------------------------------


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    return {"p50": percentile(present, 50), "p95": percentile(present, 95), "mean": mean(present)}
