"""`--backend auto|unsloth|trl`: which library trains a run (finetune.backends), on no GPU."""

from __future__ import annotations

import pytest

from finetune import backends
from finetune.cli import build_parser, train_config
from finetune.config import TrainConfig


def resolve(
    requested="auto",
    device="cuda",
    world_size=1,
    quantization="4bit",
    upcast=False,
    family="llama",
    installed=True,
):
    return backends.resolve_backend(
        requested, device, world_size, quantization, upcast, family, installed=installed
    )


def test_auto_picks_unsloth_only_where_it_applies():
    assert resolve() == "unsloth"
    assert resolve(quantization="none", family="qwen2") == "unsloth"
    assert resolve(device="cpu") == "trl"
    assert resolve(world_size=2) == "trl"  # accelerate launch: the TRL path's DDP
    assert resolve(installed=False) == "trl"
    assert resolve(quantization="8bit") == "trl"
    assert resolve(upcast=True) == "trl"
    assert resolve(family="gpt2") == "trl"
    assert resolve(family=None) == "unsloth"  # a hub id not downloaded yet: Unsloth decides


def test_explicit_backends():
    assert resolve("trl") == "trl"
    assert resolve("trl", device="cpu", installed=False) == "trl"
    assert resolve("unsloth") == "unsloth"
    with pytest.raises(ValueError, match="CUDA"):
        resolve("unsloth", device="cpu")
    with pytest.raises(ValueError, match="not installed"):
        resolve("unsloth", installed=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve("deepspeed")


def test_cpu_run_never_imports_unsloth(tmp_path):
    """The CPU path resolves to trl before anything imports unsloth (an optional package)."""
    import sys

    from finetune.train import resolve_backend

    config = TrainConfig(data="x.csv", device="cpu", quantization="none")
    assert resolve_backend(config, "cpu") == "trl"
    assert "unsloth" not in sys.modules


def test_backend_is_a_flag_a_config_field_and_an_api_field():
    args = build_parser().parse_args(["train", "--data", "x.csv", "--backend", "trl"])
    assert train_config(args).backend == "trl"
    default = build_parser().parse_args(["train", "--data", "x.csv"])
    assert train_config(default).backend == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "x.csv", "--backend", "jax"])
    with pytest.raises(ValueError, match="backend"):
        TrainConfig(data="x.csv", backend="jax").validate()
    assert TrainConfig(data="x.csv").to_dict()["backend"] == "auto"
    from api.schemas import TrainRequest

    assert TrainRequest.model_fields["backend"].default == "auto"


def test_unsloth_targets_and_trainer_arguments():
    assert backends.unsloth_target_modules("all-linear") == backends.ALL_LINEAR
    assert backends.unsloth_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert backends.model_type("/nonexistent") is None


def test_sft_config_under_unsloth_leaves_checkpointing_and_kernels_to_it(tmp_path):
    from core.modeling import LoadedModel
    from finetune.train import _sft_config

    config = TrainConfig(data="x.csv", gradient_checkpointing=True, max_steps=4)
    loaded = LoadedModel(None, None, "m", "m", "cpu", "none", "float32")
    trl_args = _sft_config(config, tmp_path, loaded, 8, False, "trl")
    config.liger = True  # as if liger_kernel were installed: Unsloth still turns it off
    fast_args = _sft_config(config, tmp_path, loaded, 8, False, "unsloth")
    assert trl_args.gradient_checkpointing and not fast_args.gradient_checkpointing
    assert not fast_args.use_liger_kernel
    assert fast_args.completion_only_loss and fast_args.max_length == config.max_length


def test_preload_imports_nothing_for_a_cpu_run(monkeypatch):
    import sys

    monkeypatch.setattr(backends, "unsloth_installed", lambda: True)
    imported = []
    monkeypatch.setattr(backends, "import_unsloth", lambda: imported.append(1))
    monkeypatch.delitem(sys.modules, "transformers", raising=False)  # as in a fresh CLI process
    cpu = TrainConfig(data="x.csv", device="cpu")
    assert backends.preload(cpu) == "trl" and not imported
    assert backends.preload(TrainConfig(data="x.csv", backend="trl")) is None and not imported
