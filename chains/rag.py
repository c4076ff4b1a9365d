"""The RAG chain: condense -> retrieve chunks -> evidence passages -> draft -> verify -> cite.

    chain = RagChain(llm, Retriever())
    result = chain.invoke("What is the power limit in § 15.247?")
    for kind, payload in chain.stream(question, history):  # ("retrieved", [Source]),
        ...       # ("draft", str) model tokens, ("token", str) answer text, ("done", RagResult)

Evidence, not chunks: retrieved chunks are cut into passages along the rule's own structure
(`chains.evidence`: paragraphs (a), (b)(1), table rows, sentences), ranked against the
question, and the best few are numbered with their pinpoints (`§ 97.215(c)`) for the model.

Answer modes (ANSWER_MODE, or `answer_mode=` per call):
- `verified` (default): the best passages are quoted verbatim first, with their pinpoints;
  the model drafts, and `chains.verify` keeps only draft sentences a passage supports (numbers
  with units and their bounds included) that add a passage the quotes do not, attaches or
  corrects their `[n]`, and lists the rest in `dropped`. Quotes stream at once, verified
  sentences as they complete, so a user never sees text that is then taken back.
- `extractive`: the best passages quoted verbatim, no model call.
- `raw`: the model's text as generated (invalid markers removed), for comparison.

When no passage clears the relevance threshold (PASSAGE_THRESHOLD, calibrated on the gold
sets; chunks must also clear SCORE_THRESHOLD on the dense cosine) the model is not called and
the answer says the documents do not cover the question, and what was searched. Below
PASSAGE_CONFIDENT the quotes open with WEAK_MATCH_NOTE: the closest passages may not answer it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from chains.citations import clean_citations
from chains.evidence import (
    W_QUALIFIER,
    Passage,
    answer_each_part,
    cited_paragraphs,
    holds,
    paragraph_markers,
    passages_from_chunks,
    rank_passages,
    score_passages,
    widen_quotes,
)
from chains.prompts import (
    RAG_STOP,
    WEAK_MATCH_NOTE,
    build_condense_messages,
    build_rag_messages,
    format_source,
    no_answer,
)
from chains.qualifiers import with_band_frequencies
from chains.rerank import rerank
from chains.short_answer import format_short_answer, short_answer
from chains.verify import (
    MAX_SENTENCE_CHARS,
    Verification,
    extractive_answer,
    format_quote,
    verify_answer,
)
from core.settings import Settings, get_settings
from core.store import keyword_tokens

if TYPE_CHECKING:
    from chains.llm import QLoRAChatModel
    from chains.retrieval import RetrievedChunk, Retriever

log = logging.getLogger(__name__)

MIN_TRUNCATED_TOKENS = 32  # a cut chunk shorter than this is dropped instead
CONDENSE_MAX_TOKENS = 48
HISTORY_TURNS = 3  # turns of history the condensing prompt sees
ANSWER_MODES = ("verified", "extractive", "raw")
# A short cited answer: once this many sentences are verified the draft is not read further
# (the 135M model loops after a few; each extra sentence costs decode time, not trust).
MAX_VERIFIED_SENTENCES = 2
MAX_QUESTION_CHARS = 2000  # longer questions are cut for retrieval and the prompt (and said so)
CLOSEST_SHOWN = 3  # passages an abstention lists as "closest, below the threshold"
CITED_CHUNKS = 12  # chunks of a section a table row cites, read for its cited paragraphs
# A sentence end in a growing draft: ".", "!" or "?" (with its [n]) before more text, or a newline.
_SENTENCE_END = re.compile(r"[.!?](?:\s*\[[\d,\s\-–]+\])?(?=\s+\S)|\n")
# "§ 97.313", "section 80.215", "97.313?": a question that only names a section.
_SECTION_REF = re.compile(
    r"(?:47\s*C\.?F\.?R\.?\s*)?(?:§{1,2}|\bsec(?:tion|\.)?)?\s*(?<![\d.])(\d{1,3}\.\d{1,4}[a-z]?)"
    r"(?![\d(])",
    re.IGNORECASE,
)
# Words that ask for a whole section without narrowing it: "What does § 97.119 require?",
# "Summarize section 80.310", "§ 15.109". A question with any other word ("What does
# § 97.313 say about spread spectrum?") is ranked passage by passage like any other.
_WHOLE_SECTION_WORDS = frozenset(
    "what which does do is are in the a of me please tell say says require requires cover "
    "covers provide provides state states contain contains mean means summarize summarise "
    "explain describe about rule rules".split()
)


def _top_list(paragraph: str) -> str:
    """ "(f)" for "(f)(3)" and for "(f)(3)(i)": the top list a cited paragraph is in."""
    markers = paragraph_markers(paragraph)
    return markers[0] if len(markers) > 1 else ""


def _within(paragraph: str | None, cited: str) -> bool:
    """Is the passage's paragraph the cited one or under it ("(f)(3)(i)" in "(f)(3), not
    "(f)(10)" in "(f)(1)")?"""
    return bool(paragraph) and (paragraph == cited or paragraph.startswith(f"{cited}("))


def asked_section(question: str) -> str | None:
    """The one section a question asks about as a whole ("What does § 97.119 require?"),
    else None (no section, several, a paragraph, or words that narrow it)."""
    found = {m.group(1) for m in _SECTION_REF.finditer(question)}
    if len(found) != 1:
        return None
    rest = re.findall(r"[^\W_]+", _SECTION_REF.sub(" ", question).lower())
    return found.pop() if all(word in _WHOLE_SECTION_WORDS for word in rest) else None


class Selection(NamedTuple):
    """What `RagChain.select_passages` chose for a question."""

    passages: list[Passage]  # to quote, best first (lists and paragraphs widened)
    searched: dict[str, Any]  # what retrieval looked at, and why it abstained
    chosen: list[Passage]  # the passages as ranked, before their quotes were widened


@dataclass
class Source:
    n: int  # the number the model saw: [n] in the answer
    source: str | None
    page: int | None
    section: str | None
    heading: str | None
    score: float | None
    text: str  # the passage quoted (verbatim; a table row with its header, a fragment with its lead-in)
    cited: bool = False
    pinpoint: str | None = None  # "§ 97.215(c)"; "kdb_447498_rf_exposure.pdf, p. 3"
    paragraph: str | None = None  # "(c)"
    span: list[int] | None = None  # the passage's offsets in `context`
    context: str | None = None  # the whole chunk the passage was cut from (for highlighting)
    chunk_id: str | None = None

    @classmethod
    def from_chunk(cls, n: int, chunk: RetrievedChunk) -> Source:
        return cls(
            n, chunk.source, chunk.page, chunk.section, chunk.heading, chunk.score, chunk.text
        )

    @classmethod
    def from_passage(cls, n: int, passage: Passage, chunk_text: str | None) -> Source:
        return cls(
            n,
            passage.source,
            passage.page,
            passage.section,
            passage.heading,
            round(passage.score, 4),
            passage.quote,
            pinpoint=passage.pinpoint,
            paragraph=passage.paragraph,
            span=list(passage.span),
            context=chunk_text,
            chunk_id=passage.chunk_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RagResult:
    question: str
    standalone_question: str
    answer: str | None
    sources: list[Source] = field(default_factory=list)
    abstained: bool = False
    timings: dict[str, float | None] = field(default_factory=dict)
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0}
    )
    error: str | None = None
    truncated: bool = False  # lower-ranked passages were cut or dropped to fit the context window
    answer_mode: str = "verified"
    draft: str | None = None  # what the model wrote (verified mode: before verification)
    dropped: list[dict] = field(default_factory=list)  # draft sentences no passage supports
    fallback: bool = False  # the answer quotes passages instead of the model's sentences
    searched: dict[str, Any] = field(default_factory=dict)  # what retrieval looked at
    finish_reason: str | None = None  # "stop" | "length" (the token limit cut the draft)
    # The best passage scored below PASSAGE_CONFIDENT: quoted answers open with WEAK_MATCH_NOTE.
    weak_match: bool = False
    # The answer in a few words, first line of quoted answers: "10 W PEP (§ 97.313(j)) [1]"
    # (chains.short_answer); None when the best passage states no amount of the asked kind.
    short_answer: str | None = None
    # The exact chat messages the model saw (None without a model call): feedback keeps them,
    # so a fine-tuning export trains on the served prompt format.
    messages: list[dict] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [s.to_dict() for s in self.sources]
        return data


@dataclass
class _Prepared:
    """Everything before generation: what the model will see, or why it will not be called."""

    question: str
    standalone: str
    sources: list[Source]
    messages: list[dict] | None
    truncated: bool
    started: float
    timings: dict[str, float | None]
    usage: dict[str, int]
    mode: str = "verified"
    error: str | None = None
    searched: dict[str, Any] = field(default_factory=dict)
    passages: list[Passage] = field(default_factory=list)  # numbered, as the sources show them
    short_answer: str | None = None

    @property
    def abstain(self) -> bool:
        return self.error is None and not self.sources


class _Answer:
    """Turns the model's streamed draft into what the user gets, for one answer mode.

    Verified mode, quote first: the best passages, quoted verbatim with their pinpoints, come
    first (they are their own evidence, so they show as soon as retrieval is done); then each
    draft sentence, once complete, that a passage supports and that adds a passage not
    quoted already. A user never sees a sentence that is later taken back. `lead` is the
    text to show before generation, `feed` what to show as the draft grows, `finish` the rest.
    """

    def __init__(self, prepared: _Prepared):
        self.prepared = prepared
        self.draft = ""
        self.shown: list[str] = []  # verified draft sentences already shown, as shown
        self.cited: list[int] = []  # their passages
        self.checked_upto = 0  # draft characters already verified as complete sentences
        self.verification: Verification | None = None
        self.enough = False  # verified mode: enough sentences, or a run-on: stop reading
        self.quotes = quote_passages(prepared) if prepared.mode == "verified" else None

    def lead(self) -> str:
        return self.quotes.answer if self.quotes else ""

    def feed(self, text: str) -> str:
        self.draft += text
        if self.prepared.mode == "raw":
            return text
        complete = _complete_sentences(self.draft)
        if len(self.draft) - len(complete) > MAX_SENTENCE_CHARS:
            self.enough = True  # a run-on the verifier would drop anyway: stop decoding it
        if len(complete) <= self.checked_upto:
            return ""
        self.checked_upto = len(complete)
        return self._show(self._verify(complete))

    def finish(self) -> str:
        if self.prepared.mode == "raw":
            return ""
        return self._show(self._verify(self.draft))

    def _verify(self, draft: str) -> Verification:
        p = self.prepared
        self.verification = verify_answer(p.standalone, draft, p.passages)
        return self.verification

    def _show(self, verification: Verification) -> str:
        if verification.fallback:
            return ""
        quoted = set(self.quotes.cited) if self.quotes else set()
        new = []
        for sentence in verification.sentences:
            piece = f"{sentence.text} [{sentence.n}]"
            if sentence.n not in quoted and piece not in self.shown:
                new.append(piece)
                self.cited.append(sentence.n)
        lead = (" " if self.shown else "\n") if new else ""
        self.shown += new
        self.enough = self.enough or len(self.shown) >= MAX_VERIFIED_SENTENCES
        return lead + " ".join(new)

    def answer(self) -> tuple[str, list[int]]:
        """The verified answer as shown, and the passages it cites."""
        quoted = self.quotes.answer if self.quotes else ""
        text = "\n".join(part for part in (quoted, " ".join(self.shown)) if part)
        cited = list(dict.fromkeys([*(self.quotes.cited if self.quotes else []), *self.cited]))
        return text, cited


def quote_passages(prepared: _Prepared) -> Verification:
    """Verbatim quotes: the best passages, or a named section's opening ones in order; after
    WEAK_MATCH_NOTE when the best passage is a weak match."""
    if "section_only" in prepared.searched:
        quotes = [format_quote(p) for p in prepared.passages]
        cited = [p.n for p in prepared.passages]
        return Verification(answer="\n".join(quotes), fallback=True, cited=cited)
    verification = extractive_answer(prepared.standalone, prepared.passages)
    if prepared.searched.get("weak_match") and verification.answer:
        verification.answer = f"{WEAK_MATCH_NOTE}\n{verification.answer}"
    elif prepared.short_answer and verification.answer:
        verification.answer = f"{prepared.short_answer}\n{verification.answer}"
        verification.cited = list(dict.fromkeys([prepared.passages[0].n, *verification.cited]))
    return verification


def lead_short_answer(
    question: str,
    passages: Sequence[Passage],
    chosen: Sequence[Passage],
    abbreviations: dict[str, str],
) -> str | None:
    """The short answer (`chains.short_answer`), or None: read first from the passages the
    ranking chose, before they were widened to their list or paragraph, then from the quotes.
    Widened, § 97.313(b)'s "1.5 kW PEP" is quoted with (c)'s "200 W PEP" and (j)'s "10 W PEP",
    and the quote states no one amount; chosen, (b) does. Pinpointed to the chosen passage and
    numbered as the quote that holds it."""
    for candidates in (chosen, passages):
        words = short_answer(question, candidates, abbreviations) if candidates else None
        shown = next((p for p in passages if words and holds(p, candidates[0])), None)
        if shown is not None:
            return format_short_answer(words, replace(candidates[0], n=shown.n))
    return None


def _complete_sentences(draft: str) -> str:
    """The draft up to its last sentence end followed by more text (the rest may grow)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(draft)]
    return draft[: ends[-1]] if ends else ""


