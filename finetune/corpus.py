"""`python -m finetune data from-corpus`: training examples that answer from retrieved context.

For every question/answer pair, the chunk that holds the answer is found in the collection
(retrieved for the question and for the answer text; it must contain at least `min_overlap` of
the answer's keywords), and distractors are the other chunks retrieved for the question. The
prompt is the chat's own RAG prompt (`chains.prompts.build_rag_messages`) over the shuffled,
numbered chunks; the target is the reference answer with `[n]` after each sentence, n being the
answer chunk's number. For a share of the pairs (`abstain_ratio`) the answer chunk is left out and
the target is the chain's abstention text. Pairs whose answer no chunk holds are skipped (reported).

chains is imported inside the function only: training never depends on it.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core.store import keyword_tokens
from finetune.data import Example, load_examples

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"([.!?])(\s+)(?=[A-Z§(\"'])")
# A distractor in an abstention example may share at most this much of the answer's keywords.
ABSTAIN_MAX_OVERLAP = 0.35


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


@dataclass
class CorpusReport:
    out: Path
    questions: int = 0
    answered: int = 0
    abstaining: int = 0
    skipped: list[str] = field(default_factory=list)
    by_category: Counter = field(default_factory=Counter)

    def format(self) -> str:
        lines = [
            f"{self.out}: {self.answered + self.abstaining} examples from {self.questions} questions "
            f"({self.answered} answered with a citation, {self.abstaining} abstaining, "
            f"{len(self.skipped)} skipped: no chunk holds the answer)",
            "by category: " + ", ".join(f"{c} {n}" for c, n in sorted(self.by_category.items())),
        ]
        lines += [f"  skipped: {s}" for s in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def _source_entry(chunk, n: int) -> dict:
    return {
        "n": n,
        "source": chunk.source,
        "page": chunk.page,
        "section": chunk.section,
        "text": chunk.text,
    }


def build_corpus_examples(
    qa: str | Path,
    out: str | Path,
    collection: str | None = None,
    k: int = 4,
    abstain_ratio: float = 0.15,
    min_overlap: float = 0.5,
    mode: str = "hybrid",
    seed: int = 42,
    retriever=None,
) -> CorpusReport:
    from chains.prompts import NO_ANSWER, build_rag_messages
    from chains.retrieval import Retriever

    if k < 1:
        raise ValueError("k must be at least 1")
    if not 0 <= abstain_ratio <= 1:
        raise ValueError("abstain_ratio must be in [0, 1]")
    retriever = retriever or Retriever(collection)
    if retriever.count() == 0:
        raise ValueError(
            f"Collection {retriever.collection!r} is empty or missing; ingest documents first "
            "(`python -m ingest PATH`) or name another with --collection."
        )
    examples: list[Example] = load_examples(qa)
    rng = random.Random(seed)
    report = CorpusReport(Path(out))
    records = []
    for example in examples:
        report.questions += 1
        question, answer = example.question, example.answer
        for_question = retriever.search(question, k=max(3 * k, 12), mode=mode)
        for_answer = retriever.search(answer, k=4, mode="dense")
        candidates = {c.id: c for c in for_question + for_answer}
        overlap = {cid: answer_overlap(answer, c.text) for cid, c in candidates.items()}
        best = max(candidates.values(), key=lambda c: overlap[c.id], default=None)
        if best is None or overlap[best.id] < min_overlap:
            top = f"{overlap[best.id]:.2f}" if best is not None else "none"
            report.skipped.append(
                f"{example.source}: {question[:70]!r} (best keyword overlap {top})"
            )
            continue
        abstain = rng.random() < abstain_ratio
        ceiling = ABSTAIN_MAX_OVERLAP if abstain else min_overlap
        distractors = [c for c in for_question if c.id != best.id and overlap[c.id] < ceiling]
        chunks = distractors[:k] if abstain else [best, *distractors[: k - 1]]
        if abstain and not chunks:
            abstain, chunks = False, [best]  # nothing unrelated was retrieved: answer instead
        rng.shuffle(chunks)
        sources = [_source_entry(chunk, n) for n, chunk in enumerate(chunks, start=1)]
        if abstain:
            target, cited = NO_ANSWER, None
            report.abstaining += 1
        else:
            cited = next(s["n"] for s, c in zip(sources, chunks, strict=True) if c.id == best.id)
            target = cite(answer, cited)
            report.answered += 1
        report.by_category[example.category] += 1
        records.append(
            {
                "messages": [
                    *build_rag_messages(question, sources),
                    {"role": "assistant", "content": target},
                ],
                "category": example.category,
                "difficulty": example.difficulty,
                "meta": {
                    "from": example.source,
                    "cited": cited,
                    "answer_overlap": round(overlap[best.id], 3),
                    "chunks": [c.id for c in chunks],
                },
            }
        )
    report.out.parent.mkdir(parents=True, exist_ok=True)
    with report.out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.debug("%s", report.format())
    return report
