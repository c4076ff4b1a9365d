"""Second-stage ranking: the chat model reads each passage and scores the question after it.

The first stage (`chains.evidence.rank_passages`) scores passages from the outside: cosine,
shared words, the asked case's qualifiers, amounts. It cannot tell which of two passages on
one topic the question was written about. Query likelihood can (UPR, Sachan et al. 2022,
"Improving Passage Retrieval with Zero-Shot Question Generation"): the mean log-probability
of the question's tokens after "Passage: <heading + passage>\\nQuestion:" under the served
model, one batched forward pass over the few passages the first stage keeps.

A passage's order moves by `weight` x (its section's best log-probability - the best of all):
the model picks between sections, the first stage still orders a section's paragraphs (it
reads the asked band, class and amount; the model preferred a section's opening paragraph,
e.g. § 97.313(a) "the minimum power necessary" over (b) "1.5 kW PEP" for the maximum), and
the thresholds (abstention, weak match, the margin) stay on the first stage's scale.
Measured side by side with the shipped adapter (`python -m bench.rerank`,
bench/results/rerank.md): the answer's first passage in a gold section, eCFR gold set
0.49 -> 0.53, sample set 0.58 -> 0.60; key facts, citations, abstention and the exam
unchanged; +0.19 s (eCFR) and +0.17 s (sample) at the median on this 2-core CPU. The weight:
0.1-0.3 tie on the eCFR candidates, 0.5 loses (a prototype over stored candidate lists).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from chains.evidence import Passage

log = logging.getLogger(__name__)

PROMPT = "Passage: {heading}{evidence}\nQuestion:"
# Passage tokens the model reads: a paragraph's words, a table row with its header. Longer
# passages are cut, which keeps the batch small (4 passages x ~100 tokens on 2 CPU cores).
MAX_PASSAGE_TOKENS = 96


def passage_prompt(passage: Passage) -> str:
    heading = (passage.heading or "").lstrip("# ").strip()
    return PROMPT.format(heading=f"{heading}\n" if heading else "", evidence=passage.evidence)


def _group(passage: Passage) -> str:
    return passage.section or f"{passage.source}#{passage.page}"


def rerank(question: str, passages: Sequence[Passage], llm: Any, weight: float) -> list[Passage]:
    """`passages` reordered by score + weight x (the best log P(question | passage) of their
    section - the best of all); `likelihood` is set on each passage read.

    The model chooses between sections, not between the paragraphs of one: inside a section
    the first stage's reading of the asked case (band, class, amount) decides. Passages of
    one section only, no model or weight 0: unchanged, and the model is not called."""
    passages = list(passages)
    if len({_group(p) for p in passages}) < 2 or llm is None or weight <= 0:
        return passages
    likelihoods = llm.continuation_logprob(
        [passage_prompt(p) for p in passages], " " + question.strip(), MAX_PASSAGE_TOKENS
    )
    section_best: dict[str, float] = {}
    for passage, likelihood in zip(passages, likelihoods, strict=True):
        passage.likelihood = likelihood
        key = _group(passage)
        section_best[key] = max(section_best.get(key, likelihood), likelihood)
    best = max(likelihoods)
    return sorted(passages, key=lambda p: -(p.score + weight * (section_best[_group(p)] - best)))