class RagChain:
    def __init__(
        self, llm: QLoRAChatModel | None, retriever: Retriever, settings: Settings | None = None
    ):
        self.llm = llm
        self.retriever = retriever
        self.settings = settings or get_settings()

    # Public API ------------------------------------------------------------------------

    def invoke(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        answer_mode: str | None = None,
        instructions: str | None = None,
        **gen: Any,
    ) -> RagResult:
        result = None
        for kind, payload in self.stream(
            question, history, k, mode, filters, answer_mode, instructions, **gen
        ):
            if kind == "done":
                result = payload
        return result

    def stream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        answer_mode: str | None = None,
        instructions: str | None = None,
        **gen: Any,
    ) -> Iterator[tuple[str, Any]]:
        gen = self._generation(gen)
        prepared = self._prepare(
            question, history, k, mode, filters, answer_mode, gen, instructions
        )
        yield "retrieved", prepared.sources
        if prepared.messages is None:
            yield from self._without_model(prepared)
            return
        answer, generation_started, first_at = _Answer(prepared), time.perf_counter(), None
        finish = None
        if answer.lead():
            first_at = time.perf_counter()
            yield "token", answer.lead()
        try:
            for chunk in self.llm.stream(prepared.messages, stop=RAG_STOP, **gen):
                finish = (chunk.response_metadata or {}).get("finish_reason") or finish
                if chunk.usage_metadata:
                    self._add_usage(prepared.usage, chunk.usage_metadata)
                if chunk.content:
                    yield "draft", chunk.content
                    shown = answer.feed(chunk.content)
                    if shown:
                        first_at = first_at or time.perf_counter()
                        yield "token", shown
                    if answer.enough:
                        finish = "stop"
                        break
        except Exception as error:  # reported in the result, like every other failure
            log.exception("Generation failed")
            prepared.error = f"Generation failed: {error}"
        rest = answer.finish() if prepared.error is None else ""
        if rest:
            first_at = first_at or time.perf_counter()
            yield "token", rest
        self._time_generation(prepared, generation_started, first_at)
        yield "done", self._finish(prepared, answer, finish)

    async def astream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        answer_mode: str | None = None,
        instructions: str | None = None,
        **gen: Any,
    ) -> AsyncIterator[tuple[str, Any]]:
        gen = self._generation(gen)
        prepared = await asyncio.to_thread(
            self._prepare, question, history, k, mode, filters, answer_mode, gen, instructions
        )
        yield "retrieved", prepared.sources
        if prepared.messages is None:
            for event in self._without_model(prepared):
                yield event
            return
        answer, generation_started, first_at = _Answer(prepared), time.perf_counter(), None
        finish = None
        if answer.lead():
            first_at = time.perf_counter()
            yield "token", answer.lead()
        try:
            async for chunk in self.llm.astream(prepared.messages, stop=RAG_STOP, **gen):
                finish = (chunk.response_metadata or {}).get("finish_reason") or finish
                if chunk.usage_metadata:
                    self._add_usage(prepared.usage, chunk.usage_metadata)
                if chunk.content:
                    yield "draft", chunk.content
                    shown = await asyncio.to_thread(answer.feed, chunk.content)
                    if shown:
                        first_at = first_at or time.perf_counter()
                        yield "token", shown
                    if answer.enough:
                        finish = "stop"
                        break
        except Exception as error:
            log.exception("Generation failed")
            prepared.error = f"Generation failed: {error}"
        rest = await asyncio.to_thread(answer.finish) if prepared.error is None else ""
        if rest:
            first_at = first_at or time.perf_counter()
            yield "token", rest
        self._time_generation(prepared, generation_started, first_at)
        yield "done", self._finish(prepared, answer, finish)

    async def ainvoke(
        self,
        question: str,
        history=None,
        k=None,
        mode=None,
        filters=None,
        answer_mode=None,
        instructions=None,
        **gen,
    ) -> RagResult:
        result = None
        async for kind, payload in self.astream(
            question, history, k, mode, filters, answer_mode, instructions, **gen
        ):
            if kind == "done":
                result = payload
        return result

    def retrieve_only(
        self,
        question: str,
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        score_threshold: float | None = None,
    ) -> RagResult:
        """The evidence passages the chain would use, without loading or calling the model."""
        started = time.perf_counter()
        result = RagResult(question=question, standalone_question=question, answer=None)
        try:
            chunks = self._retrieve(question, k, mode, filters, score_threshold)
            passages, searched, _ = self.select_passages(question, chunks, mode, filters)
        except Exception as error:
            log.exception("Retrieval failed")
            result.error = f"Retrieval failed: {error}"
            passages, searched = [], {}
        elapsed = time.perf_counter() - started
        result.sources = self._number(passages, chunks if not result.error else [])
        result.searched = searched
        result.abstained = not result.sources and result.error is None
        result.timings = {"retrieve_s": elapsed, "first_token_s": None, "total_s": elapsed}
        return result

    # Steps -----------------------------------------------------------------------------

    def condense(
        self, question: str, history: Sequence[tuple[str, str]] | None
    ) -> tuple[str, dict]:
        """A standalone question for retrieval; the model is used only when there is history."""
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        history = [(u, a) for u, a in (history or []) if (u or "").strip()][-HISTORY_TURNS:]
        if not history or asked_section(question):  # "What does § 97.119 require?" stands alone
            return question, usage
        if self.llm is not None:
            reply = self.llm.invoke(
                build_condense_messages(question, history),
                max_new_tokens=CONDENSE_MAX_TOKENS,
                temperature=0.0,
                stop=["\n"],
            )
            self._add_usage(usage, reply.usage_metadata or {})
            candidate = _clean_condensed(str(reply.content))
            if _usable_condensed(candidate, question, history):
                return candidate, usage
        return heuristic_standalone(question, history), usage

    def select_passages(
        self,
        question: str,
        chunks: Sequence[RetrievedChunk],
        mode: str | None = None,
        filters: dict | None = None,
        reread: bool = False,
    ) -> Selection:
        """The best evidence passages for the question, or none when the best is too weak.

        Returns the passages to quote, what was searched, and the passages the ranking chose
        before their quotes were widened. A question about one section as a whole
        ("§ 97.119", "What does § 97.119 require?": `asked_section`) gets that section's
        passages in document order. `reread`: the chat model reorders the kept passages
        (`chains.rerank`, RERANK_WEIGHT); without it no model is called.
        """
        searched = {
            "query": question,
            "mode": mode or self.settings.retrieval_mode,
            "collection": getattr(self.retriever, "collection", None),
            "chunks": len(chunks),
            "threshold": self.settings.passage_threshold,
        }
        section = asked_section(question)
        own = [c for c in chunks if section and c.section == section]
        if section and not own:
            own = self.retriever.search(
                question, k=3, mode="bm25", filters={**(filters or {}), "section": section}
            )
        if own:  # the section's opening passages in document order
            own.sort(key=lambda c: c.chunk_index or 0)
            passages = passages_from_chunks(own)[: self.settings.evidence_passages]
            for passage in passages:
                passage.score = 1.0
            searched["section_only"] = section
            return Selection(passages, searched, passages)
        missing = self.retriever.missing_references(question)
        if missing:  # "§ 15.407", "Part 90": a rule the documents do not hold
            searched["missing_references"] = missing
            return Selection([], searched, [])
        absent = self.retriever.absent_terms(distinctive_terms(question)) if chunks else []
        if chunks and not absent:
            absent = self.retriever.absent_phrases(proper_names(question))
        if absent:  # "GMRS", "Wi-Fi", "Citizens Broadband Radio Service": nowhere in the documents
            searched["absent_terms"] = absent
            return Selection([], searched, [])
        candidates = passages_from_chunks(chunks)
        # "the 30 meter band" ranks as "the 30 meter band (10.1-10.15 MHz)" (the band plan)
        asked = with_band_frequencies(question, self.retriever.band_ranges())
        order = [chunk.id for chunk in chunks]
        abbreviations = self.retriever.abbreviations()
        ranked = rank_passages(
            asked,
            candidates,
            k=self.settings.evidence_passages,
            chunk_order=order,
            abbreviations=abbreviations,
        )
        ranked, chunks, candidates = self._with_cited_standards(
            asked, ranked, chunks, candidates, abbreviations
        )
        best = ranked[0].score if ranked else None
        searched["best_score"] = round(best, 4) if best is not None else None
        dense = [p.dense_score for p in ranked if p.dense_score is not None]
        searched["best_cosine"] = round(max(dense), 4) if dense else None
        if best is None or best < self.settings.passage_threshold:
            searched["closest"] = [
                {"pinpoint": p.pinpoint, "score": round(p.score, 4)} for p in ranked[:CLOSEST_SHOWN]
            ]
            return Selection([], searched, [])
        searched["weak_match"] = best < self.settings.passage_confident
        # Keep passages near the best one: a weak tail only distracts a small model.
        floor = max(self.settings.passage_threshold, best - self.settings.passage_margin)
        kept = [p for p in ranked if p.score >= floor]
        uncovered = self.retriever.uncovered_words(asked_subject(question), kept)
        if uncovered:  # "a low power FM broadcast station": the 60 m rule is not about it
            searched["uncovered_subject"] = uncovered
            searched["closest"] = [
                {"pinpoint": p.pinpoint, "score": round(p.score, 4)} for p in kept[:CLOSEST_SHOWN]
            ]
            return Selection([], searched, [])
        if reread:
            kept = rerank(question, kept, self.llm, self.settings.rerank_weight)
            searched["reranked"] = any(p.likelihood is not None for p in kept)
        kept = answer_each_part(
            asked,
            kept,
            candidates,
            k=self.settings.evidence_passages,
            threshold=self.settings.passage_threshold,
            chunk_order=order,
            abbreviations=abbreviations,
        )
        return Selection(widen_quotes(kept, chunks, candidates), searched, kept)

    def _with_cited_standards(
        self,
        question: str,
        ranked: list[Passage],
        chunks: Sequence[RetrievedChunk],
        candidates: list[Passage],
        abbreviations: dict[str, str],
    ) -> tuple[list[Passage], list[RetrievedChunk], list[Passage]]:
        """`ranked` with the paragraphs a kept table row cites, ranked at least as the row, and
        quoted with it (`Passage.standard_of`).

        § 97.305(c)'s rows give each band's emission types and, by paragraph, the § 97.307
        standards they follow ("20 m | 14.00-14.15 MHz | RTTY, data | (f)(3)."); asked for the
        bandwidth or symbol rate on a band, the rows were quoted and § 97.307(f)(3), which
        states it and never names the band, was not. Only sections whose table heads such a
        column (`Retriever.cited_sections`) are read; the chunks and candidates grow by
        what was fetched (quotes are cut from them)."""
        citing = self.retriever.cited_sections() if ranked else {}
        floor = ranked[0].score - self.settings.passage_margin if ranked else 0.0
        wanted: dict[tuple[str, str], float] = {}  # (section, paragraph) -> the row's score
        for passage in ranked:  # the best row that cites: the others are other cases
            target = citing.get(passage.section or "")
            cited = cited_paragraphs(passage.text) if target and passage.score >= floor else []
            if cited:
                wanted = {(target, paragraph): passage.score for paragraph in cited}
                cited_by = passage.pinpoint
                break
        if not wanted:
            return ranked, list(chunks), candidates
        sections = sorted({section for section, _ in wanted})
        fetched = self.retriever.search(
            question, k=CITED_CHUNKS * len(sections), mode="dense", filters={"section": sections}
        )
        known = {chunk.id for chunk in chunks}
        chunks = [*chunks, *(chunk for chunk in fetched if chunk.id not in known)]

        def row_score(passage: Passage) -> float | None:
            return next(
                (
                    score
                    for (section, paragraph), score in wanted.items()
                    if passage.section == section and _within(passage.paragraph, paragraph)
                ),
                None,
            )

        shown = {(p.chunk_id, p.span) for p in ranked}
        new = [
            p
            for p in passages_from_chunks(fetched)
            if (p.chunk_id, p.span) not in shown and row_score(p) is not None
        ]
        score_passages(question, new, abbreviations=abbreviations)
        lists = {(section, _top_list(paragraph)) for section, paragraph in wanted}
        for passage in [*ranked, *new]:
            row = row_score(passage)
            if row is not None:
                passage.score = max(passage.score, row)
                passage.standard_of = cited_by
            elif (passage.section, _top_list(passage.paragraph or "")) in lists:
                # (f)(5) "19.6 kilobauds" is the standard of other bands' rows: another case
                passage.score -= W_QUALIFIER
        merged = sorted([*ranked, *new], key=lambda p: -p.score)  # stable: a row before its cited
        return merged, chunks, [*candidates, *new]

    def fit_context(
        self,
        question: str,
        sources: Sequence[Source],
        max_new_tokens: int,
        instructions: str | None = None,
    ) -> tuple[list[Source], list[dict], bool]:
        """Keep, best first, the numbered sources that fit in the window after the answer.

        Returns (sources the model sees, messages, truncated). Lower-ranked sources are cut
        (at a token boundary) or dropped, never silently: `truncated` is True and it is logged.
        """
        llm = self.llm
        limit = llm.context_window - max_new_tokens
        budget = limit - llm.count_message_tokens(build_rag_messages(question, [], instructions))
        if budget <= MIN_TRUNCATED_TOKENS:
            raise ValueError(
                f"The question leaves no room for sources in the {llm.context_window}-token context "
                f"window with max_new_tokens={max_new_tokens}: shorten the question or lower max_new_tokens."
            )
        kept: list[Source] = []
        used, truncated = 0, False
        for source in sources:
            cost = llm.count_tokens(format_source(source)) + 2  # + the blank line between entries
            if used + cost <= budget:
                kept.append(source)
                used += cost
                continue
            truncated = True
            room = budget - used - (cost - llm.count_tokens(source.text)) - 4
            if room >= MIN_TRUNCATED_TOKENS:
                kept.append(replace(source, text=self._cut_tokens(source.text, room)))
            break
        messages = build_rag_messages(question, kept, instructions)
        # Token counts of the parts and of the whole can differ by a few at the joins.
        while kept and llm.count_message_tokens(messages) > limit:
            truncated = True
            last = kept[-1]
            keep = llm.count_tokens(last.text) - 16
            if keep >= MIN_TRUNCATED_TOKENS:
                kept[-1] = replace(last, text=self._cut_tokens(last.text, keep))
            else:
                kept.pop()
            messages = build_rag_messages(question, kept, instructions)
        if truncated:
            log.info(
                "Context cut to fit %d tokens: %d of %d passages kept (lowest-ranked dropped or "
                "shortened).",
                limit,
                len(kept),
                len(sources),
            )
        return kept, messages, truncated

    # Internals ---------------------------------------------------------------------------

    def _retrieve(self, query, k, mode, filters, score_threshold=None) -> list[RetrievedChunk]:
        threshold = self.settings.score_threshold if score_threshold is None else score_threshold
        return self.retriever.search(
            query,
            k=k or self.settings.retrieval_k,
            mode=mode or self.settings.retrieval_mode,
            filters=filters,
            score_threshold=threshold if threshold > 0 else None,
            section_chunks=self.settings.section_chunks,
        )

    @staticmethod
    def _number(passages: Sequence[Passage], chunks: Sequence[RetrievedChunk]) -> list[Source]:
        """Number the passages 1.. as the model and the user see them."""
        texts = {chunk.id: chunk.text for chunk in chunks}
        sources = []
        for n, passage in enumerate(passages, 1):
            passage.n = n
            sources.append(Source.from_passage(n, passage, texts.get(passage.chunk_id)))
        return sources

    def _generation(self, gen: dict[str, Any]) -> dict[str, Any]:
        """A short cited answer by default (ANSWER_MAX_TOKENS), and the RAG repetition penalty:
        transformers' penalty also applies to the prompt's tokens, i.e. the passages the
        answer should copy (measured: bench/results/answers.md)."""
        defaults = {
            "max_new_tokens": self.settings.answer_max_tokens,
            "repetition_penalty": self.settings.answer_repetition_penalty,
        }
        return {**defaults, **{key: value for key, value in gen.items() if value is not None}}

    def _answer_mode(self, answer_mode: str | None) -> str:
        mode = answer_mode or self.settings.answer_mode
        if mode not in ANSWER_MODES:
            raise ValueError(f"Unknown answer mode {mode!r}; use one of {', '.join(ANSWER_MODES)}")
        return mode

    def _prepare(
        self, question, history, k, mode, filters, answer_mode, gen, instructions=None
    ) -> _Prepared:
        started = time.perf_counter()
        question = (question or "").strip()
        prepared = _Prepared(
            question,
            question,
            [],
            None,
            False,
            started,
            {"condense_s": 0.0, "retrieve_s": 0.0, "first_token_s": None, "total_s": 0.0},
            {"prompt_tokens": 0, "completion_tokens": 0},
        )
        try:
            prepared.mode = self._answer_mode(answer_mode)
        except ValueError as error:
            prepared.error = str(error)
            return prepared
        if not question:
            prepared.error = "The question is empty: ask something about the indexed documents."
            return prepared
        if self.llm is None and prepared.mode != "extractive":
            prepared.error = (
                "No language model is loaded (this chain was built for retrieval only)."
            )
            return prepared
        if len(question) > MAX_QUESTION_CHARS:
            log.info("Question cut from %d to %d characters", len(question), MAX_QUESTION_CHARS)
            question = question[:MAX_QUESTION_CHARS]
            prepared.truncated = True
        try:
            prepared.standalone, usage = self.condense(question, history)
            self._add_usage(prepared.usage, usage)
            condensed_at = time.perf_counter()
            prepared.timings["condense_s"] = condensed_at - started
            chunks = self._retrieve(prepared.standalone, k, mode, filters)
            passages, prepared.searched, chosen = self.select_passages(
                prepared.standalone, chunks, mode, filters, reread=True
            )
            prepared.timings["retrieve_s"] = time.perf_counter() - condensed_at
            sources = self._number(passages, chunks)
            if not sources:
                return prepared  # abstain: nothing relevant, the model is not called
            section_only = "section_only" in prepared.searched
            if prepared.mode == "extractive" or section_only:
                prepared.sources, prepared.passages = sources, passages
                if not section_only:
                    prepared.short_answer = lead_short_answer(
                        prepared.standalone, passages, chosen, self.retriever.abbreviations()
                    )
                return prepared
            max_new_tokens = gen.get("max_new_tokens") or self.llm.max_new_tokens
            prepared.sources, prepared.messages, cut = self.fit_context(
                prepared.standalone, sources, max_new_tokens, instructions
            )
            prepared.truncated = prepared.truncated or cut
            prepared.passages = passages[: len(prepared.sources)]
            if prepared.mode == "verified":
                prepared.short_answer = lead_short_answer(
                    prepared.standalone, prepared.passages, chosen, self.retriever.abbreviations()
                )
        except Exception as error:
            log.exception("RAG preparation failed")
            prepared.error = str(error)
            prepared.messages = None
            prepared.sources = []
        return prepared

    def _without_model(self, prepared: _Prepared) -> Iterator[tuple[str, Any]]:
        """Abstention, errors, extractive answers and section-only questions."""
        if prepared.error is None:
            text = (
                no_answer(prepared.searched)
                if prepared.abstain
                else quote_passages(prepared).answer
            )
            prepared.timings["first_token_s"] = time.perf_counter() - prepared.started
            yield "token", text
        yield "done", self._finish(prepared, None, None)

    def _time_generation(self, prepared: _Prepared, started: float, first_at: float | None) -> None:
        ended = time.perf_counter()
        if first_at is not None:
            prepared.timings["first_token_s"] = first_at - prepared.started
            prepared.timings["prefill_s"] = first_at - started
            prepared.timings["decode_s"] = ended - first_at
        prepared.timings["generate_s"] = ended - started

    def _finish(self, prepared: _Prepared, answer: _Answer | None, finish: str | None) -> RagResult:
        prepared.timings["total_s"] = time.perf_counter() - prepared.started
        result = RagResult(
            question=prepared.question,
            standalone_question=prepared.standalone,
            answer=None,
            sources=prepared.sources,
            timings=prepared.timings,
            usage=prepared.usage,
            error=prepared.error,
            truncated=prepared.truncated,
            answer_mode=prepared.mode,
            searched=prepared.searched,
            finish_reason=finish,
            messages=prepared.messages,
            weak_match=bool(prepared.searched.get("weak_match")),
        )
        if not result.weak_match:
            result.short_answer = prepared.short_answer
        if prepared.error is not None:
            return result
        if prepared.abstain:
            result.answer, result.abstained = no_answer(prepared.searched), True
            return result
        if answer is None:  # extractive, or a section-only question
            verification = quote_passages(prepared)
            result.answer_mode = "extractive"
            result.answer, result.fallback = verification.answer, True
            result.sources = _mark_cited(prepared.sources, verification.cited)
            return result
        result.draft = answer.draft
        if prepared.mode == "raw":
            result.answer, result.sources = apply_citations(answer.draft, prepared.sources)
            return result
        verification = answer.verification or verify_answer(
            prepared.standalone, answer.draft, prepared.passages
        )
        result.answer, cited = answer.answer()
        result.dropped = verification.dropped
        result.fallback = not answer.shown  # the answer is the quotes alone
        result.sources = _mark_cited(prepared.sources, cited)
        return result

    def _cut_tokens(self, text: str, max_tokens: int) -> str:
        tokenizer = self.llm.tokenizer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return tokenizer.decode(ids[: max(max_tokens - 1, 1)]).rstrip() + " …"

    @staticmethod
    def _add_usage(total: dict[str, int], usage: dict) -> None:
        total["prompt_tokens"] += int(usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0)
        total["completion_tokens"] += int(
            usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0
        )


