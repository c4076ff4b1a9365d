"""Summaries scored against a gold set (data/eval/summaries.jsonl on the sample corpus,
data/eval/ecfr_summaries.jsonl on eCFR Parts 97 and 80), in each summary mode side by side.

Per summary, no LLM judging anything (`evals.metrics`):

- `fact_coverage`: key-provision recall, the share of the item's `facts` the summary states
  (`metrics.key_fact_recall`: normalised, whole tokens; "1.5 kW PEP", "200 W PEP");
- `rouge_l`: ROUGE-L F1 against the written reference;
- `cited_sentence_rate`: sentences that carry a valid `[n]` (1..the summary's sources);
- `supported_sentence_rate`: sentences backed by the passage they cite (ROUGE-L precision
  >= 0.5 against it, and every number of the sentence in it or its pinpoint:
  `metrics.cited_support`; a line's leading pinpoint label is a citation, not a claim, and
  is not scored); a sentence that cites nothing is not backed;
- `summaries_with_unsupported_numbers`: 1 when a number of the summary is in no passage it
  cites (nor in a cited pinpoint);
- `summaries_with_invented_numbers`: 1 when a number is nowhere in the document at all;
- `repeated_sentences`: sentences that repeat an earlier one of the same summary (the same
  numbers and REPEAT_OVERLAP of their tokens shared; a pinpoint label does not count).

The runner (`evals.runner.generate`) calls `evaluate_summary_modes` once per model;
variants are named `<model>` with one summary mode and `<model>/<mode>` with several
(`--summary-modes verified,raw`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from evals import metrics
from evals.gold import SummaryItem
from evals.schema import GROUNDED_THRESHOLD, EvalOptions

# A sentence repeats an earlier one when they state the same numbers and share this much of
# their tokens (Jaccard). Not one-sided containment: "Any ... Amateur Extra Class operator
# license may be an auxiliary station." and "A holder of a ... Amateur Extra Class operator
# license may be the control operator of an auxiliary station, ..." (§ 97.201(a)) share 80% of
# the second's tokens and are two rules.
REPEAT_OVERLAP = 0.8
_PINPOINT = re.compile(r"^\s*§§?\s*\d+\.\d+[a-z]?(?:\([A-Za-z0-9]+\))*\s*:\s*")
# The report's column labels, in SUMMARY_METRICS order.
SUMMARY_LABELS = {
    "rouge_l": "ROUGE-L F1",
    "fact_coverage": "key-provision recall",
    "cited_sentence_rate": "sentences citing [n]",
    "supported_sentence_rate": "backed by cited passage",
    "summaries_with_unsupported_numbers": "with uncited number",
    "summaries_with_invented_numbers": "with number not in document",
    "repeated_sentences": "repeated sentences",
}


def without_pinpoints(summary: str | None, labels: Sequence[str]) -> str:
    """The summary with each line's leading pinpoint label ("§ 97.313(b): ",
    "kdb_447498_rf_exposure.pdf, p. 3: ") removed: a citation, not a claim (a long file and
    heading label would otherwise outweigh a short quote's words)."""
    known = sorted({label for label in labels if label}, key=len, reverse=True)
    lines = []
    for line in (summary or "").splitlines():
        for label in known:
            if line.startswith(f"{label}: "):
                line = line[len(label) + 2 :]
                break
        lines.append(line)
    return "\n".join(lines)


# Words that turn one rule into another ("above 27500 kHz" / "below 27500 kHz"): sentences
# that differ in them are no repeats.
_POLARITY = frozenset(
    "above below over under more less greater fewer higher lower before after not no except "
    "unless only minimum maximum".split()
)


def _polarity(tokens: set[str]) -> set[str]:
    return tokens & _POLARITY


def _body(sentence: str) -> str:
    """A summary sentence without its pinpoint label and markers."""
    return _PINPOINT.sub("", metrics.strip_citations(sentence)).strip(' "“”')


def repeated_sentences(summary: str | None) -> int:
    """How many sentences repeat an earlier sentence of the summary: the same numbers and
    polarity words ("above", "not", ...), and REPEAT_OVERLAP of the tokens of the two
    together shared (Jaccard)."""
    seen: list[tuple[set[str], set[str]]] = []
    repeats = 0
    for sentence in metrics.split_sentences(summary):
        body = _body(sentence)
        words = set(metrics.tokens(body))
        if len(words) < metrics.MIN_SENTENCE_TOKENS:
            continue
        numbers = metrics.numbers_in(body)
        if any(
            numbers == other_numbers
            and _polarity(words) == _polarity(other)
            and len(words & other) >= REPEAT_OVERLAP * len(words | other)
            for other, other_numbers in seen
        ):
            repeats += 1
        seen.append((words, numbers))
    return repeats


def cited_sentence_rate(summary: str | None, n_sources: int) -> float | None:
    """Share of sentences (of MIN_SENTENCE_TOKENS or more) with a valid [n] of their own or
    on their line (a quote's marker closes its line)."""
    scored = [
        (s, cited)
        for s, cited in metrics.cited_sentences(summary)
        if len(metrics.tokens(s)) >= metrics.MIN_SENTENCE_TOKENS
    ]
    if not scored:
        return None
    valid = sum(bool(cited) and all(1 <= n <= n_sources for n in cited) for _, cited in scored)
    return valid / len(scored)


def score_summary(
    item: SummaryItem, summary: str, sources: Sequence[dict], document: str
) -> dict[str, float | None]:
    """Every summary metric of one summary. `sources` are the summary's numbered sources
    (n from 1, in order: text, pinpoint), `document` the whole document's text."""
    listed = sorted(sources, key=lambda s: s.get("n") or 0)
    texts = [str(s.get("text") or "") for s in listed]
    labels = [str(s.get("pinpoint") or "") for s in listed]
    claims = without_pinpoints(summary, labels)
    backed = metrics.cited_support(claims, texts, "", labels, GROUNDED_THRESHOLD)
    invented = metrics.numbers_in(summary) - metrics.numbers_in(document)
    invented -= {x for label in labels for x in metrics.numbers_in(label)}
    return {
        "rouge_l": metrics.rouge_l(summary, item.reference)["f1"],
        "fact_coverage": metrics.key_fact_recall(summary, item.facts),
        "cited_sentence_rate": cited_sentence_rate(claims, len(listed)),
        "supported_sentence_rate": backed["supported_sentence_rate"],
        "summaries_with_unsupported_numbers": float(bool(backed["uncited_numbers"])),
        "summaries_with_invented_numbers": float(bool(invented)),
        "repeated_sentences": float(repeated_sentences(claims)),
    }


def document_text(source: str, retriever: Any) -> str:
    """The document's text as indexed (its chunks in order)."""
    from ingest.pipeline import document_text as chunks_of

    chunks = chunks_of(source, collection=retriever.collection, settings=retriever.settings)
    return "\n\n".join(str(c.get("text") or "") for c in chunks)


def summarize_one(summarizer: Any, item: SummaryItem, seed: int, retriever: Any) -> dict:
    """One seeded, greedy summary of a gold document and its scores; a failure is recorded."""
    from transformers import set_seed

    set_seed(seed)
    started = time.perf_counter()
    try:
        result, error = summarizer.summarize_source(item.source), None
    except Exception as exc:  # one failing document must not end the evaluation
        result, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    summary = result.summary if result else ""
    sources = result.sources if result else []
    document = document_text(item.source, retriever) if retriever is not None else ""
    return {
        "id": item.id,
        "source": item.source,
        "mode": getattr(summarizer, "mode", None),
        "summary": summary,
        "error": error,
        "seconds": seconds,
        "calls": result.calls if result else 0,
        "sources": [
            {"n": s.get("n"), "pinpoint": s.get("pinpoint"), "cited": s.get("cited")}
            for s in sources
        ],
        "dropped": result.dropped if result else [],
        "draft": result.draft if result else None,
        "metrics": score_summary(item, summary, sources, document),
    }


def summary_modes(options: EvalOptions) -> list[str]:
    from core.settings import get_settings

    return list(getattr(options, "summary_modes", None) or []) or [get_settings().summary_mode]


def variant_name(model: str, mode: str, modes: Sequence[str]) -> str:
    return f"{model}/{mode}" if len(modes) > 1 else model


def evaluate_summary_modes(
    llm: Any,
    retriever: Any,
    items: Sequence[SummaryItem],
    options: EvalOptions,
    model: str,
    bar: Any = None,
) -> dict[str, list[dict]]:
    """Summaries of every gold item in each summary mode: {variant: records}."""
    from chains.summarize import Summarizer

    modes = summary_modes(options)
    found: dict[str, list[dict]] = {}
    for mode in modes:
        name = variant_name(model, mode, modes)
        summarizer = Summarizer(
            None if mode == "extractive" else llm,
            retriever,
            max_new_tokens=options.max_new_tokens if mode == "raw" else None,
            mode=mode,
        )
        rows = bar(items, options.progress, f"summaries ({name})") if bar else items
        found[name] = [summarize_one(summarizer, item, options.seed, retriever) for item in rows]
    return found
