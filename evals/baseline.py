"""The guarded baseline (data/eval/baseline.json): tolerances, checks and writing it."""

from __future__ import annotations

import json
from pathlib import Path

from evals.schema import (
    BASELINE_FILE,
    LOWER_IS_BETTER,
    EvalOptions,
    EvalResult,
)

# Baseline ----------------------------------------------------------------------------------


def guarded(key: str) -> bool:
    return not key.startswith("latency.")


def higher_is_better(key: str) -> bool:
    return key.rsplit(".", 1)[-1] not in LOWER_IS_BETTER


# Per-item scores that vary continuously (a changed answer moves them a little), and rates
# bounded by 1; the rest of the guarded metrics are shares of items (0 or 1 each).
CONTINUOUS_METRICS = ("token_f1", "rouge_l", "grounded_cited", "grounded_retrieved")
RATE_METRICS = (
    "false_abstention_rate",
    "answers_with_unsupported_numbers",
    "summaries_with_unsupported_numbers",
    "summaries_with_invented_numbers",
)


def default_tolerance(key: str, count: int) -> float:
    """Room for one retrieval item or two generated items to change on another machine (a
    token flipped early in a greedy answer changes the rest); 0.05 for text-similarity
    scores; at least 0.02."""
    if key.rsplit(".", 1)[-1] in CONTINUOUS_METRICS:
        return 0.05
    if not count:
        return 0.05
    items = 1 if key.startswith("retrieval.") else 2
    return round(max(0.02, items / count), 4)


# Differences of two shares (-1 .. 1): a guard can fail at any baseline, 0 and below too.
SIGNED_METRICS = ("margin_over_bm25",)


def can_fail(key: str, entry: dict) -> bool:
    """False when no value could cross the tolerance (a share already at 0, say): such a
    guard would be a test that cannot fail, so it is left out of the baseline."""
    if key.rsplit(".", 1)[-1] in SIGNED_METRICS:
        return True
    if entry.get("higher_is_better", True):
        return entry["baseline"] - entry["tolerance"] > 0
    if key.rsplit(".", 1)[-1] in RATE_METRICS:
        return entry["baseline"] + entry["tolerance"] < 1
    return True


def load_baseline(path: Path = BASELINE_FILE) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def baseline_failures(aggregate: dict[str, float | None], entries: dict[str, dict]) -> list[str]:
    """One message per metric that fell below its baseline by more than its tolerance."""
    failures = []
    for key, entry in sorted(entries.items()):
        message = check_metric(key, aggregate.get(key), entry)
        if message:
            failures.append(message)
    return failures


def check_metric(key: str, value: float | None, entry: dict) -> str | None:
    baseline, tolerance = entry["baseline"], entry["tolerance"]
    if value is None:
        return f"{key}: no value (baseline {baseline}); the evaluation did not produce it"
    if entry.get("higher_is_better", True):
        if value < baseline - tolerance:
            return (
                f"{key} = {value:.4f} fell below baseline {baseline:.4f} by more than {tolerance}"
            )
    elif value > baseline + tolerance:
        return f"{key} = {value:.4f} rose above baseline {baseline:.4f} by more than {tolerance} (lower is better)"
    return None


def write_baseline(result: EvalResult, profile: str, path: Path = BASELINE_FILE) -> dict:
    """Store this run's metrics as `profile`'s baseline, keeping hand-set tolerances.

    Latency is not guarded (it is the machine's), nor a metric that cannot fail."""
    document = load_baseline(path)
    old = document.get(profile, {}).get("metrics", {})
    entries = {}
    for key, value in sorted(result.aggregate.items()):
        if value is None or not guarded(key):
            continue
        entry = {
            "baseline": round(value, 4),
            "tolerance": old.get(key, {}).get(
                "tolerance", default_tolerance(key, result.counts.get(key, 0))
            ),
        }
        if not higher_is_better(key):
            entry["higher_is_better"] = False
        if can_fail(key, entry):
            entries[key] = entry
    config = {k: v for k, v in result.config.items() if k in EvalOptions(gold=Path()).config()}
    document[profile] = {"gold": result.config["gold"], "config": config, "metrics": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return document[profile]


def baseline_profile(gold: Path) -> str:
    return Path(gold).stem