# An acronym or coined name of the question: two capitals or more ("GMRS", "VoIP", "Wi-Fi").
# "GMRS", "Wi-Fi", "VoIP"; and letters with a number, "E911", "P25", "FT8" (not an emission
# designator such as "J3E", nor a call sign such as "W1AW": letters follow the digits).
_DISTINCTIVE = re.compile(r"\b[A-Z][a-z]*(?:-?[A-Z][A-Za-z0-9]*)+\b|\b[A-Z]{1,3}\d{1,4}\b")
# Everyday words written in capitals, not names of a topic: "Is that OK?" abstained on two
# answerable lay questions of the eCFR gold set (e071, e090) because no rule says "OK".
_EVERYDAY_CAPITALS = frozenset({"OK", "OKAY", "FYI", "ASAP", "FAQ", "DIY", "BTW", "IMO", "PS"})


def distinctive_terms(question: str) -> list[str]:
    """The question's acronyms and coined names. When the documents never use one, they are
    about something else: measured on the eCFR gold set, on-topic questions about GMRS, CB,
    LTE, Wi-Fi, LPFM, VoIP or MBAN score as high as answerable ones on passage similarity
    (0.5-0.57), and this is what tells them apart (bench/results/abstention.md)."""
    terms = _DISTINCTIVE.findall(question)
    return list(dict.fromkeys(t for t in terms if t.upper() not in _EVERYDAY_CAPITALS))


