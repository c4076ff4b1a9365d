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


def test_config_takes_field_names_only_and_checks_the_metadata_bounds():
    import dataclasses

    from finetune.config import TrainConfig

    config = TrainConfig.from_dict(
        {
            "data": [{"prompt": "q", "response": "a"}],
            "epochs": 3,
            "batch_size": 4,
            "learning_rate": 1e-4,
            "output_dir": "/tmp/x",
            "max_steps": None,  # None: the field's default
        }
    )
    assert (config.resolved_epochs, config.resolved_batch_size, config.resolved_learning_rate) == (
        3,
        4,
        1e-4,
    )
    assert config.resolved_gradient_accumulation_steps == 1  # the balanced preset's
    recorded = config.to_dict()
    assert recorded["data"] == "<1 in-memory examples>"
    assert set(recorded) == {f.name for f in dataclasses.fields(TrainConfig)} | {"resolved"}
    assert recorded["resolved"]["epochs"] == 3 and recorded["resolved"]["batch_size"] == 4
    for alias in ("num_train_epochs", "per_device_train_batch_size", "conversations", "epochz"):
        with pytest.raises(ValueError, match=f"Unknown training option '{alias}'"):
            TrainConfig.from_dict({alias: 1})
    with pytest.raises(ValueError, match="Unknown preset"):
        TrainConfig(data="x.csv", preset="turbo").validate()
    for bad, message in (
        ({"lora_dropout": 1.0}, "lora_dropout must be < 1"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"max_length": 8}, "max_length must be >= 16"),
        ({"quantization": "2bit"}, "quantization must be one of auto, 4bit, 8bit, none"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig(data="x.csv", **bad).validate()
    with pytest.raises(ValueError, match="No training data"):
        TrainConfig().validate()


def test_quantization_choices_are_the_loaders():
    from core.modeling import QUANTIZATIONS
    from finetune.config import train_options

    (quantization,) = [o for o in train_options() if o.name == "quantization"]
    assert tuple(quantization.choices) == QUANTIZATIONS


def test_train_help_lists_every_train_config_field(capsys):
    import argparse
    import dataclasses

    from cli.main import main as fcc_rag
    from finetune.cli import add_train_parser
    from finetune.config import TrainConfig

    with pytest.raises(SystemExit) as exit_:
        fcc_rag(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    parser = add_train_parser(argparse.ArgumentParser().add_subparsers())
    actions = {action.dest: action for action in parser._actions}
    assert "--config" in text
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help"
        action = actions[f.name]
        assert action.help and action.option_strings[0] in text, f.name
    # the flags the README, the tests and users rely on
    for flag in (
        "--data",
        "--preset",
        "--output-dir",
        "--max-steps",
        "--quantization",
        "--packing",
        "--max-length",
        "--fp32-upcast",
        "--grad-accum",
        "--no-progress",
        "--no-gradient-checkpointing",
        "--system-prompts",
        "--resume",
        "--lora-r",
        "--target-modules",
    ):
        assert flag in text, flag


def test_config_file_values_with_flags_overriding_them(tmp_path):
    from finetune.cli import build_parser, train_config

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"default": "Be brief."}))
    run = tmp_path / "run.yaml"
    run.write_text(
        "data: qa.csv\n"
        "preset: fast\n"
        "learning_rate: 2e-4\n"  # PyYAML reads this as a string
        "max_length: 512\n"
        "packing: true\n"
        "lora_r: 4\n"
        "target_modules: all-linear\n"
        "categories: part15\n"
        f"system_prompts: {prompts}\n"
    )
    argv = ["train", "--config", str(run), "--max-length", "256", "--no-packing"]
    config = train_config(build_parser().parse_args([*argv, "--grad-accum", "3", "--no-progress"]))
    assert (config.data, config.preset, config.learning_rate) == ("qa.csv", "fast", 2e-4)
    assert (config.max_length, config.packing) == (256, False)  # the flags win
    assert (config.lora_r, config.resolved_target_modules, config.categories) == (
        4,
        "all-linear",
        ["part15"],
    )
    assert config.system_prompts == {"default": "Be brief."}
    assert config.gradient_accumulation_steps == 3 and config.progress_bar is False
    assert config.resolved_epochs == 2 and config.resolved_batch_size == 4  # the file's preset
    assert config.lora_alpha == 16  # neither file nor flag: the dataclass default

    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"data": "qa.csv", "epochs": 1, "packing": True}))
    config = train_config(build_parser().parse_args(["train", "--config", str(as_json)]))
    assert (config.epochs, config.packing, config.preset) == (1.0, True, "balanced")

    bad = tmp_path / "bad.yaml"
    for body, message in (
        ("num_train_epochs: 3\n", "unknown training option 'num_train_epochs'"),
        ("lora_r: many\n", "lora_r: invalid literal"),
        ("- data\n", "expected a mapping"),
    ):
        bad.write_text(body)
        with pytest.raises(ValueError, match=message):
            train_config(build_parser().parse_args(["train", "--config", str(bad)]))


def test_train_with_a_config_file_and_a_flag_overriding_it(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nq1,a1\n,a2\n")
    run = tmp_path / "run.yaml"
    run.write_text(f"data: {bad}\nstrict: false\noutput_dir: {tmp_path / 'out'}\n")
    assert main(["train", "--config", str(run), "--strict"]) == 2  # --strict beats the file
    assert f"{bad}:3: question: empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["train", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err
    assert main(["train", "--preset", "fast"]) == 2
    assert "No training data" in capsys.readouterr().err
