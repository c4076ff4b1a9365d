"""`python -m finetune data ...` and argument handling (tokenizer only, no training)."""

from __future__ import annotations

import json

import pytest

from finetune.cli import main


@pytest.fixture()
def qa_csv(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text(
        "question,answer,category,difficulty\n"
        "What part covers unlicensed devices?,Part 15 of 47 CFR.,part15,easy\n"
        "What is SAR?,Specific absorption rate.,rf_exposure,medium\n"
        "What is SAR?,Specific absorption rate.,rf_exposure,medium\n"
        ",no question,part15,hard\n"
    )
    return path


def test_data_stats(qa_csv, capsys):
    assert main(["data", "stats", str(qa_csv), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["examples"] == 2
    assert stats["by_category"] == {"part15": 1, "rf_exposure": 1}
    assert stats["by_difficulty"] == {"easy": 1, "medium": 1}
    total = stats["tokens"]["total"]
    assert 0 < total["p50"] <= total["p90"] <= total["p99"] <= total["max"]
    assert stats["tokens"]["answer"]["max"] < total["max"]
    assert any(":4: question: duplicate" in issue for issue in stats["issues"])
    assert any(":5: question: empty" in issue for issue in stats["issues"])
    assert main(["data", "stats", str(qa_csv)]) == 0
    text = capsys.readouterr().out
    assert "p50" in text and "rf_exposure" in text


def test_data_preview_marks_the_answer_tokens(qa_csv, capsys):
    assert main(["data", "preview", str(qa_csv), "--n", "2", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>user\nWhat part covers unlicensed devices?<|im_end|>" in out
    assert "<|im_start|>assistant\n[[Part 15 of 47 CFR.<|im_end|>\n]]" in out
    assert "[[Specific absorption rate.<|im_end|>\n]]" in out
    assert out.count("carry no loss (label -100)") == 2
    assert main(["data", "preview", str(qa_csv), "--max-length", "20", "--no-color"]) == 0
    assert "TRUNCATED at max_length=20" in capsys.readouterr().out


def test_train_reports_bad_data_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nq1,a1\n,a2\n")
    assert (
        main(["train", "--data", str(bad), "--strict", "--output-dir", str(tmp_path / "out")]) == 2
    )
    assert f"{bad}:3: question: empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["train", "--data", str(tmp_path / "absent.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_config_from_api_names():
    from finetune.config import TrainConfig

    config = TrainConfig.from_dict(
        {
            "conversations": [{"prompt": "q", "response": "a"}],
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-4,
            "output_dir": "/tmp/x",
        }
    )
    assert (config.resolved_epochs, config.resolved_batch_size, config.resolved_learning_rate) == (
        3,
        4,
        1e-4,
    )
    assert config.resolved_gradient_accumulation_steps == 1  # the balanced preset's
    assert config.to_dict()["data"] == "<1 in-memory examples>"
    with pytest.raises(ValueError, match="Unknown training option 'epochz'"):
        TrainConfig.from_dict({"epochz": 1})
    with pytest.raises(ValueError, match="Unknown preset"):
        TrainConfig(data="x.csv", preset="turbo").validate()
