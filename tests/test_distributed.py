"""Data-parallel training: two CPU processes over gloo through the real CLI (`-m finetune train`
under accelerate's launcher and under torchrun), against one process with the same global batch.

The runs are tiny (the default SmolLM2-135M, 12 short examples, max_length 128, 4 steps) and
shared through a module-scoped fixture. Two processes with batch 2 train on the same global batch
as one process with batch 2 and gradient accumulation 2: the same rows in the same steps, the
loss normalised by the same token count. The adapters then agree to float error, except for
the odd weight whose gradient is ~0: AdamW's first steps move it by about ±lr whatever its size,
so a rounding-level difference can flip its sign. Hence the tolerances below (measured on this
machine: relative difference of all adapter weights ~5e-4, about 1 weight in 10^4 off by more
than 1e-4), against a run with half the global batch that differs by far more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune import distributed
from tests.test_finetune_train import SYSTEM_PROMPTS, qa_examples, tiny_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
STEPS = 4
LR = 3e-3


# The interface (no training) ------------------------------------------------------------------


def test_launch_argv_one_process_and_several():
    assert distributed.launch_argv(1, ["--data", "x.csv"]) == [
        sys.executable,
        "-m",
        "finetune",
        "train",
        "--data",
        "x.csv",
    ]
    assert distributed.launch_argv(0, [])[1:] == ["-m", "finetune", "train"]
    argv = distributed.launch_argv(4, ["--data", "x.csv"])
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "4" and "--multi_gpu" in argv
    assert argv[argv.index("--main_process_port") + 1] == "0"  # a free port, never 29500 twice
    assert argv[argv.index("-m", 3) :] == ["-m", "finetune", "train", "--data", "x.csv"]
    assert distributed.visible_gpus() == (
        torch.cuda.device_count() if torch.cuda.is_available() else 0
    )


def test_rank_info_reads_the_launchers_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.rank_info()
    assert (info.world_size, info.rank, info.local_rank) == (1, 0, 0)
    assert info.is_main and not info.distributed and distributed.is_main_process()
    assert distributed.device_for_rank("cuda") == "cuda"  # one process: unchanged
    assert distributed.on_main(lambda: 41 + 1) == 42
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.rank_info()
    assert (info.world_size, info.rank, info.local_rank) == (4, 5, 1)
    assert info.distributed and not info.is_main and not distributed.is_main_process()
    assert distributed.device_for_rank("cpu") == "cpu"


# Real runs -------------------------------------------------------------------------------------


def _cli_args(
    data: Path, prompts: Path, output: Path | None, grad_accum: int, **extra
) -> list[str]:
    args = [
        "--data",
        str(data),
        "--system-prompts",
        str(prompts),
        "--quantization",
        "none",
        "--device",
        "cpu",
        "--max-steps",
        str(STEPS),
        "--learning-rate",
        str(LR),
        "--batch-size",
        "2",
        "--grad-accum",
        str(grad_accum),
        "--max-length",
        "128",
        "--eval-ratio",
        "0",
        "--logging-steps",
        "1",
        "--warmup-ratio",
        "0",
        "--lr-scheduler",
        "constant",
        "--lora-dropout",
        "0",  # dropout draws differ between ranks and one process
        "--save-steps",
        "2",
        "--keep-checkpoints",
        "--no-progress",
    ]
    if output is not None:
        args += ["--output-dir", str(output)]
    for flag, value in extra.items():
        args += [f"--{flag.replace('_', '-')}", str(value)]
    return args


def _launch(argv: list[str], trace: Path | None = None, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # the caller's environment as it is (NCCL_* included)
    if trace is not None:
        env[distributed.BATCH_TRACE_ENV] = str(trace)
    env.update(env_extra)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    return done


def _one_process(tmp: Path, output: Path, grad_accum: int, trace: Path | None = None, **kw):
    from finetune.train import train

    config = tiny_config(
        tmp,
        max_steps=STEPS,
        learning_rate=LR,
        gradient_accumulation_steps=grad_accum,
        lora_dropout=0.0,
        save_steps=2,
        keep_checkpoints=True,
        output_dir=str(output),
        **kw,
    )
    previous = os.environ.get(distributed.BATCH_TRACE_ENV)
    if trace is not None:
        os.environ[distributed.BATCH_TRACE_ENV] = str(trace)
    try:
        return train(config)
    finally:
        if trace is not None:
            if previous is None:
                os.environ.pop(distributed.BATCH_TRACE_ENV, None)
            else:
                os.environ[distributed.BATCH_TRACE_ENV] = previous


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    data = write_jsonl(tmp / "qa.jsonl", qa_examples())
    prompts = tmp / "prompts.json"
    prompts.write_text(json.dumps(SYSTEM_PROMPTS))
    progress = tmp / "progress.jsonl"
    # No --output-dir: rank 0 names the run folder (a time stamp) and both ranks use it.
    launched = _launch(
        distributed.launch_argv(
            2, _cli_args(data, prompts, None, grad_accum=1, progress_file=progress)
        ),
        trace=tmp / "trace-two",
        CHECKPOINTS_DIR=str(tmp / "checkpoints"),
    )
    folders = list((tmp / "checkpoints").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-balanced"), folders
    two = folders[0]
    # The same global batch in one process: batch 2 x gradient accumulation 2.
    one = _one_process(tmp, tmp / "one", grad_accum=2, trace=tmp / "trace-one")
    # Half the global batch (what one rank would train alone): the control.
    half = _one_process(tmp, tmp / "half", grad_accum=1)
    return {
        "tmp": tmp,
        "data": data,
        "prompts": prompts,
        "two": two,
        "one": one.output_dir,
        "half": half.output_dir,
        "stdout": launched.stdout,
        "progress": progress,
    }


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """The relative difference of all adapter weights, and the share of weights off by > 1e-4."""
    assert a.keys() == b.keys() and a
    flat_a = torch.cat([a[k].flatten() for k in sorted(a)])
    flat_b = torch.cat([b[k].flatten() for k in sorted(a)])
    delta = flat_a - flat_b
    return (delta.norm() / flat_a.norm()).item(), (delta.abs() > 1e-4).float().mean().item()


def _batches(path: Path) -> list[list[str]]:
    return [json.loads(line)["rows"] for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_ranks_train_on_different_rows_of_each_global_batch(runs):
    rank0 = _batches(runs["tmp"] / "trace-two" / "rank-0.jsonl")
    rank1 = _batches(runs["tmp"] / "trace-two" / "rank-1.jsonl")
    single = _batches(runs["tmp"] / "trace-one" / "rank-0.jsonl")
    assert len(rank0) >= STEPS and len(rank1) >= STEPS  # (the loader also fetches one ahead)
    for step in range(STEPS):
        assert len(rank0[step]) == len(rank1[step]) == 2
        assert not set(rank0[step]) & set(rank1[step]), step
        # one process with accumulation 2 trains the very rows of both ranks, step by step
        assert single[2 * step] == rank0[step] and single[2 * step + 1] == rank1[step]
    first_epoch = [row for step in range(3) for row in rank0[step] + rank1[step]]
    assert len(set(first_epoch)) == len(qa_examples()) == 12  # 12 rows / (2 ranks x 2) = 3 steps


@pytest.mark.slow
def test_the_adapter_equals_one_process_with_the_same_global_batch(runs):
    two = json.loads((runs["two"] / "final_model" / "training_info.json").read_text())
    one = json.loads((runs["one"] / "final_model" / "training_info.json").read_text())
    assert two["global_step"] == one["global_step"] == STEPS
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 4
    assert [e["step"] for e in two["loss_history"]] == list(range(1, STEPS + 1))
    for a, b in zip(two["loss_history"], one["loss_history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)  # the mean over both ranks
    relative, off = _difference(
        _adapter(runs["two"] / "final_model"), _adapter(runs["one"] / "final_model")
    )
    control, control_off = _difference(
        _adapter(runs["half"] / "final_model"), _adapter(runs["one"] / "final_model")
    )
    assert relative < 1e-2 and off < 1e-3, (relative, off)
    assert control > 10 * relative and control_off > 0.1, (control, control_off)


@pytest.mark.slow
def test_only_rank_0_writes_the_run(runs):
    two, one = runs["two"], runs["one"]
    assert [p.relative_to(two) for p in two.rglob("training_info.json")] == [
        Path("final_model/training_info.json")
    ]
    assert [p.name for p in two.rglob("loss_curve.png")] == ["loss_curve.png"]
    assert (two / "loss_curve.png").stat().st_size > 5000
    names = sorted(p.name for p in (two / "final_model").iterdir())
    assert names == sorted(p.name for p in (one / "final_model").iterdir())
    assert sorted(p.name for p in two.iterdir()) == [
        "README.md",
        "checkpoint-2",
        "checkpoint-4",
        "final_model",
        "loss_curve.png",
    ]
    # the Trainer's checkpoints: one model and optimizer, one RNG state per rank
    checkpoint = {p.name for p in (two / "checkpoint-2").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt"} <= checkpoint
    assert "rng_state.pth" not in checkpoint
    assert runs["stdout"].count("adapter:") == 1  # the CLI's summary, from rank 0
    steps = [json.loads(line)["step"] for line in runs["progress"].read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # progress from rank 0 only, each step once


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process_and_back(runs, tmp_path):
    # 2 ranks -> 1 process (accumulation 2 keeps the global batch): the same final adapter.
    resumed = _one_process(
        tmp_path,
        tmp_path / "resumed-one",
        grad_accum=2,
        resume=str(runs["two"] / "checkpoint-2"),
    )
    info = json.loads((resumed.final_model_path / "training_info.json").read_text())
    assert info["global_step"] == STEPS and info["world_size"] == 1
    relative, off = _difference(
        _adapter(resumed.final_model_path), _adapter(runs["two"] / "final_model")
    )
    assert relative < 1e-3 and off < 1e-3, (relative, off)
    # 1 process -> 2 ranks, under torchrun this time.
    back = tmp_path / "resumed-two"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    argv += ["-m", "finetune", "train"]
    argv += _cli_args(
        runs["data"],
        runs["prompts"],
        back,
        grad_accum=1,
        resume=runs["one"] / "checkpoint-2",
    )
    _launch(argv)
    info = json.loads((back / "final_model" / "training_info.json").read_text())
    assert info["global_step"] == STEPS and info["world_size"] == 2
    assert [e["step"] for e in info["loss_history"]][-2:] == [3, 4]
    relative, off = _difference(
        _adapter(back / "final_model"), _adapter(runs["one"] / "final_model")
    )
    assert relative < 1e-3 and off < 1e-3, (relative, off)
    assert len(list(back.rglob("training_info.json"))) == 1
