"""Summaries you can trust: extract, condense, verify, cite (map-reduce within the window).

A whole document (its chunks in order), a set of retrieved chunks, or any long text.

Mode `verified` (the default, SUMMARY_MODE):

1. **Extract.** The text is cut into evidence passages along its own structure
   (`chains.evidence.split_passages`: paragraphs, list items with their lead-in, table rows
   with their header, sentences of long paragraphs), each with its pinpoint (`§ 97.313(b)`);
   a list item that is a sentence of its own reads under its list's lead-in too ("Stations
   must not: … Engage in superfluous radiocommunication."). Passages are ranked as
   provisions (`provision_score`): an amount with a unit, a duty ("must", "shall",
   "responsible"), a prohibition ("may not", "No station may ...", "prohibited"), a deadline
   ("within 20 days", "at intervals"), a permission; a section's opening rule ranks high.
   The best are chosen greedily, less for each one already chosen from the same list,
   paragraph or section (more distinct rules first), up to SUMMARY_SHARE of the text's
   characters (at least MIN_PROVISIONS, at most MAX_PROVISIONS lines), and shown in document
   order, each quoted verbatim after its pinpoint with its `[n]` (cut at a clause after
   QUOTE_CHARS, with "…"): `§ 97.313(b): "No station may transmit ... 1.5 kW PEP." [2]`.
2. **Condense.** The model is shown the longest chosen provision (CONDENSE_PASSAGES), whole,
   and asked to shorten it to one sentence citing its [n] (DRAFT_TOKENS, first sentence).
3. **Verify.** `chains.verify.verify_answer` keeps a draft sentence only when its passage
   supports it and holds every number of it with its unit and bound; it then stands for the
   quote only when it states every amount of the passage, is a shortened copy (COPY_PRECISION
   of its words are the passage's, in order: a paraphrase that changes the rule is not),
   keeps every condition and negation word of it ("when", "unless", "not", ...), is shorter
   than the quote and repeats no kept line. Everything else is listed in `dropped`
   with the reason. When nothing the model wrote survives (`fallback`), the summary is the
   quoted provisions. Measured on the gold sets, that is nearly always the case with the
   135M model: `bench/results/summaries.md`.

Mode `extractive` is step 1 alone: the quoted provisions, no model call. Mode `raw` is the
model's text as generated (the earlier behaviour, for comparison): map = each group of
consecutive pieces that fits the window -> a partial summary; reduce = partial summaries
combined, again in groups that fit, until one is left; no citations, nothing checked.

Map-reduce stays honest: in verified mode each group of consecutive chunks that fits the
window is extracted, condensed and verified on its own (map); partial summaries are merged in
pairs (reduce): their provisions pooled and chosen again, a provision the model has not seen
condensed and verified, after every reduce step. A merged line cites the passage it came
from. Sources are the cited passages, numbered [1].. in the order the summary cites them
(`chains.rag.Source` fields, plus chunk_index).

The command line is `fcc-rag summarize` (cli/summarize.py); the service is
`services.summaries`, which the chat's "Summarize sources" and `POST /api/summarize` call.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from chains.evidence import (
    Passage,
    content_tokens,
    dedupe_passages,
    encode_texts,
    is_lead_in,
    sentence_spans,
    split_passages,
)
from chains.prompts import (
    RAG_STOP,
    build_combine_messages,
    build_condense_messages_for_provisions,
    build_summary_messages,
)
from chains.quantities import extract_quantities, quantity_supported
from chains.verify import strip_markers, verify_answer

if TYPE_CHECKING:
    from chains.llm import QLoRAChatModel
    from chains.rag import Source
    from chains.retrieval import Retriever

log = logging.getLogger(__name__)

MAX_LEVELS = 8  # reduce rounds; each round at least halves the number of summaries
SUMMARY_MODES = ("verified", "extractive", "raw")
DEFAULT_MODE = "verified"
# Verified mode: the model is shown the CONDENSE_PASSAGES longest chosen provisions (whole,
# the ones a quote cuts or that a shorter sentence helps most) and drafts DRAFT_TOKENS new
# tokens at most (unless max_new_tokens is given), stopping after its first sentence. On this
# 2-core CPU a 64-token draft over ten passages took 8-11 s; one passage and 40 tokens, ~4 s.
CONDENSE_PASSAGES = 1
DRAFT_TOKENS = 40
CHARS_PER_TOKEN = 4  # map groups without a model's tokenizer (extractive): about SmolLM2's
# What a summary (and each map step) keeps: quoted provisions of at most SUMMARY_SHARE of the
# characters read (between MIN_ and MAX_SUMMARY_CHARS), at least MIN_PROVISIONS and at most
# MAX_PROVISIONS lines.
# § 97.313 (3.7k characters) keeps 10 of its 15 rules; a whole part keeps 12.
MAX_PROVISIONS = 12
MIN_PROVISIONS = 4  # lines, whatever their length (a short section's every rule)
SUMMARY_SHARE = 0.45
MIN_SUMMARY_CHARS = 600
MAX_SUMMARY_CHARS = 2400
# A longer passage is quoted up to a clause boundary before this many characters, then "…".
QUOTE_CHARS = 320
# A model sentence replaces its passage's quote only when this much shorter (else the quote,
# verbatim, is the better summary of that provision).
CONDENSED_RATIO = 0.9
# Two sentences are repeats when they state the same numbers and this share of their words.
REPEAT_OVERLAP = 0.8
# A model sentence stands for a quote only when this share of its words are the passage's
# words in the passage's order (a shortened copy, not a paraphrase): measured on eCFR, the
# verifier's support threshold alone kept "no station may retransmit televised news ...
# without first requesting permission from the owner" for § 97.113(c), which says nothing of
# the kind, and "identification must be made at 15 minutes after transmission" for
# § 80.102(a)(2) ("at 15 minute intervals when transmission is sustained ...").
COPY_PRECISION = 0.85

# Provision signals (`provision_score`): weights on a 0 .. ~1.3 scale.
W_AMOUNT = 0.35  # an amount with a unit ("1.5 kW PEP", "20 days")
W_NUMBER = 0.15  # a bare number ("three", "8 bits" counts as an amount)
W_DUTY = 0.3  # must, shall, required
W_PROHIBITION = 0.35  # may not, must not, no ... may, prohibited (not added to a duty's)
W_DEADLINE = 0.2  # within N days, no later than, at least once, at intervals
W_PERMISSION = 0.1  # may, is authorized, is permitted
# The opening provision of a section (its general rule or scope: "An amateur station must use
# the minimum transmitter power necessary"); half of it for the next.
W_LEAD = 0.45
W_FOCUS = 0.5  # * cosine(focus, passage) for a summary with regard to a question
W_LIST_INTRO = -0.25  # "... 200 W PEP:" alone: its items say where the rule applies
W_SHORT = -0.2  # fewer than MIN_PROVISION_CHARS characters: a heading or a label
# Each provision already chosen from the same list (same lead-in) or the same paragraph: the
# summary covers more distinct rules first (§ 97.313(c)(2) and (3) after (d)-(m)).
W_SAME_LIST = -0.2
W_SAME_PARAGRAPH = -0.2
# ... and each one already chosen from the same section: a document of several sections gets
# each section's best rule before a second one of any.
W_SAME_SECTION = -0.1
MIN_PROVISION_CHARS = 30

_DUTY = re.compile(
    r"\b(?:must|shall|is required|are required|required to|requires?|responsib(?:le|ility))\b",
    re.I,
)
_PROHIBITION = re.compile(
    r"\b(?:may not|must not|shall not|cannot|can not|is not permitted|are not permitted|"
    r"prohibited|not authorized|is not allowed|are not allowed)\b|"
    r"\bno\s+(?:[\w-]+\s+){0,4}(?:may|shall|is|are|will)\b",
    re.I,
)
_DEADLINE = re.compile(
    r"\bwithin\s+(?:\d+|[a-z]+)\s+(?:calendar\s+|business\s+)?(?:days?|months?|years?|hours?|"
    r"minutes?|weeks?)\b|\b(?:no|not)\s+later\s+than\b|\bexpires?\b|"
    r"\bat\s+least\s+once\b|\bintervals?\b",
    re.I,
)
_PERMISSION = re.compile(
    r"\b(?:may|is authorized|are authorized|is permitted|are permitted|is exempt)\b", re.I
)


class SourceNotFoundError(ValueError):
    """The source has no chunks in the collection; the message says how to list them."""


@dataclass
class SummaryResult:
    summary: str
    # Verified: the passages the summary cites, numbered [1].. as cited (n, pinpoint, source,
    # page, section, heading, paragraph, score, text, cited, span, context, chunk_id,
    # chunk_index). Raw: the chunks read, numbered (text is the chunk), none cited.
    sources: list[dict] = field(default_factory=list)
    chunks: int = 0  # pieces of input
    calls: int = 0  # model calls (map + reduce)
    levels: int = 0  # reduce rounds after the map
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0}
    )
    seconds: float = 0.0
    mode: str = DEFAULT_MODE
    # Draft sentences the verifier removed, and extracted provisions left out: {text, reason}.
    dropped: list[dict] = field(default_factory=list)
    fallback: bool = False  # verified: no model sentence survived; the summary is quotes
    # Verified: each summary line: {text, cites, kind ("quote" | "model"), pinpoint}.
    sentences: list[dict] = field(default_factory=list)
    draft: str | None = None  # what the model wrote (each call's draft, blank-line separated)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def source_records(self) -> list[Source]:
        """The sources as chains.rag.Source objects (what the chat renders for answers)."""
        from chains.rag import Source

        names = set(Source.__dataclass_fields__)
        return [Source(**{k: v for k, v in s.items() if k in names}) for s in self.sources]


def _field(chunk: Any, name: str) -> Any:
    if isinstance(chunk, dict):
        return chunk.get(name, (chunk.get("metadata") or {}).get(name))
    return getattr(chunk, name, None)


def _as_chunk(chunk: Any) -> Any:
    """A chunk as split_passages reads it (`.text`, `.metadata`, `.id`): RetrievedChunk
    objects as they are, `document_text` dicts and answer sources rebuilt."""
    if hasattr(chunk, "text") and hasattr(chunk, "metadata"):
        return chunk
    metadata = dict(_field(chunk, "metadata") or {})
    for name in ("source", "page", "section", "heading", "chunk_index"):
        value = _field(chunk, name)
        if value is not None:
            metadata.setdefault(name, value)
    return SimpleNamespace(
        text=str(_field(chunk, "text") or ""), metadata=metadata, id=_field(chunk, "id")
    )


# Provisions -------------------------------------------------------------------------------


def provision_signals(text: str) -> dict[str, bool]:
    """What makes a passage a provision: an amount, a duty, a prohibition, a deadline."""
    quantities = [q for q in extract_quantities(text) if q.kind in ("quantity", "number")]
    return {
        "amount": any(q.kind == "quantity" for q in quantities),
        "number": bool(quantities),
        "duty": bool(_DUTY.search(text)),
        "prohibition": bool(_PROHIBITION.search(text)),
        "deadline": bool(_DEADLINE.search(text)),
        "permission": bool(_PERMISSION.search(text)),
    }


def provision_score(passage: Passage, lead: int | None = None) -> float:
    """How much a passage reads as a rule worth a summary's line (about -0.5 .. 1.6).

    `lead`: 0 for a section's opening passage, 1 for the next (W_LEAD, half of it)."""
    signals = provision_signals(passage.evidence)
    score = (
        W_AMOUNT * signals["amount"]
        + W_NUMBER * (signals["number"] and not signals["amount"])
        + max(W_DUTY * signals["duty"], W_PROHIBITION * signals["prohibition"])
        + W_DEADLINE * signals["deadline"]
        + W_PERMISSION * (signals["permission"] and not signals["prohibition"])
        + W_LIST_INTRO * is_lead_in(passage.text)
        + W_SHORT * (len(passage.text.strip()) < MIN_PROVISION_CHARS)
    )
    if lead is not None and lead < 2:
        score += W_LEAD / (1 + lead)
    return score


