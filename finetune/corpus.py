"""`python -m finetune data from-corpus`: training records in the exact prompt the chain serves.

For every question/answer pair the record is what `chains.rag.RagChain` would give the model:
the question's chunks retrieved as the chain retrieves them (RETRIEVAL_K, RETRIEVAL_MODE,
SCORE_THRESHOLD), cut into evidence passages and chosen by `chains.evidence.choose_passages`
(EVIDENCE_PASSAGES, PASSAGE_THRESHOLD, PASSAGE_MARGIN), numbered by
`chains.evidence.numbered_sources` and formatted by `chains.prompts.build_rag_messages` -- the
same functions the chain calls, so training and serving cannot drift.

The passage that answers ("gold") is the one that holds the answer verbatim (pairs from
`data from-docs`) or, for a written answer, the one with the most of its keywords (at least
`min_overlap`); it is searched for among the chunks retrieved for the question and for the
answer. When the chain's choice leaves it out, it replaces the weakest passage. It goes to a
random position (`gold_position="random"`, so the adapter learns to read, not to cite [1]) or
stays where the ranking puts it (`"ranked"`). The target is the answer with `[n]` after each
sentence, n the gold passage's number. For a share of the pairs (`abstain_ratio`) the gold
passage and every passage sharing much of the answer are left out (when that leaves none of the
chosen ones, the closest other passages of the retrieved chunks are shown) and the target is
the chain's abstention text (`chains.prompts.NO_ANSWER`). Pairs whose answer no passage holds are skipped
(reported).

chains is imported inside the functions only: training never depends on it at import time.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.store import keyword_tokens
from finetune.data import PROMPT_FORMAT_RAG, Example, load_examples

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"([.!?])(\s+)(?=[A-Z§(\"'])")
# A passage in an abstention example may share at most this much of the answer's keywords.
ABSTAIN_MAX_OVERLAP = 0.35
GOLD_POSITIONS = ("random", "ranked")


def answer_overlap(answer: str, text: str) -> float:
    """Share of the answer's keywords (words, numbers, section ids) that the text contains."""
    wanted = set(keyword_tokens(answer))
    if not wanted:
        return 0.0
    return len(wanted & set(keyword_tokens(text))) / len(wanted)


