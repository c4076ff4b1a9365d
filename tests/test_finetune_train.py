"""Real training runs of the default model (SmolLM2-135M) on the CPU: LoRA and 4-bit QLoRA.

Runs are tiny (a dozen short examples, max_length 128, ~10 steps at a high learning rate) and
shared between tests through module-scoped fixtures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from finetune.config import TrainConfig
from finetune.data import Example, to_training_record, tokenize_record
from finetune.train import build_trainer, train

pytestmark = pytest.mark.slow

FACTS = [
    ("What part of 47 CFR covers unlicensed devices?", "Part 15"),
    ("Which KDB covers RF exposure procedures?", "KDB 447498"),
    ("Which section sets Class B radiated limits?", "Section 15.109"),
    ("Which section sets conducted limits?", "Section 15.107"),
    ("What does SDoC stand for?", "Supplier's Declaration of Conformity"),
    ("Who may certify radio equipment?", "A Telecommunication Certification Body"),
    ("What is the unit of SAR?", "Watts per kilogram"),
    ("Which section covers labelling?", "Section 15.19"),
    ("Which section covers spread spectrum?", "Section 15.247"),
    ("What is an FCC ID made of?", "A grantee code and a product code"),
    ("Which part covers ISM equipment?", "Part 18"),
    ("Which section defines digital devices?", "Section 15.3"),
]


SYSTEM_PROMPTS = {
    "default": "You answer questions on FCC rules."
}  # short: fewer tokens, faster steps


def qa_examples() -> list[Example]:
    categories = ["part15", "rf_exposure", "equipment_authorization"]
    return [
        Example.from_pair(q, f"FCC answer: {a}. FCC answer complete.", categories[i % 3], "easy")
        for i, (q, a) in enumerate(FACTS)
    ]


@pytest.fixture(scope="module", autouse=True)
def one_busy_waiting_thread_at_most():
    """On this shared 2-core machine OpenMP's default busy-waiting makes 2 threads ~7x slower
    than 1 when other processes compete; OMP_WAIT_POLICY=PASSIVE (set before torch loads) fixes
    that, else these tests run single-threaded."""
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_jsonl(path: Path, examples: list[Example]) -> Path:
    with path.open("w") as handle:
        for e in examples:
            handle.write(
                json.dumps(
                    {"messages": e.messages, "category": e.category, "difficulty": e.difficulty}
                )
                + "\n"
            )
    return path


def tiny_config(tmp: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(write_jsonl(tmp / "qa.jsonl", qa_examples())),
        quantization="none",
        device="cpu",
        max_steps=10,
        learning_rate=3e-3,
        batch_size=2,
        max_length=128,
        eval_ratio=0.0,
        logging_steps=1,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        output_dir=str(tmp / "run"),
        progress_bar=False,
        system_prompts=SYSTEM_PROMPTS,
    )
    values.update(overrides)
    return TrainConfig(**values)


def first_and_last_losses(result) -> tuple[float, float]:
    info = json.loads((result.final_model_path / "training_info.json").read_text())
    losses = [entry["loss"] for entry in info["loss_history"]]
    assert len(losses) >= 8, losses
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """Plain LoRA on the fp32 base, 10 steps, a checkpoint every 5 (kept for the resume test)."""
    tmp = tmp_path_factory.mktemp("lora")
    events: list[dict] = []
    config = tiny_config(tmp, eval_ratio=0.2, save_steps=5, keep_checkpoints=True)
    result = train(config, on_progress=events.append)
    return result, events, config


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    return train(tiny_config(tmp, quantization="4bit", max_steps=8))


def test_lora_training_lowers_the_loss_and_writes_the_adapter(lora_run):
    result, events, _ = lora_run
    first, last = first_and_last_losses(result)
    assert last < first * 0.7, (first, last)
    final = result.final_model_path
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "chat_template.jinja",
    ):
        assert (final / name).is_file(), name
    info = json.loads((final / "training_info.json").read_text())
    assert info["quantization"] == "none" and info["global_step"] == 10
    assert info["backend"] == "trl"  # the CPU path: Unsloth is never tried there
    assert info["eval_loss"] == pytest.approx(result.eval_loss) and result.eval_loss > 0
    assert len(info["data_sha256"]) == 64 and info["preset"] == "balanced"
    assert info["arguments"]["learning_rate"] == 3e-3 and info["arguments"]["save_steps"] == 5
    assert info["data"]["train"] + info["data"]["eval"] == len(FACTS) and info["data"]["eval"] >= 2
    assert info["base_model_path"].endswith("SmolLM2-135M-Instruct")
    assert (result.output_dir / "loss_curve.png").stat().st_size > 5000
    steps = [e["step"] for e in events if e["phase"] == "train"]
    assert steps == list(range(1, 11))
    assert all(e["total"] == 10 and e["loss"] is not None for e in events)
    assert events[-1]["eta_s"] == 0 and any(e["phase"] == "eval" for e in events)
    elapsed = [e["elapsed_s"] for e in events]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0


def test_qlora_4bit_training_lowers_the_loss(qlora_run):
    first, last = first_and_last_losses(qlora_run)
    assert last < first * 0.7, (first, last)
    info = json.loads((qlora_run.final_model_path / "training_info.json").read_text())
    assert info["quantization"] == "4bit" and info["eval_loss"] is None
    assert (qlora_run.final_model_path / "adapter_model.safetensors").is_file()
    assert not list(qlora_run.output_dir.glob("checkpoint-*"))  # removed after success by default


def test_prompt_tokens_carry_no_loss(tmp_path):
    setup = build_trainer(tiny_config(tmp_path))
    tokenizer = setup.loaded.tokenizer
    dataset = setup.trainer.train_dataset
    assert len(dataset) == len(FACTS)
    by_answer = {e.answer: e for e in setup.data.train}
    for row in dataset:
        ids, labels = row["input_ids"], row["labels"]
        answer_start = next(i for i, label in enumerate(labels) if label != -100)
        prompt_text = tokenizer.decode(ids[:answer_start])
        assert prompt_text.endswith("<|im_start|>assistant\n")
        assert all(label == -100 for label in labels[:answer_start])
        assert (
            labels[answer_start:] == ids[answer_start:]
        )  # every answer token (and <|im_end|>) is trained
        answer = tokenizer.decode(ids[answer_start:], skip_special_tokens=True).strip()
        example = by_answer[answer]
        # preview/stats tokenization is the very same as what the trainer trains on
        record = to_training_record(example, SYSTEM_PROMPTS)
        assert tokenize_record(tokenizer, record, 128) == {"input_ids": ids, "labels": labels}
    batch = setup.trainer.data_collator([dataset[0], dataset[1]])
    prompt_positions = batch["labels"] == -100
    assert prompt_positions.any() and (~prompt_positions).any()
    assert torch.equal(batch["labels"][~prompt_positions], batch["input_ids"][~prompt_positions])


def test_resume_continues_the_step_count(lora_run, tmp_path):
    result, _, config = lora_run
    checkpoint = result.output_dir / "checkpoint-5"
    assert checkpoint.is_dir() and (result.output_dir / "checkpoint-10").is_dir()
    events: list[dict] = []
    resumed = train(
        tiny_config(
            tmp_path,
            data=config.data,
            eval_ratio=0.2,
            resume=str(checkpoint),
            output_dir=str(tmp_path / "resumed"),
        ),
        on_progress=events.append,
    )
    steps = [e["step"] for e in events if e["phase"] == "train"]
    assert steps == list(range(6, 11))
    info = json.loads((resumed.final_model_path / "training_info.json").read_text())
    assert info["global_step"] == 10
    assert info["loss_history"][0]["step"] <= 5  # the history before the checkpoint came along


def test_chat_model_loads_the_adapter_and_answers_differently(lora_run, chat_model):
    result, _, _ = lora_run
    question = [("system", SYSTEM_PROMPTS["default"]), ("human", FACTS[0][0])]
    base_answer = chat_model.invoke(question, max_new_tokens=16).content
    name = chat_model.load_adapter(result.final_model_path, name="test_finetune_lora")
    try:
        tuned_answer = chat_model.invoke(question, max_new_tokens=16).content
    finally:
        chat_model.set_adapter(None)
        chat_model.unload_adapter(name)
    assert tuned_answer != base_answer
    assert "FCC answer" in tuned_answer
    assert chat_model.invoke(question, max_new_tokens=16).content == base_answer


def test_merge_reproduces_the_adapter_and_the_check_catches_a_broken_merge(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from core.modeling import load_tokenizer
    from finetune.merge import MergeParityError, check_parity, greedy_probes, merge_adapter

    result, _, _ = lora_run
    probes = [FACTS[0][0], "What is an intentional radiator?"]
    with pytest.raises(ValueError, match="Refusing to merge into a 4bit base"):
        merge_adapter(result.final_model_path, tmp_path / "never", quantization="4bit")
    merged = merge_adapter(result.final_model_path, tmp_path / "merged", prompts=probes)
    assert merged.parity.ok and len(merged.parity.probes) == 2
    assert all(p.expected_ids for p in merged.parity.probes)
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "merged" / "chat_template.jinja").is_file()
    assert json.loads((tmp_path / "merged" / "merge_info.json").read_text())["parity_ok"] is True

    tokenizer = load_tokenizer(str(tmp_path / "merged"))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32)
    expected = greedy_probes(model, tokenizer, probes)
    assert check_parity(expected, model, tokenizer, probes).ok
    with torch.no_grad():  # a broken merge: the attention output projections lost
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    report = check_parity(expected, model, tokenizer, probes)
    assert not report.ok and "DIFFERENT" in report.format()
    assert issubclass(MergeParityError, RuntimeError)


def test_cli_test_scores_base_and_adapter_on_the_held_out_split(lora_run, capsys):
    from finetune.cli import main

    result, _, _ = lora_run
    assert (
        main(["test", "--adapter", str(result.output_dir), "--max-new-tokens", "16", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert "eval split" in report["data"]
    assert {row["question"] for row in report["rows"]} <= {q for q, _ in FACTS}
    overall = report["summary"]["ALL"]
    assert overall["n"] == len(report["rows"]) >= 2
    assert overall["adapter_f1"] > overall["base_f1"]  # it learned the answer format
    assert set(report["summary"]) - {"ALL"} <= {"part15", "rf_exposure", "equipment_authorization"}


def test_trainer_wiring_for_neftune_early_stopping_and_all_linear(tmp_path):
    from transformers import EarlyStoppingCallback

    setup = build_trainer(
        tiny_config(
            tmp_path,
            eval_ratio=0.2,
            early_stopping_patience=2,
            neftune_alpha=5.0,
            target_modules="all-linear",
            max_steps=None,
            epochs=3,
        )
    )
    args = setup.trainer.args
    assert args.neftune_noise_alpha == 5.0
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert any(
        isinstance(cb, EarlyStoppingCallback) for cb in setup.trainer.callback_handler.callbacks
    )
    parents = {
        name.rsplit(".", 2)[-2]
        for name, _ in setup.trainer.model.named_modules()
        if name.endswith(".lora_A")
    }
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= parents
    assert "lm_head" not in parents


def test_terminal_chat_with_the_adapter(lora_run):
    import io

    from finetune.chat import chat_loop
    from finetune.inference import load_adapter_model

    result, _, _ = lora_run
    loaded = load_adapter_model(result.final_model_path, quantization="none", device="cpu")
    stdin = io.StringIO(f"{FACTS[0][0]}\n/base\n/reset\n{FACTS[0][0]}\nexit\n")
    stdout = io.StringIO()
    assert (
        chat_loop(
            loaded,
            system_prompt=SYSTEM_PROMPTS["default"],
            max_new_tokens=12,
            stdin=stdin,
            stdout=stdout,
        )
        == 0
    )
    lines = [line for line in stdout.getvalue().splitlines() if "assistant>" in line]
    assert len(lines) == 2
    assert (
        "FCC answer" in lines[0] and "FCC answer" not in lines[1]
    )  # adapter on, then the bare base
    assert "(adapter off)" in stdout.getvalue() and "(history cleared)" in stdout.getvalue()


def test_packing_keeps_the_prompt_masked_and_the_documents_apart(tmp_path):
    setup = build_trainer(tiny_config(tmp_path, packing=True, max_length=256, batch_size=1))
    tokenizer = setup.loaded.tokenizer
    rows = list(setup.trainer.train_dataset)
    assert len(rows) < len(FACTS) and all(
        len(r["seq_lengths"]) > 1 for r in rows
    )  # several examples a row
    for row in rows:
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) <= 256
        trained = tokenizer.decode(
            [i for i, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        )
        assert trained.count("FCC answer complete.<|im_end|>") == len(row["seq_lengths"])
        assert (
            "<|im_start|>" not in trained and "You answer questions" not in trained
        )  # no prompt token
    batch = setup.trainer.data_collator([rows[0]])
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(
        rows[0]["seq_lengths"]
    )  # positions restart per example: separate attention
    assert (batch["labels"][0, starts] == -100).all()