@dataclass
class _Provision:
    passage: Passage
    order: int  # position in the document
    rank: float  # provision_score (+ focus)

    @property
    def key(self) -> tuple:
        p = self.passage
        return (p.source, p.section, p.paragraph, p.page)

    @property
    def list_key(self) -> tuple | None:
        """The list the passage is an item of (its lead-in), or None."""
        p = self.passage
        return (p.source, p.section, p.context) if p.context else None


def _words(text: str) -> str:
    return " ".join(text.split())


def _conflicts(provision: _Provision, chosen: list[_Provision]) -> bool:
    """Is it a list's lead-in that a chosen item quotes, or an item quoting a chosen lead-in?"""
    text = _words(provision.passage.text)
    context = _words(provision.passage.context or "")
    for other in chosen:
        if other.passage.context and text in _words(other.passage.context):
            return True
        if context and _words(other.passage.text) in context:
            return True
    return False


def _parent(paragraph: str | None) -> str | None:
    """ "(a)(1)" -> "(a)"; "(a)" -> None (the section's own text)."""
    marks = re.findall(r"\([^()]*\)", paragraph or "")
    return "".join(marks[:-1]) or None


def with_lead_ins(passages: Sequence[Passage]) -> list[Passage]:
    """Passages, where a list item that is a sentence of its own reads under the lead-in of
    its list (copies, `context` set): "Stations must not: … Engage in superfluous
    radiocommunication." (§ 80.89). `split_passages` gives a lead-in only to fragments."""
    intros: dict[tuple, str] = {}
    seen: set[tuple] = set()
    out: list[Passage] = []
    for passage in passages:
        key = (passage.source, passage.section, passage.page, passage.paragraph)
        if passage.context is None and passage.paragraph and key not in seen:
            parent = (passage.source, passage.section, passage.page, _parent(passage.paragraph))
            if parent in intros:
                passage = replace(passage, context=intros[parent])
        seen.add(key)
        text = passage.text.strip()
        if is_lead_in(text):
            spans = sentence_spans(text, min_chars=0)
            intros[key] = text[spans[-1][0] : spans[-1][1]] if spans else text
        out.append(passage)
    return out