def cite(answer: str, n: int) -> str:
    """`[n]` after every sentence, before its final punctuation: "A holds [2]. B too [2]."."""
    text = answer.strip()
    text = _SENTENCE_END.sub(lambda m: f" [{n}]{m.group(1)}{m.group(2)}", text)
    if text and text[-1] in ".!?":
        return f"{text[:-1]} [{n}]{text[-1]}"
    return f"{text} [{n}]"


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass
class CorpusReport:
    out: Path
    questions: int = 0
    answered: int = 0
    abstaining: int = 0
    skipped: list[str] = field(default_factory=list)
    by_category: Counter = field(default_factory=Counter)
    gold_positions: Counter = field(default_factory=Counter)  # n of the cited passage
    gold_inserted: int = 0  # the chain's choice left the gold passage out; it was put in
    verbatim: int = 0  # answers found word for word in their passage

    def format(self) -> str:
        lines = [
            f"{self.out}: {self.answered + self.abstaining} examples from {self.questions} questions "
            f"({self.answered} answered with a citation, {self.abstaining} abstaining, "
            f"{len(self.skipped)} skipped: no passage holds the answer)",
            "by category: " + ", ".join(f"{c} {n}" for c, n in sorted(self.by_category.items())),
            "cited passage number: "
            + ", ".join(f"[{n}] {c}" for n, c in sorted(self.gold_positions.items()))
            + f"; {self.verbatim} answers verbatim in their passage, the chain's choice left "
            f"the answer's passage out {self.gold_inserted} times (put in)",
        ]
        lines += [f"  skipped: {s}" for s in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def _find_gold(answer: str, passages: list, min_overlap: float) -> tuple[Any, float, bool]:
    """(the passage that answers, its keyword overlap, whether it holds the answer verbatim)."""
    wanted = _normal(answer).rstrip(".")
    verbatim = [p for p in passages if wanted and wanted in _normal(p.text)]
    if verbatim:
        best = min(verbatim, key=lambda p: len(p.text))
        return best, answer_overlap(answer, best.evidence), True
    scored = [(answer_overlap(answer, p.evidence), -len(p.text), i) for i, p in enumerate(passages)]
    if not scored:
        return None, 0.0, False
    overlap, _, index = max(scored)
    if overlap < min_overlap:
        return None, overlap, False
    return passages[index], overlap, False


def _same_passage(a, b) -> bool:
    """Does passage `a` quote `b` (the same words, or `b` within the sentences of its
    paragraph that `chains.evidence.with_paragraph_sentences` quotes with it)?"""
    return a.source == b.source and _normal(b.text) in _normal(a.text)


def _unrelated(passages, gold, answer: str) -> list:
    """The passages that are not the gold one and hold little of the answer."""
    return [
        p
        for p in passages
        if not _same_passage(p, gold) and answer_overlap(answer, p.evidence) < ABSTAIN_MAX_OVERLAP
    ]


def build_corpus_examples(
    qa: str | Path,
    out: str | Path,
    collection: str | None = None,
    k: int | None = None,
    abstain_ratio: float = 0.15,
    min_overlap: float = 0.5,
    mode: str | None = None,
    seed: int = 42,
    retriever=None,
    gold_position: str = "random",
    settings=None,
) -> CorpusReport:
    """Write the RAG training records of a Q&A file (see the module docstring)."""
    from chains.evidence import choose_passages, numbered_sources, passages_from_chunks
    from chains.prompts import NO_ANSWER, build_rag_messages
    from chains.retrieval import Retriever
    from core.settings import get_settings

    settings = settings or get_settings()
    k = k or settings.retrieval_k
    mode = mode or settings.retrieval_mode
    if k < 1:
        raise ValueError("k must be at least 1")
    if not 0 <= abstain_ratio <= 1:
        raise ValueError("abstain_ratio must be in [0, 1]")
    if gold_position not in GOLD_POSITIONS:
        raise ValueError(f"gold_position must be one of {', '.join(GOLD_POSITIONS)}")
    retriever = retriever or Retriever(collection)
    if retriever.count() == 0:
        raise ValueError(
            f"Collection {retriever.collection!r} is empty or missing; ingest documents first "
            "(`python -m ingest PATH`) or name another with --collection."
        )
    threshold = settings.score_threshold
    examples: list[Example] = load_examples(qa)
    rng = random.Random(seed)
    report = CorpusReport(Path(out))
    records = []
    for example in examples:
        report.questions += 1
        question, answer = example.question, example.answer
        # As the chain retrieves (RagChain._retrieve), plus chunks found by the answer.
        served_chunks = retriever.search(
            question, k=k, mode=mode, score_threshold=threshold if threshold > 0 else None
        )
        extra = retriever.search(question, k=3 * k, mode=mode) + retriever.search(
            answer, k=4, mode="dense"
        )
        pool = {c.id: c for c in served_chunks + extra}
        gold, overlap, verbatim = _find_gold(
            answer, passages_from_chunks(pool.values()), min_overlap
        )
        if gold is None:
            report.skipped.append(
                f"{example.source}: {question[:70]!r} (best keyword overlap {overlap:.2f})"
            )
            continue
        gold_chunk = pool.get(gold.chunk_id)
        chunks = list(served_chunks)
        chunk_added = gold_chunk is not None and all(c.id != gold_chunk.id for c in chunks)
        if chunk_added:
            chunks.append(gold_chunk)  # retrieval missed it; the record shows it found
        chosen, _ = choose_passages(
            question,
            chunks,
            k=settings.evidence_passages,
            threshold=settings.passage_threshold,
            margin=settings.passage_margin,
            abbreviations=retriever.abbreviations(),
        )
        abstain = rng.random() < abstain_ratio
        if abstain:
            passages = _unrelated(chosen, gold, answer)
            if not passages:  # only the answer was chosen ("What is an intentional radiator?"
                # ranks its definition far above the rest): the closest of the others
                closest, _ = choose_passages(
                    question,
                    chunks,
                    k=2 * settings.evidence_passages,
                    threshold=0.0,
                    margin=float("inf"),
                    abbreviations=retriever.abbreviations(),
                )
                passages = _unrelated(closest, gold, answer)[: settings.evidence_passages]
            if not passages:
                abstain = False  # nothing unrelated was retrieved: answer instead
        if not abstain:
            passages = list(chosen)
            position = next((i for i, p in enumerate(passages) if _same_passage(p, gold)), None)
            inserted = position is None
            if inserted:
                report.gold_inserted += 1
                if len(passages) >= settings.evidence_passages:
                    passages.pop()
                passages.append(gold)
                position = len(passages) - 1
            if gold_position == "random" and len(passages) > 1:
                held = passages.pop(position)
                position = rng.randrange(len(passages) + 1)
                passages.insert(position, held)
        else:
            inserted = False
        sources = numbered_sources(passages)
        if abstain:
            target, cited = NO_ANSWER, None
            report.abstaining += 1
        else:
            cited = position + 1
            target = cite(" ".join(answer.split()), cited)
            report.answered += 1
            report.gold_positions[cited] += 1
            report.verbatim += verbatim
        report.by_category[example.category] += 1
        records.append(
            {
                "messages": [
                    *build_rag_messages(question, sources),
                    {"role": "assistant", "content": target},
                ],
                "category": example.category,
                "difficulty": example.difficulty,
                "prompt_format": PROMPT_FORMAT_RAG,
                "meta": {
                    "from": example.source,
                    "cited": cited,
                    "gold": gold.pinpoint,
                    "verbatim": verbatim,
                    # The chain itself would have shown exactly these passages (in ranked
                    # order) when neither is true:
                    "gold_chunk_added": chunk_added,
                    "gold_inserted": inserted,
                    "answer_overlap": round(overlap, 3),
                    "passages": [p.pinpoint for p in passages],
                    "chunks": [p.chunk_id for p in passages],
                },
            }
        )
    report.out.parent.mkdir(parents=True, exist_ok=True)
    with report.out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.debug("%s", report.format())
    return report