_CAPITALIZED = re.compile(r"[A-Z][a-z]+|[A-Z](?![A-Za-z])|[IVX]+(?![A-Za-z])")
_SENTENCE_START = re.compile(r"(?:^|[.?!:;]\s+|\(\s*)$")


def proper_names(question: str) -> list[str]:
    """Names of two or more capitalized words ("Citizens Broadband Radio Service", "Class C"):
    a service, a form or a program the documents name word for word when they cover it.

    A sentence's first word and "I" do not count; acronyms end a name (they are checked on
    their own, `distinctive_terms`): "Class B AC power" names "Class B"."""
    names, run = [], []
    for match in re.finditer(r"[A-Za-z][A-Za-z0-9]*", question):
        word = match.group(0)
        capitalized = _CAPITALIZED.fullmatch(word) and word != "I"
        first = _SENTENCE_START.search(question[: match.start()]) is not None
        joined = run and question[run[-1][1] : match.start()] in (" ", "-")
        if capitalized and not first and (joined or not run):
            run.append((word, match.end()))
            continue
        if len(run) >= 2:
            names.append(" ".join(w for w, _ in run))
        run = [(word, match.end())] if capitalized and not first else []
    if len(run) >= 2:
        names.append(" ".join(w for w, _ in run))
    return list(dict.fromkeys(names))