def unique_passages(chunks: Sequence[Any]) -> list[Passage]:
    """The passages of consecutive chunks, each once, in document order.

    Overlapping chunk windows repeat passages (`dedupe_passages` keeps the longer copy), but
    only within one section: a passage's `source_span` counts from the start of its section
    (ingestion's segment), so two sections of one file have spans that overlap as numbers
    (part2_equipment_authorization.xml lost 22 of its 39 passages to that)."""
    passages = [p for chunk in chunks for p in split_passages(chunk)]
    groups: dict[tuple, list[Passage]] = {}
    for passage in passages:
        groups.setdefault((passage.source, passage.page, passage.section), []).append(passage)
    kept = {id(p) for group in groups.values() for p in dedupe_passages(group)}
    return [p for p in passages if id(p) in kept]


def trim_quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """The text up to a clause boundary before `limit` characters, then " …" (verbatim)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = max(text.rfind(", ", 0, limit), text.rfind("; ", 0, limit))
    if cut < limit // 2:
        cut = text.rfind(" ", 0, limit)
    return text[:cut].rstrip(" ,;:") + " …"


@dataclass
class _Claim:
    """One line of a summary: a quoted provision or a verified model sentence."""

    text: str  # as shown, without pinpoint and marker ("..." quoted for a quote)
    n: int  # the passage it cites
    kind: str  # "quote" | "model"
    provision: _Provision

    @property
    def own_words(self) -> str:
        """What the line states beyond a list's shared lead-in (what repeats are judged on)."""
        return self.provision.passage.text if self.kind == "quote" else self.text

    def line(self, number: int | None = None, lead_in: bool = True) -> str:
        """`§ 97.313(b): "No station may ..." [n]`; without the lead-in of a list item whose
        list the line before quoted already."""
        p = self.provision.passage
        text = self.text
        if self.kind == "quote" and not lead_in and p.context:
            text = trim_quote(p.text)
        body = f'"{text}"' if self.kind == "quote" else text
        return f"{p.pinpoint}: {body} [{self.n if number is None else number}]"


