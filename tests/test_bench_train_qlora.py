"""bench.train_qlora on no GPU: the rows it trains on, the loss agreement and the report."""

from __future__ import annotations

import json

from bench import train_qlora


def test_rows_fill_the_length_and_keep_the_answer(tmp_path):
    from core.modeling import load_tokenizer
    from core.models import resolve_base_model

    tokenizer = load_tokenizer(resolve_base_model(None))
    path = tmp_path / "rows.jsonl"
    lengths = train_qlora.make_data(tokenizer, path, 3, 512)
    rows = [json.loads(line)["messages"] for line in path.read_text().splitlines()]
    assert len(rows) == 3 and all(0.85 * 512 <= n <= 512 - 8 for n in lengths), lengths
    assert [m["role"] for m in rows[0]] == ["system", "user", "assistant"]
    assert rows[0][1]["content"].rstrip().endswith("[1].")  # the row's own question is kept
    assert train_qlora.make_data(tokenizer, tmp_path / "again.jsonl", 3, 512) == lengths


def losses(*values):
    return [{"step": i + 1, "loss": v, "t": float(i)} for i, v in enumerate(values)]


def result(variant, tokens_per_s, memory, *loss):
    return {
        "variant": variant,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_all": tokens_per_s * 0.9,
        "peak_memory_gib": memory,
        "losses": losses(*loss),
    }


def test_report_scores_the_goals(tmp_path):
    entry = {
        "shape": "tiny",
        "batch_size": 4,
        "rows": 8,
        "mean_length": 500.0,
        "min_length": 490,
        "max_length_rows": 504,
        "flops_per_token": 1e9,
        "results": [
            result("ours", 2000.0, 1.0, 10.0, 9.0),
            result("trl-peft", 1000.0, 2.0, 10.0, 9.1),
            result("unsloth", 2100.0, 1.0, 10.0, 9.0),
        ],
        "not_run": ["ours-trl"],
        "not_run_why": "no time",
    }
    report = {
        "timestamp": "t",
        "device": "NVIDIA H100 80GB HBM3",
        "peak_flops": 989e12,
        "max_length": 512,
        "batch_size": 4,
        "max_steps": 2,
        "warm_steps": 1,
        "shapes": [entry],
    }
    train_qlora.finish(entry, report)
    ours = entry["results"][0]
    assert ours["speedup_vs_trl"] == 2.0
    assert abs(ours["loss_vs_trl"]["max"] - 0.1 / 9.1) < 1e-9
    text = train_qlora.to_markdown(report)
    assert "| tiny | 0.95× not met | 2.00× met | 1.00× met | 1.10% met |" in text
    assert "ours-trl | not run: no time" in text
    path = tmp_path / "a.json"
    path.write_text(json.dumps(report))
    other = dict(report, device="NVIDIA H200")
    other_path = tmp_path / "b.json"
    other_path.write_text(json.dumps(other))
    merged = train_qlora.merge([path], [path])
    assert len(merged["shapes"][0]["repeats"]) == 3
    import pytest

    with pytest.raises(SystemExit, match="different devices"):
        train_qlora.merge([path, other_path], [])
