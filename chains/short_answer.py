"""The answer in a few words, first: `10 W PEP (§ 97.313(j)) [1]`, then the quotes.

For a question that asks for an amount (how much power, how long, how many, which frequency),
the short answer is the amount the best passage states, in the passage's own words, with the
qualifier that follows it ("PEP", "EIRP") and its bound ("at most" for "not exceed", "at
least" for "not less than"), cited to that passage. Nothing is inferred: the words are a slice
of the cited passage, so every claim in the line is checkable against it, and a question the
passage does not answer with an amount of the asked kind gets no short answer (the quotes
stand alone). Questions answered by a conclusion (yes or no, who, which class) get none yet:
a polarity read off "No ... may" misfires on the rule's exceptions, e.g. § 97.315(a) forbids
building amplifiers to non-amateurs, which answers "Can I build my own amplifier?" with yes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chains.evidence import Passage, content_tokens
from chains.qualifiers import qualifier_match, question_qualifiers
from chains.quantities import Quantity, asked_units, bound_of, extract_quantities, wants_amount
from chains.verify import QUOTE_MARGIN

_HOW_MANY = re.compile(r"\bhow\s+many\s+(\w+)", re.I)
# "When may SAR testing of the other channels in a band be skipped?" asks for a condition (a
# SAR of 0.8 W/kg or less), not the band's "100 MHz": a when-question's amount is a time.
_ASKS_CONDITION = re.compile(
    r"^\W*(?:when|under\s+what|in\s+what\s+(?:cases|circumstances))\b", re.I
)
_TIME_UNITS = {"s", "day", "month", "year"}
# "restricted to which mode?", "Which emission types ...": the question names what it asks
# for, and it is no amount; the band it also names made `wants_amount` true, and § 97.303(h)'s
# "5330.5-5406.4 kHz" answered the 60 m band's phone mode.
_ASKED_THING = re.compile(
    r"\b(?:which|what)\s+(?!(?:is|are|was|were|must|may|can|could|does|do|did|should|shall|"
    r"will|would|has|have|the|a|an)\b)([a-z]+(?:\s+[a-z]+)?)",
    re.I,
)
# "+ 40 dB relative to one watt" states 40 dBW: "one watt" is the reference, not the amount
# (asked the power "on the 2200 meter band", § 80.215(k) answered "At most one watt").
_REFERENCE = re.compile(r"\b(?:relative|referenced|referred)\s+to\s+(?:an?\s+|the\s+)?$", re.I)
# What follows an amount and belongs to it: "10 W PEP", "1 W EIRP", "100 W (PEP)".
_SUFFIX = re.compile(r"\s*\(?(PEP|EIRP|ERP|e\.i\.r\.p\.|e\.r\.p\.|peak envelope power)\)?")
_COUNTED = re.compile(r"\s+([A-Za-z][\w-]*(?:\s+(?:of\s+)?[a-z][\w-]*)?)")
_BOUND_WORDS = {"ceiling": "at most", "floor": "at least"}


def _amount_text(text: str, quantity: Quantity) -> str:
    suffix = _SUFFIX.match(text, quantity.span[1])
    words = quantity.text + (f" {suffix.group(1)}" if suffix else "")
    bound = _BOUND_WORDS.get(bound_of(text, quantity, window=40) or "")
    return f"{bound} {words}" if bound else words


def _count_text(text: str, quantity: Quantity) -> str | None:
    """ "3 VEs" for "How many volunteer examiners ...": the number and the word after it.

    A number followed by a word that names nothing is no count: asked how many members a club
    needs, § 97.17(b)(2)'s "the Internal Revenue Code of 1986 that provides ..." answered
    "1986 that"."""
    counted = _COUNTED.match(text, quantity.span[1])
    word = counted.group(1).split()[0] if counted else ""
    if not content_tokens(word):
        return None
    bound = _BOUND_WORDS.get(bound_of(text, quantity, window=20) or "")
    words = f"{quantity.text} {word}"
    return f"{bound} {words}" if bound else words


def short_answer(
    question: str, passages: Sequence[Passage], abbreviations: dict[str, str] | None = None
) -> str | None:
    """The amount the best passage states, unless a rival says otherwise: a passage scoring
    within QUOTE_MARGIN of it (so quoted beside it) that states another amount of the asked
    kind and fits the question's case (`chains.qualifiers`) as well. Asked the power limit of
    a 2.4 GHz hopping system "if it uses fewer than 75" channels, the row for "at least 75"
    (1 watt) ranked just above the row for the others (0.125 watts): no short answer then."""
    if not passages:
        return None
    best = passages[0]
    words = stated_amount(question, best)
    if not words:
        return None
    qualifiers = question_qualifiers(question, abbreviations)
    fit = qualifier_match(qualifiers, best.evidence)
    for other in passages[1:]:
        if other.part is not None:  # it answers another part of the question
            continue
        if other.score < best.score - QUOTE_MARGIN:
            break
        rival = stated_amount(question, other)
        if rival and rival != words and qualifier_match(qualifiers, other.evidence) >= fit:
            return None
    return words


def stated_amount(question: str, passage: Passage) -> str | None:
    """The amount the passage states for an amount question, in its words, or None.

    Only an unambiguous one: a passage stating two amounts of the asked kind gets none
    ("a call sent three times at intervals of two minutes ... must cease for fifteen minutes"
    answered "How long can I keep calling?" with "Two minutes")."""
    if not wants_amount(question):
        return None
    thing = _ASKED_THING.search(question)
    if thing and not (wants_amount(thing.group(1)) or asked_units(thing.group(1))):
        return None
    asked = {q.value for q in extract_quantities(question) if q.kind in ("quantity", "number")}
    units = asked_units(question)
    if _ASKS_CONDITION.search(question) and units != _TIME_UNITS:
        return None
    counting = units is None and _HOW_MANY.search(question)
    if units is None and not counting:  # "the emission limits between 5 and 30 MHz": which?
        return None
    for text in (passage.text, passage.evidence):  # the item's own words first, then its lead-in
        found = [
            q
            for q in extract_quantities(text)
            if q.value not in asked and not _REFERENCE.search(text, 0, q.span[0])
        ]
        if counting:
            answers = {w for q in found if q.kind == "number" and (w := _count_text(text, q))}
        else:
            answers = {
                _amount_text(text, q) for q in found if q.kind == "quantity" and q.unit in units
            }
        if answers:
            return answers.pop() if len(answers) == 1 else None
    return None


def format_short_answer(words: str, passage: Passage) -> str:
    """`10 W PEP (§ 97.313(j)) [1]`, with the first letter capitalised."""
    return f"{words[:1].upper()}{words[1:]} ({passage.pinpoint}) [{passage.n}]"