# "the maximum ERP of a low power FM broadcast station", "What power may a licensed wireless
# microphone use": what the question is about, ending at the kind of thing it is.
_SUBJECT = re.compile(
    r"\b(?:of|for|may|must|can|should|shall|does|do)\s+(?:an?|the|any|each)\s+"
    r"((?:(?!(?:of|for|to|in|on|at|by|with|from|that|which|who)\b)[\w-]+\s+){0,5}?"
    r"(?:station|device|system|transmitter|service|radio|licensee|operator|vessel|ship|"
    r"network|equipment|repeater|microphone)s?)\b",
    re.IGNORECASE,
)
# Head nouns and words as general as they are: every rule is about some station or device.
_GENERIC_SUBJECT_WORDS = frozenset(
    "station device system transmitter service radio licensee operator equipment "
    "licensed unlicensed new".split()
)


def asked_subject(question: str) -> list[str]:
    """The words that say what an "of a ... station" question is about: "the maximum ERP of a
    low power FM broadcast station" -> ["low", "power", "FM", "broadcast"]. [] when the
    question names no such subject."""
    match = _SUBJECT.search(question)
    if not match:
        return []
    words = re.findall(r"[^\W_]+", match.group(1))
    return [w for w in words if len(w) > 1 and w.lower() not in _GENERIC_SUBJECT_WORDS]