def _normalised_words(text: str) -> set[str]:
    return content_tokens(strip_markers(text))


def _numbers(text: str) -> set[tuple]:
    return {
        (q.unit, round(q.value, 9))
        for q in extract_quantities(text)
        if q.kind in ("quantity", "number")
    }


# Words that turn one rule into another: "Coast station frequencies above 27500 kHz" is no
# repeat of "... below 27500 kHz" (§ 80.215(b), (c)), however alike the rest.
_POLARITY = frozenset(
    "above below over under more less greater fewer higher lower before after not no except "
    "unless only minimum maximum".split()
)


def _polarity(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w in _POLARITY}


def _sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text, min_chars=0)] or [text]


def is_repeat(text: str, kept: Sequence[str]) -> bool:
    """Does a sentence of `text` repeat a sentence of the kept lines? (A line of two
    sentences that repeats one of them repeats itself in part: "... The maximum power must
    not exceed the values listed below." after the same words in § 80.215(b).)"""
    earlier = [sentence for line in kept for sentence in _sentences(line)]
    return any(_repeats(sentence, earlier) for sentence in _sentences(text))


def _repeats(sentence: str, kept: Sequence[str]) -> bool:
    """A kept sentence states the same numbers, the same polarity words ("above", "not",
    ...) and at least REPEAT_OVERLAP of this one's words (of three or more): it adds
    nothing."""
    words, numbers = _normalised_words(sentence), _numbers(sentence)
    if len(words) < 3:
        return False
    polarity = _polarity(sentence)
    for other in kept:
        if _numbers(other) != numbers or _polarity(other) != polarity:
            continue
        if len(words & _normalised_words(other)) / len(words) >= REPEAT_OVERLAP:
            return True
    return False


# A finished sentence in a growing draft: ".", "!" or "?" (and its [n]) before more text.
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?:\s*\[[\d,\s\-–]+\])?(?=\s+\S)|\n")
_TOKEN = re.compile(r"[^\W_]+(?:\.\d+)*")
# "Under § 97.313(a), no station ...": the model's pointer, which the line's pinpoint shows.
_LEAD_PHRASE = re.compile(
    r"^(?:under|per|according to|in|as stated in)\s+(?:§§?\s*|section\s+)[\d.]+[a-z]?"
    r"(?:\([A-Za-z0-9]+\))*\s*,?\s*",
    re.I,
)


def without_lead_phrase(sentence: str) -> str:
    """The sentence without a leading "Under § 97.313(a)," (capitalised again)."""
    rest = _LEAD_PHRASE.sub("", sentence, count=1)
    if rest == sentence or not rest:
        return sentence
    return rest[0].upper() + rest[1:]


def copy_precision(sentence: str, passage_text: str) -> float:
    """Share of the sentence's words that are the passage's words in the passage's order
    (longest common subsequence / sentence words): 1.0 for a shortened copy."""
    words = _TOKEN.findall(strip_markers(sentence).lower())
    source = _TOKEN.findall(passage_text.lower())
    if not words:
        return 0.0
    previous = [0] * (len(source) + 1)
    for word in words:
        current = [0]
        for j, other in enumerate(source, 1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[-1]))
        previous = current
    return previous[-1] / len(words)


# Words that carry a rule's scope or polarity: a shortened copy keeps every one of them.
# Measured: a kept shortening of § 80.102(a)(2) joined "At 15 minute intervals when
# transmission is sustained ..." to "the identification may be deferred ..." and dropped the
# "When public correspondence is being exchanged" between them, so deferring read as always
# allowed; every word was the passage's, in order.
_QUALIFIERS = frozenset(
    "when if unless except provided only where while not no nor until before after".split()
)


def keeps_qualifiers(sentence: str, passage_text: str) -> bool:
    """Does the sentence keep every condition and negation word of the passage (as often)?"""
    need = Counter(w for w in _TOKEN.findall(passage_text.lower()) if w in _QUALIFIERS)
    have = Counter(w for w in _TOKEN.findall(sentence.lower()) if w in _QUALIFIERS)
    return all(have[word] >= count for word, count in need.items())


def _amounts(passage: Passage) -> list:
    """The amounts a passage states (section ids, paragraph marks and markers are none)."""
    return [q for q in extract_quantities(passage.text) if q.kind in ("quantity", "number")]


def _covers(sentence: str, passage: Passage) -> bool:
    """Does the sentence state every amount of the passage's own text?"""
    stated = SimpleNamespace(evidence=sentence, heading=None, section=None)
    return all(quantity_supported(q, stated) for q in _amounts(passage))


# The summarizer -------------------------------------------------------------------------------


