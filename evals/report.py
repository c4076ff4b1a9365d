"""The evaluation's Markdown report and chart (from an `EvalResult`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evals.schema import EvalResult

ANSWER_LABELS = {
    "key_fact_recall": "key-fact recall",
    "token_f1": "token F1 vs reference",
    "citation_validity": "citation validity",
    "citation_precision": "citation precision",
    "cited_answer_rate": "answers with a citation",
    "abstention_accuracy": "abstention accuracy (unanswerable)",
    "false_abstention_rate": "false abstention rate (answerable) ↓",
    "grounded_cited": "grounded sentences (by cited source)",
    "grounded_retrieved": "grounded sentences (by any retrieved)",
    "unsupported_numbers": "numbers in neither sources nor question, per answer ↓",
    "answers_with_unsupported_numbers": "answers with an unsupported number ↓",
    "cited_valid_rate": "answers citing, every citation valid",
    "supported_sentence_rate": "sentences backed by the passage they cite",
    "uncited_number_rate": "answers with a number no cited passage holds ↓",
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _modes(result: EvalResult) -> list[str]:
    from evals.schema import RETRIEVAL_MODES

    present = {key.split(".")[1] for key in result.aggregate if key.startswith("retrieval.")}
    return [mode for mode in RETRIEVAL_MODES if mode in present]


def _variants(result: EvalResult, family: str) -> list[str]:
    return list(
        dict.fromkeys(k.split(".")[1] for k in result.aggregate if k.startswith(f"{family}."))
    )


def render_markdown(result: EvalResult) -> str:
    from evals.schema import LATENCY_STAGES, LEVELS, RETRIEVAL_METRICS, SUMMARY_METRICS

    agg, config = result.aggregate, result.config
    k = config.get("k")
    lines = ["# Evaluation report", ""]
    lines.append(
        f"Gold: `{config.get('gold')}` ({config.get('items')} items, "
        f"{config.get('answer_items')} answered); collection `{config.get('collection')}` "
        f"({config.get('corpus_chunks')} chunks); k = {k}; answer retrieval mode: {config.get('mode')}; "
        f"greedy, seed {config.get('seed')}, max_new_tokens {config.get('max_new_tokens')}."
    )
    model = config.get("model") or {}
    if model:
        lines.append(
            f"Model: {model.get('model')} on {model.get('device')} ({model.get('quantization')}, "
            f"{model.get('dtype')}); variants: "
            + ", ".join(
                f"{name} = {path or 'no adapter'}"
                for name, path in config.get("variants", {}).items()
            )
            + "."
        )
    lines.append("")
    for level in LEVELS:
        lines.append(f"## Retrieval, {level} level (k = {k})")
        lines.append("")
        rows = []
        for mode in _modes(result):
            row = [mode] + [
                _fmt(agg.get(f"retrieval.{mode}.{level}.{m}")) for m in RETRIEVAL_METRICS
            ]
            row.append(_fmt(_ms(agg.get(f"latency.retrieval.{mode}.p50")), 1))
            rows.append(row)
        n = result.counts.get(f"retrieval.{_modes(result)[0]}.{level}.hit@1", 0) if rows else 0
        lines += _table(
            ["retriever", "hit@1", f"hit@{k}", f"recall@{k}", f"MRR@{k}", "p50 ms"], rows
        )
        lines.append(f"Over {n} answerable items.")
        lines.append("")

    lines += _slice_table(result)

    answer_variants = _variants(result, "answer")
    if answer_variants:
        lines.append("## Answers")
        lines.append("")
        rows = []
        for name, label in ANSWER_LABELS.items():
            cells = []
            for variant in answer_variants:
                key = f"answer.{variant}.{name}"
                cells.append(f"{_fmt(agg.get(key))} (n={result.counts.get(key, 0)})")
            rows.append([label] + cells)
        lines += _table(["metric"] + answer_variants, rows)
        lines.append(
            "Key facts and F1 count abstentions on answerable items as misses. A sentence is "
            "grounded when at least half of its tokens appear, in order, in a source "
            "(ROUGE-L precision ≥ 0.5); 'by cited source' counts only sources the answer cites."
        )
        lines.append("")
    summary_variants = _variants(result, "summary")
    if summary_variants:
        lines.append("## Summaries")
        lines.append("")
        rows = [
            [variant]
            + [_fmt(agg.get(f"summary.{variant}.{m}")) for m in SUMMARY_METRICS]
            + [_fmt(agg.get(f"latency.{variant}.summary_s.p50"), 1)]
            for variant in summary_variants
        ]
        from evals.summaries import SUMMARY_LABELS

        labels = [SUMMARY_LABELS.get(m, m) for m in SUMMARY_METRICS]
        lines += _table(["variant", *labels, "p50 s"], rows)
    from evals.exam import render_exam

    lines += render_exam(result)
    if answer_variants:
        lines.append("## Latency (seconds)")
        lines.append("")
        rows = []
        for variant in answer_variants:
            for stage in LATENCY_STAGES:
                rows.append(
                    [variant, stage.removesuffix("_s")]
                    + [_fmt(agg.get(f"latency.{variant}.{stage}.{s}"), 2) for s in ("p50", "p95")]
                )
        lines += _table(["model", "stage", "p50", "p95"], rows)
    misses = _misses(result)
    if misses:
        lines.append(f"## Retrieval misses ({config.get('mode')}, section level, top {k})")
        lines.append("")
        lines += [
            f"- `{item_id}`: {question} (gold: {', '.join(gold)})"
            for item_id, question, gold in misses
        ]
        lines.append("")
    if result.problems:
        lines.append("## Gold data problems")
        lines.append("")
        lines += [f"- {problem}" for problem in result.problems]
        lines.append("")
    return "\n".join(lines)


def _slice_names(result: EvalResult) -> list[str]:
    """The gold slices the aggregate reports retrieval for (`...hit@1@colloquial`)."""
    names = (key.rsplit("@", 1)[1] for key in result.aggregate if key.count("@") == 2)
    return sorted(set(names))


def _slice_table(result: EvalResult) -> list[str]:
    """Section-level retrieval per gold slice beside all items, by retriever."""
    slices = _slice_names(result)
    if not slices:
        return []
    agg, counts, k = result.aggregate, result.counts, result.config.get("k")
    rows = []
    for mode in _modes(result):
        for name in ["all", *slices]:
            suffix = "" if name == "all" else f"@{name}"
            key = f"retrieval.{mode}.section.{{}}{suffix}"
            if key.format("hit@1") not in agg:
                continue
            rows.append(
                [mode, name]
                + [_fmt(agg.get(key.format(m))) for m in ("hit@1", "hit@k", "mrr")]
                + [str(counts.get(key.format("hit@1"), 0))]
            )
    lines = [f"## Retrieval by gold slice, section level (k = {k})", ""]
    lines += _table(["retriever", "slice", "hit@1", f"hit@{k}", f"MRR@{k}", "items"], rows)
    return lines


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _misses(result: EvalResult) -> list[tuple[str, str, list[str]]]:
    mode = result.config.get("mode")
    found = []
    for item in result.items:
        scores = item["retrieval"]["modes"].get(mode, {}).get("section")
        if scores and scores["hit@k"] == 0:
            found.append((item["id"], item["question"], item["sections"]))
    return found


def render_chart(result: EvalResult, path: Path) -> None:
    """Retrieval metrics by retriever; answer metrics by model when answers were generated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evals.schema import RETRIEVAL_METRICS

    agg = result.aggregate
    answer_variants = _variants(result, "answer")
    panels = 2 if answer_variants else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    k = result.config.get("k")
    labels = [m.replace("mrr", "MRR@k").replace("@k", f"@{k}") for m in RETRIEVAL_METRICS]
    _bars(
        axes[0][0],
        labels,
        {
            mode: [agg.get(f"retrieval.{mode}.section.{m}") for m in RETRIEVAL_METRICS]
            for mode in _modes(result)
        },
        "Retrieval (section level)",
    )
    if answer_variants:
        names = [
            "key_fact_recall",
            "token_f1",
            "cited_answer_rate",
            "citation_validity",
            "citation_precision",
            "abstention_accuracy",
            "grounded_retrieved",
        ]
        short = [
            "key facts",
            "token F1",
            "cited",
            "cit. valid",
            "cit. prec.",
            "abstain",
            "grounded",
        ]
        _bars(
            axes[0][1],
            short,
            {v: [agg.get(f"answer.{v}.{n}") for n in names] for v in answer_variants},
            "Answers",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _bars(axis, labels: list[str], series: dict[str, list[float | None]], title: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        heights = [v or 0.0 for v in values]
        bars = axis.bar(positions, heights, width, label=name)
        axis.bar_label(bars, labels=[_fmt(v, 2) for v in values], fontsize=7, padding=1)
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_title(title)
    axis.legend(fontsize=8)
