"""`python -m finetune test`: held-out questions answered by the base and by the adapter, scored.

Token F1 (SQuAD-style: lowercased, punctuation and articles dropped) and ROUGE-L F-measure
(rouge-score's LCS, over the same Unicode word tokens, so Korean text scores too) against the
reference answers; greedy decoding; base and adapter come from one load (PEFT's
`disable_adapter()` gives the base).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals import metrics
from finetune.config import TrainConfig
from finetune.data import Example, load_examples, system_prompt_for
from finetune.inference import AdapterModel, generate_texts, load_adapter_model


def token_f1(prediction: str, reference: str) -> float:
    """The chain evaluation's token F1 (evals.metrics): one normalisation for both."""
    return metrics.token_f1(prediction, reference)


def rouge_l(prediction: str, reference: str) -> float:
    return metrics.rouge_l(prediction, reference)["f1"]


@dataclass
class Answered:
    question: str
    category: str
    reference: str
    base: str | None
    adapter: str
    base_f1: float | None
    adapter_f1: float
    base_rouge_l: float | None
    adapter_rouge_l: float


@dataclass
class HeldOutReport:
    adapter: str | None
    data: str
    rows: list[Answered] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[Answered]] = defaultdict(list)
        for row in self.rows:
            groups[row.category].append(row)
        table = {category: _mean_scores(rows) for category, rows in sorted(groups.items())}
        table["ALL"] = _mean_scores(self.rows)
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "data": self.data,
            "summary": self.summary(),
            "rows": [asdict(r) for r in self.rows],
        }

    def format_table(self) -> str:
        summary = self.summary()
        width = max(len(c) for c in summary)
        header = f"{'category':<{width}}  {'n':>4}  {'F1 base':>8}  {'F1 adapter':>10}  {'ROUGE-L base':>12}  {'ROUGE-L adapter':>15}"
        lines = [header, "-" * len(header)]
        for category, s in summary.items():
            lines.append(
                f"{category:<{width}}  {s['n']:>4}  {_fmt(s['base_f1']):>8}  {_fmt(s['adapter_f1']):>10}  "
                f"{_fmt(s['base_rouge_l']):>12}  {_fmt(s['adapter_rouge_l']):>15}"
            )
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def _mean_scores(rows: list[Answered]) -> dict[str, Any]:
    return {
        "n": len(rows),
        "base_f1": _mean([r.base_f1 for r in rows]),
        "adapter_f1": _mean([r.adapter_f1 for r in rows]),
        "base_rouge_l": _mean([r.base_rouge_l for r in rows]),
        "adapter_rouge_l": _mean([r.adapter_rouge_l for r in rows]),
    }


def held_out_examples(info: dict[str, Any]) -> tuple[list[Example], str]:
    """The eval split of a run, rebuilt from its training_info.json (same file, filters and seed)."""
    from finetune.train import prepare_data

    arguments = dict(info.get("arguments") or {})
    data = arguments.get("data")
    if not isinstance(data, str) or not Path(data).is_file():
        raise ValueError(
            "The adapter's training data is not a file here (trained from in-memory data, or moved); "
            "give the questions with --data FILE."
        )
    config = TrainConfig(
        data=data,
        categories=arguments.get("categories"),
        difficulties=arguments.get("difficulties"),
        eval_ratio=arguments.get("eval_ratio", 0.1),
        seed=arguments.get("seed", 42),
    )
    prepared = prepare_data(config)
    if not prepared.eval:
        raise ValueError(
            f"The run held no examples out of {data} (eval_ratio 0 or too few); use --data FILE."
        )
    return prepared.eval, f"{data} (eval split, seed {config.seed})"


def run_test(
    adapter: str | Path,
    data: str | Path | None = None,
    limit: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    compare_base: bool = True,
    base_model: str | None = None,
    quantization: str | None = None,
    device: str | None = None,
    loaded: AdapterModel | None = None,
) -> HeldOutReport:
    loaded = loaded or load_adapter_model(adapter, base_model, quantization, device)
    if data is not None:
        examples, described = load_examples(data), str(data)
    else:
        examples, described = held_out_examples(loaded.info)
    examples = examples[:limit] if limit else examples
    system_prompts = (loaded.info.get("arguments") or {}).get("system_prompts")
    conversations = [
        (
            [m for m in e.messages[:-1]]
            if e.has_system
            else [
                {"role": "system", "content": system_prompt_for(e.category, system_prompts)},
                *e.messages[:-1],
            ]
        )
        for e in examples
    ]
    adapter_answers = generate_texts(
        loaded.model, loaded.tokenizer, conversations, max_new_tokens, batch_size
    )
    base_answers: list[str | None] = [None] * len(examples)
    if compare_base and loaded.has_adapter:
        with loaded.model.disable_adapter():
            base_answers = generate_texts(
                loaded.model, loaded.tokenizer, conversations, max_new_tokens, batch_size
            )
    report = HeldOutReport(str(loaded.adapter_path) if loaded.adapter_path else None, described)
    for example, base, tuned in zip(examples, base_answers, adapter_answers, strict=True):
        report.rows.append(
            Answered(
                question=example.question,
                category=example.category,
                reference=example.answer,
                base=base,
                adapter=tuned,
                base_f1=round(token_f1(base, example.answer), 4) if base is not None else None,
                adapter_f1=round(token_f1(tuned, example.answer), 4),
                base_rouge_l=round(rouge_l(base, example.answer), 4) if base is not None else None,
                adapter_rouge_l=round(rouge_l(tuned, example.answer), 4),
            )
        )
    return report