class Summarizer:
    def __init__(
        self,
        llm: QLoRAChatModel | None,
        retriever: Retriever | None = None,
        max_new_tokens: int | None = None,
        context_window: int | None = None,
        mode: str | None = None,
        max_provisions: int = MAX_PROVISIONS,
    ):
        """`context_window` may only shrink the model's window (less memory and latency per
        call). `max_new_tokens`: per model call (default: the model's for `raw`,
        DRAFT_TOKENS for `verified`). `llm` None: verified summaries without a model call
        (the quoted provisions)."""
        mode = mode or DEFAULT_MODE
        if mode not in SUMMARY_MODES:
            raise ValueError(
                f"Unknown summary mode {mode!r}; use one of {', '.join(SUMMARY_MODES)}"
            )
        if llm is None and mode == "raw":
            raise ValueError("A raw summary is the model's text: it needs a model.")
        self.llm = llm
        self.retriever = retriever
        self.mode = mode
        self.max_provisions = max_provisions
        default_tokens = DRAFT_TOKENS if mode != "raw" else llm.max_new_tokens
        self.max_new_tokens = max_new_tokens or default_tokens
        window = getattr(llm, "context_window", None) or 2048
        self.context_window = min(context_window or window, window)

    # Entry points -------------------------------------------------------------------------

    def summarize_source(
        self, source: str, focus: str | None = None, root: str | None = None
    ) -> SummaryResult:
        """Summarize one ingested document, reading its chunks in order. `root`: only the
        chunks ingested from that folder (a name indexed under several roots)."""
        from ingest.pipeline import document_text

        collection = self.retriever.collection if self.retriever else None
        settings = self.retriever.settings if self.retriever else None
        chunks = document_text(source, collection=collection, settings=settings)
        if root is not None:
            chunks = [c for c in chunks if (c.get("metadata") or {}).get("root") == root]
        if not chunks:
            where = f" under root {root!r}" if root is not None else ""
            raise SourceNotFoundError(
                f"No chunks of {source!r}{where} in collection {collection or '(default)'}. "
                "Sources are paths relative to the ingest root, e.g. "
                "'kdb_447498_rf_exposure.pdf'; list them with `fcc-rag summarize --list` "
                "(or GET /api/documents)."
            )
        return self.summarize_chunks(chunks, focus=focus)

    def summarize_query(self, query: str, k: int = 8, mode: str | None = None) -> SummaryResult:
        """Summarize what the retriever finds for a query, with regard to that query
        (`mode`: the retrieval mode)."""
        chunks = self.retriever.search(query, k=k, mode=mode)
        return self.summarize_chunks(chunks, focus=query)

    def summarize_chunks(self, chunks: Sequence[Any], focus: str | None = None) -> SummaryResult:
        """Chunks are RetrievedChunk objects or their dicts (`document_text` rows)."""
        if self.mode != "raw":
            return self._verified([_as_chunk(c) for c in chunks], focus)
        texts = [str(_field(c, "text") or "") for c in chunks]
        result = self.summarize_pieces([t for t in texts if t.strip()], focus)
        result.sources = [_chunk_source(n, c) for n, c in enumerate(chunks, 1)]
        return result

    def summarize_text(self, text: str, focus: str | None = None) -> SummaryResult:
        """A long text (e.g. a long answer): split where needed, then map-reduce."""
        if self.mode != "raw":
            chunk = SimpleNamespace(text=text or "", metadata={"source": "text"}, id=None)
            return self._verified([chunk] if (text or "").strip() else [], focus)
        return self.summarize_pieces([text], focus)

    # Verified: extract, condense, verify -------------------------------------------------

    def _verified(self, chunks: list[Any], focus: str | None) -> SummaryResult:
        started = time.perf_counter()
        mode = "verified" if self._condenses else "extractive"  # no model: quotes only
        result = SummaryResult(summary="", chunks=len(chunks), mode=mode)
        timings = {"extract_s": 0.0, "generate_s": 0.0, "verify_s": 0.0}
        chunks = [c for c in chunks if (getattr(c, "text", "") or "").strip()]
        if not chunks:
            result.seconds = time.perf_counter() - started
            result.timings = {**timings, "total_s": result.seconds}
            return result
        budget = self._verified_budget()
        groups = self._pack_chunks(chunks, budget)
        state = _State(result, timings, focus)
        partials = [self._map(group, state) for group in groups]
        while len(partials) > 1:
            if result.levels >= MAX_LEVELS:
                raise RuntimeError("Summaries do not shrink: raise the context window.")
            result.levels += 1
            pooled = [partials[i : i + 2] for i in range(0, len(partials), 2)]
            partials = [
                self._reduce(group, state) if len(group) > 1 else group[0] for group in pooled
            ]
        self._finish(result, partials[0], state)
        result.seconds = time.perf_counter() - started
        result.timings = {**timings, "total_s": result.seconds}
        return result

    @staticmethod
    def summary_chars(chars: int) -> int:
        """Characters of quotes a summary of `chars` characters of text may hold."""
        return int(max(MIN_SUMMARY_CHARS, min(MAX_SUMMARY_CHARS, SUMMARY_SHARE * chars)))

    @property
    def _condenses(self) -> bool:
        return self.mode == "verified" and self.llm is not None

    def _verified_budget(self) -> int:
        """Tokens of chunk text one map step reads (the window less the prompt around the
        provisions and the draft): the same grouping as a raw summary's."""
        if self.llm is None:  # no tokenizer: about CHARS_PER_TOKEN characters a token
            return self.context_window - self.max_new_tokens - 80
        overhead = self.llm.count_message_tokens(build_condense_messages_for_provisions([])) + 8
        budget = self.context_window - self.max_new_tokens - overhead
        if budget < 2 * self.max_new_tokens:
            raise ValueError(
                f"The context window ({self.context_window} tokens) is too small to summarize "
                f"with max_new_tokens={self.max_new_tokens}: lower max_new_tokens."
            )
        return budget

    def _pack_chunks(self, chunks: list[Any], budget: int) -> list[list[Any]]:
        """Consecutive chunks grouped so each group's text fits the budget (a map step)."""
        groups: list[list[Any]] = []
        used = budget + 1
        for chunk in chunks:
            if self.llm is None:
                cost = len(chunk.text) // CHARS_PER_TOKEN + 2
            else:
                cost = self.llm.count_tokens(chunk.text) + 2
            if used + cost > budget and (not groups or groups[-1]):
                groups.append([])
                used = 0
            groups[-1].append(chunk)
            used += cost
        return groups

    def _map(self, chunks: list[Any], state: _State) -> list[_Claim]:
        """Extract a group's provisions, condense and verify them."""
        began = time.perf_counter()
        passages = with_lead_ins(unique_passages(chunks))
        for passage in passages:
            state.contexts[id(passage)] = next(
                (c.text for c in chunks if str(getattr(c, "id", None)) == passage.chunk_id), None
            )
            state.chunk_index[id(passage)] = next(
                (
                    (getattr(c, "metadata", None) or {}).get("chunk_index")
                    for c in chunks
                    if str(getattr(c, "id", None)) == passage.chunk_id
                ),
                None,
            )
        provisions = self._rank(passages, state)
        chars = sum(len(p.text) for p in passages)
        state.chars += chars
        chosen = self._choose(provisions, self.summary_chars(chars))
        state.timings["extract_s"] += time.perf_counter() - began
        return self._condense(chosen, state)

    def _reduce(self, partials: list[list[_Claim]], state: _State) -> list[_Claim]:
        """Merge partial summaries: pool their lines, choose the best provisions again, let
        the model condense the quoted ones and verify its sentences (every reduce step)."""
        claims = [claim for partial in partials for claim in partial]
        pooled = list({id(c.provision): c.provision for c in claims}.values())
        chosen = {id(p) for p in self._choose(pooled, self.summary_chars(state.chars))}
        kept = [c for c in claims if id(c.provision) in chosen]
        condensed = [c for c in kept if c.kind == "model"]
        quoted = sorted(
            {id(c.provision): c.provision for c in kept if c.kind == "quote"}.values(),
            key=lambda p: p.order,
        )
        return self._condense(quoted, state, condensed)

    def _rank(self, passages: list[Passage], state: _State) -> list[_Provision]:
        leads = state.leads
        provisions = []
        cosines = None
        if state.focus and passages:
            vectors = encode_texts([state.focus] + [p.evidence for p in passages])
            cosines = vectors[1:] @ vectors[0]
        for index, passage in enumerate(passages):
            section_key = (passage.source, passage.section, passage.page)
            lead = leads.get(section_key, 0) if passage.section else None
            if passage.section:
                leads[section_key] = lead + 1
            rank = provision_score(passage, lead)
            if cosines is not None:
                rank += W_FOCUS * float(cosines[index])
            state.order += 1
            provisions.append(_Provision(passage, state.order, rank))
        return provisions

    def _choose(self, provisions: list[_Provision], budget: int) -> list[_Provision]:
        """The best provisions whose quotes fit `budget` characters, in document order.

        Greedy by rank, less W_SAME_LIST / W_SAME_PARAGRAPH for each provision already chosen
        from the same list or paragraph; a list's lead-in and an item quoting it never both.
        """
        chosen: list[_Provision] = []
        remaining = sorted(provisions, key=lambda p: p.order)
        used = 0
        leads: set[str] = set()
        while remaining and len(chosen) < self.max_provisions:
            best, best_key = None, None
            for provision in remaining:
                if _conflicts(provision, chosen):
                    continue
                same_list = sum(
                    provision.list_key is not None and c.list_key == provision.list_key
                    for c in chosen
                )
                same_paragraph = sum(c.key == provision.key for c in chosen)
                same_section = sum(c.key[:2] == provision.key[:2] for c in chosen)
                value = (
                    provision.rank
                    + W_SAME_LIST * same_list
                    + W_SAME_PARAGRAPH * same_paragraph
                    + W_SAME_SECTION * same_section
                )
                if best_key is None or (-value, provision.order) < best_key:
                    best, best_key = provision, (-value, provision.order)
            if best is None:
                break
            context = best.passage.context
            cost = len(trim_quote(best.passage.text))
            cost += len(context) if context and context not in leads else 0
            if len(chosen) >= MIN_PROVISIONS and used + cost > budget:
                break
            chosen.append(best)
            remaining.remove(best)
            used += cost
            if context:
                leads.add(context)
        return sorted(chosen, key=lambda p: p.order)

    def _condense(
        self,
        provisions: list[_Provision],
        state: _State,
        condensed: Sequence[_Claim] = (),
    ) -> list[_Claim]:
        """The quoted provisions, with the verified model sentences that condense them."""
        for provision in provisions:
            state.number(provision)
        quotes = [
            _Claim(_quote_text(p.passage), state.numbers[id(p)], "quote", p) for p in provisions
        ]
        claims = list(condensed)
        if not self._condenses or not provisions:
            return sorted(claims + quotes, key=lambda c: c.provision.order)
        shown = self._fit(provisions, state)
        if not shown:  # every provision was shown to the model before (greedy: same draft)
            return sorted(claims + quotes, key=lambda c: c.provision.order)
        state.tried.update(id(p) for p in shown)
        began = time.perf_counter()
        messages = build_condense_messages_for_provisions([state.prompt_source(p) for p in shown])
        draft = self._first_sentence(messages, state.result)
        state.drafts.append(draft)
        state.timings["generate_s"] += time.perf_counter() - began
        began = time.perf_counter()
        evidence = [replace(p.passage, score=1.0, n=state.numbers[id(p)]) for p in shown]
        verification = verify_answer("", draft, evidence)
        by_n = {state.numbers[id(p)]: p for p in shown}
        state.result.dropped.extend(verification.dropped)
        replaced: set[int] = set()
        kept_lines = [c.own_words for c in claims]
        for sentence in [] if verification.fallback else verification.sentences:
            provision = by_n[sentence.n]
            quote = _quote_text(provision.passage)
            sentence = replace(sentence, text=without_lead_phrase(sentence.text))
            reason = None
            copied = copy_precision(sentence.text, provision.passage.evidence)
            if id(provision) in replaced:
                reason = f"[{sentence.n}] is condensed by an earlier sentence already"
            elif not _covers(sentence.text, provision.passage):
                reason = f"leaves out an amount of [{sentence.n}], which is quoted instead"
            elif copied < COPY_PRECISION:
                reason = (
                    f"not the words of [{sentence.n}] ({copied:.2f} of them in order; "
                    f"{COPY_PRECISION} needed to stand for a quote)"
                )
            elif not keeps_qualifiers(sentence.text, provision.passage.text):
                reason = f"drops a condition or negation of [{sentence.n}], which is quoted instead"
            elif len(sentence.text) >= CONDENSED_RATIO * len(quote):
                reason = f"no shorter than the quote of [{sentence.n}]"
            elif is_repeat(sentence.text, kept_lines):
                reason = "repeats a kept sentence"
            if reason:
                state.result.dropped.append({"text": sentence.text, "reason": reason})
                continue
            claim = _Claim(sentence.text, sentence.n, "model", provision)
            claims.append(claim)
            kept_lines.append(claim.text)
            replaced.add(id(provision))
        state.timings["verify_s"] += time.perf_counter() - began
        claims += [q for q in quotes if id(q.provision) not in replaced]
        return sorted(claims, key=lambda c: c.provision.order)

    def _fit(self, provisions: list[_Provision], state: _State) -> list[_Provision]:
        """The provisions the model sees: the CONDENSE_PASSAGES longest quotes (the ones a
        shorter sentence helps) while the prompt fits the window, in document order."""
        limit = self.context_window - self.max_new_tokens
        shown: list[_Provision] = []
        untried = [p for p in provisions if id(p) not in state.tried]
        longest = sorted(untried, key=lambda p: (-len(p.passage.quote), p.order))
        for provision in longest[:CONDENSE_PASSAGES]:
            trial = sorted([*shown, provision], key=lambda p: p.order)
            messages = build_condense_messages_for_provisions(
                [state.prompt_source(p) for p in trial]
            )
            if self.llm.count_message_tokens(messages) <= limit:
                shown = trial
        return shown

    def _finish(self, result: SummaryResult, claims: list[_Claim], state: _State) -> None:
        """Renumber the cited passages 1.. in the order the summary cites them; drop
        repeats; write the summary lines and sources."""
        texts: list[str] = []
        kept: list[_Claim] = []
        for claim in claims:
            own = claim.own_words
            if is_repeat(own, texts):
                result.dropped.append({"text": claim.text, "reason": "repeats a kept sentence"})
                continue
            kept.append(claim)
            texts.append(own)
        renumber: dict[int, int] = {}
        for claim in kept:
            renumber.setdefault(claim.n, len(renumber) + 1)
        shown = []
        for index, claim in enumerate(kept):
            context = claim.provision.passage.context
            before = kept[index - 1].provision.passage.context if index else None
            lead_in = not (context and context == before and kept[index - 1].kind == "quote")
            shown.append(claim.line(renumber[claim.n], lead_in))
        result.summary = "\n".join(shown)
        result.sentences = [
            {
                "text": line,
                "cites": [renumber[claim.n]],
                "kind": claim.kind,
                "pinpoint": claim.provision.passage.pinpoint,
            }
            for line, claim in zip(shown, kept, strict=True)
        ]
        result.fallback = not any(claim.kind == "model" for claim in kept)
        result.draft = "\n\n".join(d for d in state.drafts if d) or None
        sources: dict[int, dict] = {}
        for claim in kept:
            number = renumber[claim.n]
            if number not in sources:
                sources[number] = state.source_record(number, claim.provision)
        result.sources = [sources[n] for n in sorted(sources)]

    # Raw: the model's text, map-reduce ----------------------------------------------------

    def summarize_pieces(self, pieces: Sequence[str], focus: str | None = None) -> SummaryResult:
        started = time.perf_counter()
        result = SummaryResult(summary="", chunks=len(pieces), mode="raw")
        if not pieces:
            result.seconds = time.perf_counter() - started
            result.timings = {"total_s": result.seconds}
            return result
        budget = self._budget(build_summary_messages("", focus))
        groups = self._pack(self._split_long(pieces, budget), budget)
        summaries = [
            self._call(build_summary_messages("\n\n".join(g), focus), result) for g in groups
        ]
        combine_budget = self._budget(build_combine_messages([], focus))
        while len(summaries) > 1:
            if result.levels >= MAX_LEVELS:
                raise RuntimeError(
                    "Summaries do not shrink: raise the context window or lower max_new_tokens."
                )
            result.levels += 1
            groups = self._pack(self._split_long(summaries, combine_budget), combine_budget)
            if len(groups) == len(
                summaries
            ):  # nothing fits together: merge pairs anyway, cut to fit
                groups = [summaries[i : i + 2] for i in range(0, len(summaries), 2)]
            summaries = [
                self._call(build_combine_messages(g, focus), result) if len(g) > 1 else g[0]
                for g in groups
            ]
        result.summary = summaries[0].strip()
        result.draft = result.summary
        result.seconds = time.perf_counter() - started
        result.timings = {"generate_s": result.seconds, "total_s": result.seconds}
        return result

    def _budget(self, empty_messages: list[dict]) -> int:
        """Tokens left for text after the prompt around it and the summary to generate."""
        overhead = self.llm.count_message_tokens(empty_messages) + 8
        budget = self.context_window - self.max_new_tokens - overhead
        if budget < 2 * self.max_new_tokens:
            raise ValueError(
                f"The context window ({self.context_window} tokens) is too small to summarize with "
                f"max_new_tokens={self.max_new_tokens}: lower max_new_tokens."
            )
        return budget

    def _split_long(self, pieces: Sequence[str], budget: int) -> list[str]:
        """Pieces longer than the budget are split at token boundaries."""
        tokenizer = self.llm.tokenizer
        out: list[str] = []
        for piece in pieces:
            ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            if len(ids) <= budget:
                out.append(piece)
                continue
            out.extend(tokenizer.decode(ids[i : i + budget]) for i in range(0, len(ids), budget))
        return out

    def _pack(self, pieces: Sequence[str], budget: int) -> list[list[str]]:
        """Consecutive pieces grouped greedily so each group fits the budget."""
        groups: list[list[str]] = []
        used = budget + 1
        for piece in pieces:
            cost = self.llm.count_tokens(piece) + 2
            if used + cost > budget:
                groups.append([])
                used = 0
            groups[-1].append(piece)
            used += cost
        return groups

    def _first_sentence(self, messages: list[dict], result: SummaryResult) -> str:
        """The model's draft up to its first complete sentence (with its [n]): one condensed
        provision is all a step uses. Generated whole (at most max_new_tokens), not cut off
        mid-stream: a generation thread still running at interpreter exit aborts the process
        (chains.generation.GenerationWorker)."""
        draft = self._call(messages, result, stop=RAG_STOP)
        end = _SENTENCE_END.search(draft)
        return draft[: end.end()].strip() if end else draft

    def _call(
        self, messages: list[dict], result: SummaryResult, stop: list[str] | None = None
    ) -> str:
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if stop is not None:
            options["stop"] = stop
        reply = self.llm.invoke(messages, **options)
        usage = reply.usage_metadata or {}
        result.calls += 1
        result.usage["prompt_tokens"] += usage.get("input_tokens", 0)
        result.usage["completion_tokens"] += usage.get("output_tokens", 0)
        return str(reply.content).strip()


