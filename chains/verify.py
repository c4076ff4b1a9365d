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

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from chains.citations import MARKER, marker_numbers
from chains.evidence import Passage, content_tokens, encode_texts, rank_passages, sentence_spans
from chains.quantities import (
    PassageFacts,
    Quantity,
    blank_span,
    bound_conflicts,
    extract_quantities,
    passage_facts,
    quantity_supported,
    same_value,
    states_amount,
    wants_amount,
)

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
# A kept sentence's passage must rank within this of the question's best passage: a true
# sentence about another service answers another question (a real draft, asked about
# amateur stations: "... at least once every 15 minutes during radiotelephone
# communications. [2]", from Part 80).
RELEVANCE_MARGIN = 0.15
# A second quote in an extractive answer: only this close to the first one's score.
QUOTE_MARGIN = 0.1
MAX_SENTENCES = 24  # a looping 135M model writes hundreds; more are not checked
MAX_SENTENCE_CHARS = 500  # longer "sentences" are run-on garbage
MIN_WORDS = 3

# Support --------------------------------------------------------------------------------


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def _words_outside(text: str, quantities: list[Quantity]) -> set[str]:
    """Content words of `text` that are not part of a number, unit or section reference."""
    for quantity in quantities:
        text = blank_span(text, *quantity.span)
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
    return a.unit == b.unit and same_value(a.value, b.value)


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
        quoted = extractive_answer(question, passages, embedder=embedder)
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
    amount = wants_amount(question)
    for candidate in candidates:
        sentence = _Sentence.of(candidate.text, question)
        if sentence.restates:  # "No power limit applies on the 60 m band." adds only "no"
            dropped.append({"text": candidate.text, "reason": "restates the question"})
        elif amount and not states_amount(candidate.text):
            # "The amplifier must meet the FCC's requirements." for "What gain ... must ...?"
            dropped.append({"text": candidate.text, "reason": "states no amount; one was asked"})
        else:
            claims.append((candidate, sentence))
    if not claims:
        return []
    facts = [passage_facts(p) for p in passages]
    scores, missing = _scores([s for _, s in claims], passages, facts, embedder)
    best = max(p.score for p in passages)
    kept: list[SupportedSentence] = []
    for (candidate, _), row, lacking in zip(claims, scores, missing, strict=True):
        index, reason = _choose(candidate, row, lacking, passages, threshold)
        if index is not None and passages[index].score < best - RELEVANCE_MARGIN:
            reason = f"backed only by passage [{passages[index].n}], off the question"
            index = None
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
    """Best first: in the order the chat model reread them into (`chains.rerank`), else by the
    scores rank_passages gave them (for this question, the caller's contract), else ranked
    now. (The quotes used to follow the first-stage score alone, so a reread order was shown
    in the sources but not in the answer: § 15.5(b) was source [1] and quoted second.)"""
    if any(p.likelihood is not None for p in passages):
        return list(passages)
    if any(p.dense_score is not None for p in passages):
        return sorted(passages, key=lambda p: -p.score)
    return rank_passages(question, passages, embedder, k=len(passages))


def extractive_answer(
    question: str, passages: Sequence[Passage], max_quotes: int = 2, embedder=None
) -> Verification:
    """Quotes only, no model: the top passage verbatim with its pinpoint and [n], and a
    second one when it scores within QUOTE_MARGIN of the first and is another paragraph. A
    quoted table row brings one paragraph it cites for its standards on top (`standard_of`):
    asked the 60 m band's phone mode, § 97.305(c)'s row "60 m | ... | Phone, RTTY, data |
    (f)(14)." was the second quote and § 97.307(f)(14)'s "Upper sideband (USB)" the third."""
    passages = number_passages(passages)
    whole = [p for p in passages if p.part is None]
    if not whole:
        return Verification(answer="", fallback=True)
    ranked = _ranked(question, whole, embedder)
    quotes, standards = [ranked[0]], 0
    for passage in ranked[1:]:
        if passage.score < ranked[0].score - QUOTE_MARGIN:
            break
        standard = not standards and any(q.pinpoint == passage.standard_of for q in quotes)
        if len(quotes) - standards >= max_quotes and not standard:
            continue
        if all((passage.section, passage.paragraph) != (q.section, q.paragraph) for q in quotes):
            quotes.append(passage)
            standards += standard
    # The passage for each part of a two-part question (chains.evidence.answer_each_part) too.
    quoted = {(q.section, q.paragraph) for q in quotes}
    quotes += [p for p in passages if p.part is not None and (p.section, p.paragraph) not in quoted]
    sentences = [SupportedSentence(p.quote, p.n, 1.0) for p in quotes]
    return Verification(
        answer="\n".join(format_quote(p) for p in quotes),
        sentences=sentences,
        fallback=True,
        cited=[p.n for p in quotes],
    )
