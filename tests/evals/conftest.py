"""The evaluation run the guarded tests share: the CLI, in process, on the sample corpus.

It runs with the settings stored beside the baseline (data/eval/baseline.json), so the
numbers compare like with like; the model is the session's `chat_model`.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

import evals as ev

ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "data" / "eval" / "gold.jsonl"
SUMMARIES = ROOT / "data" / "eval" / "summaries.jsonl"
ECFR_GOLD = ROOT / "data" / "eval" / "ecfr_gold.jsonl"
ECFR_SUMMARIES = ROOT / "data" / "eval" / "ecfr_summaries.jsonl"  # the eCFR run's --summaries
ECFR_EXAM = ROOT / "data" / "eval" / "ecfr_exam.jsonl"  # the eCFR run's --exam (config "exam")
# Used only until a baseline is written: answers for a fixed subsample, short answers.
DEFAULT_CONFIG = {
    "k": 4,
    "mode": "hybrid",
    "limit": 16,
    "summary_limit": 2,
    "max_new_tokens": 64,
    "seed": 1234,
    "summaries": True,
}


@dataclass
class EvalRun:
    status: int
    stdout: str
    out: Path
    results: dict

    @property
    def json_line(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def profile_config(profile: str) -> dict:
    return ev.load_baseline().get(profile, {}).get("config") or DEFAULT_CONFIG


def cli_args(config: dict) -> list[str]:
    args = ["--k", str(config["k"]), "--mode", config["mode"], "--seed", str(config["seed"])]
    if config.get("retrieval_only"):
        return args + ["--retrieval-only"]
    args += ["--max-new-tokens", str(config["max_new_tokens"])]
    if config.get("limit"):
        args += ["--limit", str(config["limit"])]
    if config.get("summary_limit"):
        args += ["--summary-limit", str(config["summary_limit"])]
    if config.get("answer_modes"):
        args += ["--answer-modes", ",".join(config["answer_modes"])]
    if config.get("summary_modes"):
        args += ["--summary-modes", ",".join(config["summary_modes"])]
    if config.get("exam_limit"):
        args += ["--exam-limit", str(config["exam_limit"])]
    return args


def run_cli(argv: list[str], out: Path, llm=None) -> EvalRun:
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        status = ev.main([*argv, "--out", str(out), "--json", "--no-progress"], llm=llm)
    results = (
        json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    )
    return EvalRun(status, stdout.getvalue(), out, results)


@pytest.fixture(scope="session")
def sample_run(corpus_collection, chat_model, tmp_path_factory) -> EvalRun:
    config = profile_config(ev.baseline_profile(GOLD))
    argv = ["--gold", str(GOLD), "--collection", corpus_collection, *cli_args(config)]
    if config.get("summaries"):
        argv += ["--summaries", str(SUMMARIES)]
    return run_cli(argv, tmp_path_factory.mktemp("eval-sample"), llm=chat_model)