# Verified summaries: the numbering and records of one run ------------------------------------


class _State:
    """One verified summary in the making: passage numbers, drafts, the result."""

    def __init__(self, result: SummaryResult, timings: dict, focus: str | None):
        self.result = result
        self.timings = timings
        self.focus = focus
        self.order = 0
        self.chars = 0  # characters of text read (the summary's budget)
        self.leads: dict[tuple, int] = {}  # passages seen of each section (W_LEAD)
        self.tried: set[int] = set()  # provisions the model was asked to condense
        self.numbers: dict[int, int] = {}  # id(provision) -> its [n] while summarizing
        self.contexts: dict[int, str | None] = {}  # id(passage) -> its chunk's text
        self.chunk_index: dict[int, int | None] = {}
        self.drafts: list[str] = []

    def number(self, provision: _Provision) -> int:
        if id(provision) not in self.numbers:
            self.numbers[id(provision)] = len(self.numbers) + 1
        return self.numbers[id(provision)]

    def prompt_source(self, provision: _Provision) -> dict[str, Any]:
        p = provision.passage
        return {
            "n": self.numbers[id(provision)],
            "source": p.source,
            "page": p.page,
            "section": p.section,
            "pinpoint": p.pinpoint,
            "text": p.quote,
        }

    def source_record(self, number: int, provision: _Provision) -> dict[str, Any]:
        p = provision.passage
        return {
            "n": number,
            "source": p.source,
            "page": p.page,
            "section": p.section,
            "heading": p.heading,
            "score": round(provision.rank, 4),
            "text": p.quote,
            "cited": True,
            "pinpoint": p.pinpoint,
            "paragraph": p.paragraph,
            "span": list(p.span),
            "context": self.contexts.get(id(p)),
            "chunk_id": p.chunk_id,
            "chunk_index": self.chunk_index.get(id(p)),
        }


def _quote_text(passage: Passage) -> str:
    """A passage's words as a summary quotes them: its lead-in and its text, cut at a
    clause after QUOTE_CHARS."""
    text = trim_quote(passage.text)
    if passage.context:
        return " ".join(f"{passage.context} … {text}".split())
    return text


def _chunk_source(n: int, chunk: Any) -> dict[str, Any]:
    """A raw summary's source: the chunk it read, numbered (nothing is cited)."""
    section = _field(chunk, "section")
    return {
        "n": n,
        "source": _field(chunk, "source"),
        "page": _field(chunk, "page"),
        "section": section,
        "heading": _field(chunk, "heading"),
        "score": _field(chunk, "score"),
        "text": str(_field(chunk, "text") or ""),
        "cited": False,
        "pinpoint": f"§ {section}" if section else None,
        "paragraph": None,
        "span": None,
        "context": None,
        "chunk_id": _field(chunk, "id"),
        "chunk_index": _field(chunk, "chunk_index"),
    }


if __name__ == "__main__":  # `python -m chains.summarize`: the command is cli/summarize.py
    import runpy

    runpy.run_module("cli.summarize", run_name="__main__", alter_sys=True)