def _mark_cited(sources: Sequence[Source], cited: Sequence[int]) -> list[Source]:
    """Every source the model saw, cited=True for the ones the verified answer cites."""
    return [replace(s, cited=s.n in set(cited)) for s in sources]


def apply_citations(answer: str, sources: Sequence[Source]) -> tuple[str, list[Source]]:
    """Drop markers that point at no source; return (answer, the cited sources, cited=True).

    Without any valid citation, every source the model was given comes back, cited=False.
    """
    cleaned = clean_citations(answer, max((s.n for s in sources), default=0))
    if cleaned.dropped:
        log.info("Dropped citation markers pointing at no source: %s", cleaned.dropped)
    if not cleaned.cited:
        return cleaned.text.strip(), [replace(s, cited=False) for s in sources]
    return cleaned.text.strip(), [replace(s, cited=True) for s in sources if s.n in cleaned.cited]


# Follow-up condensation helpers ------------------------------------------------------------------


def _clean_condensed(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^(standalone question|question)\s*:\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip('"').strip()


def _usable_condensed(candidate: str, question: str, history: Sequence[tuple[str, str]]) -> bool:
    """A rewrite is kept only if it is a short question about the conversation's terms."""
    words = candidate.split()
    if not 2 <= len(words) <= 40:
        return False
    known = set(keyword_tokens(question)) | {t for user, _ in history for t in keyword_tokens(user)}
    return bool(set(keyword_tokens(candidate)) & known)


def heuristic_standalone(question: str, history: Sequence[tuple[str, str]]) -> str:
    """The follow-up plus the key terms of the previous questions it does not repeat."""
    seen = set(keyword_tokens(question))
    terms: list[str] = []
    for user, _ in reversed(history):
        for term in keyword_tokens(user):
            if term not in seen and len(term) > 2:
                seen.add(term)
                terms.append(term)
    return f"{question} ({' '.join(terms[:8])})" if terms else question
