"""One training run: data → LoRA (QLoRA on a quantized base) → TRL's SFTTrainer → adapter folder.

    from finetune.config import TrainConfig
    from finetune.train import train
    result = train(TrainConfig(data="data/qa/fcc_qa.csv", preset="fast"))

The loss covers the answer tokens only: examples go to TRL as conversational prompt-completion
pairs with `completion_only_loss=True` (SmolLM2's chat template has no generation markers, so
`assistant_only_loss` cannot mask it). `train()` installs no signal handlers and is safe to run in a
background thread; pass `on_progress` for step updates and `progress_bar=False` for no tqdm.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from core.adapters import FINAL_MODEL, TRAINING_INFO
from core.modeling import LoadedModel, load_base_model, pick_device, precision_name
from core.settings import get_settings
from finetune import backends, distributed
from finetune.callbacks import (
    LogLines,
    LossProgressBar,
    ProgressHook,
    ProgressReporter,
    progress_file_writer,
)
from finetune.config import TrainConfig
from finetune.data import (
    DataError,
    Example,
    LoadResult,
    examples_from_records,
    filter_examples,
    prompt_format_of,
    read_examples,
    split_examples,
    to_training_record,
    tokenize_record,
)
from finetune.memory import MemoryEstimate, check_fits, estimate_memory
from finetune.plots import save_loss_curve

log = logging.getLogger(__name__)

LOSS_CURVE = "loss_curve.png"


@dataclass
class TrainResult:
    final_model_path: Path
    train_loss: float | None
    eval_loss: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None
    loss_curve_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("final_model_path", "output_dir", "loss_curve_path"):
            values[key] = str(values[key]) if values[key] is not None else None
        return values


@dataclass
class PreparedData:
    train: list[Example]
    eval: list[Example]
    loaded: LoadResult

    @property
    def source(self) -> str:
        return self.loaded.path


# Data ----------------------------------------------------------------------------------------


def prepare_data(config: TrainConfig, examples: list | None = None) -> PreparedData:
    """Load (file or in-memory), filter by category/difficulty, split stratified by category."""
    data = examples if examples is not None else config.data
    if data is None:
        raise DataError("No training data: give a file (--data) or a list of examples.")
    if isinstance(data, str | Path):
        loaded = read_examples(data, strict=config.strict)
    else:
        loaded = examples_from_records(data, strict=config.strict)
    selected = filter_examples(loaded.examples, config.categories, config.difficulties)
    train_examples, eval_examples = split_examples(selected, config.eval_ratio, config.seed)
    return PreparedData(train_examples, eval_examples, loaded)


def _warn_about_lengths(tokenizer, records: list[dict], max_length: int) -> dict[str, int]:
    lengths = [tokenize_record(tokenizer, record) for record in records]
    too_long = sum(1 for t in lengths if len(t["input_ids"]) > max_length)
    # Real (non-pad) tokens in one epoch, as trained (cut at max_length): for tokens/s.
    tokens = sum(min(len(t["input_ids"]), max_length) for t in lengths)
    prompt_only = sum(1 for t in lengths if t["labels"][:max_length].count(-100) >= max_length)
    if too_long:
        log.warning(
            "%d of %d training examples are longer than max_length=%d tokens and lose their end "
            "(answer tokens); %d lose the whole answer and are dropped. Raise --max-length "
            "(`python -m finetune data stats FILE` shows the lengths).",
            too_long,
            len(records),
            max_length,
            prompt_only,
        )
    return {"truncated": too_long, "dropped": prompt_only, "tokens_per_epoch": tokens}


# Output folders ------------------------------------------------------------------------------


def _latest_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def resolve_output(config: TrainConfig) -> tuple[Path, Path | None]:
    """The run folder, and the checkpoint to resume from (None: a fresh run)."""
    settings = get_settings()
    explicit = Path(config.output_dir).expanduser() if config.output_dir else None
    if not config.resume:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = config.run_name or f"{stamp}-{config.preset}"
        return explicit or settings.checkpoints_path / name, None
    if config.resume == "latest":
        if explicit is not None:
            folder = explicit
        else:
            runs = [p for p in settings.checkpoints_path.glob("*") if _latest_checkpoint(p)]
            if not runs:
                raise ValueError(
                    f"--resume latest: no run with checkpoints under {settings.checkpoints_path}; "
                    "give the run folder with --output-dir or a checkpoint folder with --resume PATH."
                )
            folder = max(runs, key=lambda p: p.stat().st_mtime)
        checkpoint = _latest_checkpoint(folder)
        if checkpoint is None:
            raise ValueError(f"--resume latest: {folder} holds no checkpoint-* folder.")
        return folder, checkpoint
    path = Path(config.resume).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"--resume {config.resume}: no such folder. Give a checkpoint-N folder, a run folder or 'latest'."
        )
    if path.name.startswith("checkpoint-"):
        return explicit or path.parent, path
    checkpoint = _latest_checkpoint(path)
    if checkpoint is None:
        raise ValueError(f"--resume {path}: no checkpoint-* folder inside.")
    return explicit or path, checkpoint


# Model ---------------------------------------------------------------------------------------


def resolve_backend(config: TrainConfig, device: str) -> str:
    """`trl` or `unsloth` for this run (`finetune.backends`: auto picks Unsloth where it applies)."""
    from core.modeling import resolve_quantization
    from core.models import resolve_base_model

    if config.backend == "trl":
        return "trl"
    settings = get_settings()
    name = config.base_model if config.base_model is not None else settings.local_base_model_path
    try:
        family = backends.model_type(resolve_base_model(name, settings))
    except Exception:  # a hub id not downloaded yet: Unsloth decides on loading
        family = None
    return backends.resolve_backend(
        config.backend,
        device,
        distributed.rank_info().world_size,
        resolve_quantization(config.quantization, device),
        config.fp32_upcast,
        family,
    )


def build_unsloth_model(config: TrainConfig, device: str) -> tuple[LoadedModel, torch.nn.Module]:
    """The base through Unsloth's FastLanguageModel (4-bit NF4 or 16-bit) with its LoRA layers and,
    when the preset or --gradient-checkpointing asks, its offloaded gradient checkpointing. The
    tokenizer is the TRL path's (the same tokens and chat template)."""
    from transformers import set_seed

    from core.modeling import compute_dtype, load_tokenizer, resolve_quantization
    from core.models import resolve_base_model

    fast_model = backends.import_unsloth()
    settings = get_settings()
    name = config.base_model if config.base_model is not None else settings.local_base_model_path
    path = resolve_base_model(name, settings)
    quantization = resolve_quantization(config.quantization, device)
    dtype = compute_dtype(device, _precision(config))
    checkpointing = "unsloth" if config.resolved_gradient_checkpointing else False
    model, _ = fast_model.from_pretrained(
        model_name=path,
        max_seq_length=config.max_length,
        dtype=dtype,
        load_in_4bit=quantization == "4bit",
        load_in_16bit=quantization == "none",
        device_map={"": device if device != "cuda" else 0},
        token=settings.hf_token,
        use_gradient_checkpointing=checkpointing,
        random_state=config.seed,
    )
    set_seed(config.seed)
    model = fast_model.get_peft_model(
        model,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=backends.unsloth_target_modules(config.resolved_target_modules),
        bias="none",
        use_gradient_checkpointing=checkpointing,
        random_state=config.seed,
        max_seq_length=config.max_length,
    )
    model.config.use_cache = False
    tokenizer = load_tokenizer(path, token=settings.hf_token)
    log.info("Loaded %s on %s through Unsloth (%s, %s)", path, device, quantization, dtype)
    loaded = LoadedModel(
        model, tokenizer, name or "", path, device, quantization, str(dtype).removeprefix("torch.")
    )
    return loaded, model


def build_lora_model(
    config: TrainConfig, backend: str = "trl"
) -> tuple[LoadedModel, torch.nn.Module]:
    """The base model (quantized or not), prepared for k-bit training when quantized, with LoRA.

    In a distributed run each rank loads the base on its own GPU (`cuda:LOCAL_RANK`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    device = distributed.device_for_rank(pick_device(config.device))
    if backend == "unsloth":
        return build_unsloth_model(config, device)
    loaded = load_base_model(
        config.base_model, config.quantization, device, precision=_precision(config)
    )
    model = loaded.model
    checkpointing = config.resolved_gradient_checkpointing
    if loaded.quantization in {"4bit", "8bit"} and config.fp32_upcast:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    else:
        # Only the adapter trains; the Trainer turns checkpointing on and TRL makes the inputs
        # require grads for it. Norms and embeddings stay in the compute dtype: PEFT's fp32 upcast
        # (for fp16 training) cost 1.3x in step time and doubled the embeddings' memory in
        # bench/train.py on an H100 with bf16.
        for parameter in model.parameters():
            parameter.requires_grad = False
    model.config.use_cache = (
        False  # the KV cache is useless in training and conflicts with checkpointing
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.resolved_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # The adapter's initial weights follow the seed: a rerun, or any number of ranks (DDP also
    # broadcasts rank 0's weights), starts from the same adapter.
    set_seed(config.seed)
    return loaded, get_peft_model(model, lora)


# Training ------------------------------------------------------------------------------------


def _steps_per_epoch(n_train: int, config: TrainConfig) -> int:
    batches = math.ceil(n_train / config.resolved_batch_size)
    return max(1, math.ceil(batches / config.resolved_gradient_accumulation_steps))


def _precision(config: TrainConfig) -> str | None:
    """auto (None) | bf16 | fp16 | fp32: the override of the hardware's choice, if the config
    has one (`core.modeling.compute_dtype` picks bf16 on Ampere+, fp16 on T4/V100)."""
    return getattr(config, "precision", None)


def liger_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def use_liger(config: TrainConfig, device: str) -> bool:
    """Liger's fused kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) on CUDA when
    `liger_kernel` is installed; `config.liger` (when the config has it) forces on or off."""
    wanted = getattr(config, "liger", None)
    if wanted is not None:
        return bool(wanted)
    return device.startswith("cuda") and liger_available()


def _sft_config(
    config: TrainConfig,
    output_dir: Path,
    loaded: LoadedModel,
    n_train: int,
    has_eval: bool,
    backend: str = "trl",
):
    from trl import SFTConfig

    device = loaded.device
    on_cuda = device.startswith("cuda")
    total_steps = config.max_steps or math.ceil(
        config.resolved_epochs * _steps_per_epoch(n_train, config)
    )
    eval_steps = config.eval_steps or config.save_steps
    save_steps = config.save_steps or eval_steps
    strategy = "steps" if eval_steps else "epoch"
    # Under Unsloth the model already checkpoints (its own offloaded variant, set up by
    # get_peft_model): the Trainer must not swap transformers' in.
    checkpointing = config.resolved_gradient_checkpointing and backend == "trl"
    load_best = has_eval and (strategy == "epoch" or save_steps % eval_steps == 0)
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.resolved_epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.resolved_learning_rate,
        per_device_train_batch_size=config.resolved_batch_size,
        per_device_eval_batch_size=config.resolved_batch_size,
        gradient_accumulation_steps=config.resolved_gradient_accumulation_steps,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps or max(1, total_steps // 50),
        logging_first_step=True,
        eval_strategy=strategy if has_eval else "no",
        eval_steps=eval_steps if has_eval and strategy == "steps" else None,
        save_strategy=strategy,
        save_steps=save_steps if strategy == "steps" else None,
        load_best_model_at_end=load_best,
        metric_for_best_model="eval_loss" if load_best else None,
        greater_is_better=False if load_best else None,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_length,
        packing=config.packing,
        packing_strategy="bfd",
        completion_only_loss=True,
        # Mixed precision follows the model's compute dtype (core.modeling.compute_dtype).
        bf16=on_cuda and loaded.dtype == "bfloat16",
        fp16=on_cuda and loaded.dtype == "float16",
        use_cpu=not on_cuda,
        # Unsloth brings its own fused kernels; Liger's would patch the same modules.
        use_liger_kernel=use_liger(config, device) and backend == "trl",
        neftune_noise_alpha=config.neftune_alpha,
        disable_tqdm=True,  # LossProgressBar replaces transformers' bar
        dataloader_num_workers=0,
        run_name=output_dir.name,
        # Data parallel (accelerate launch / torchrun): only the adapter trains, and every LoRA
        # weight gets a gradient each step; the loss is normalised by the tokens of the global
        # batch (all ranks and accumulation steps), as one process with the same batch would.
        ddp_find_unused_parameters=False,
        average_tokens_across_devices=True,
    )


@dataclass
class TrainingSetup:
    """Everything `train()` runs: the SFTTrainer ready to go, and what it was built from."""

    trainer: Any
    loaded: LoadedModel
    data: PreparedData
    output_dir: Path
    resume_from: Path | None
    memory: MemoryEstimate
    length_report: dict[str, int]
    backend: str = "trl"


def build_trainer(
    config: TrainConfig,
    on_progress: ProgressHook | None = None,
    examples: list | None = None,
) -> TrainingSetup:
    """Load data and model and build the SFTTrainer (which tokenizes and masks the prompts)."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback

    config.validate(require_data=examples is None)
    distributed.quiet_other_ranks()
    distributed.init_process_group(cpu=not pick_device(config.device).startswith("cuda"))
    backend = resolve_backend(config, distributed.device_for_rank(pick_device(config.device)))
    if backend == "unsloth":
        backends.import_unsloth()  # before SFTTrainer is bound: Unsloth patches it on import
    from trl import SFTTrainer

    data = prepare_data(config, examples)
    # Rank 0 names the run folder (a time stamp) and picks the checkpoint; every rank uses it.
    output_dir, resume_from = distributed.on_main(lambda: resolve_output(config))
    log.info(
        "Data: %d examples from %s → %d train / %d eval, by category %s",
        len(data.train) + len(data.eval),
        data.source,
        len(data.train),
        len(data.eval),
        dict(Counter(e.category for e in data.train + data.eval)),
    )
    loaded, model = build_lora_model(config, backend)
    train_records = [to_training_record(e, config.system_prompts) for e in data.train]
    eval_records = [to_training_record(e, config.system_prompts) for e in data.eval]
    length_report = _warn_about_lengths(loaded.tokenizer, train_records, config.max_length)
    args = _sft_config(config, output_dir, loaded, len(train_records), bool(eval_records), backend)
    callbacks: list = []
    if on_progress is not None:
        callbacks.append(ProgressReporter(on_progress))
    if config.progress_file:
        callbacks.append(ProgressReporter(progress_file_writer(config.progress_file)))
    if distributed.is_main_process():  # ProgressReporter itself reports from rank 0 only
        callbacks.append(LossProgressBar() if config.progress_bar else LogLines())
    if config.early_stopping_patience:
        if args.load_best_model_at_end:
            callbacks.append(
                EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)
            )
        else:
            log.warning(
                "Early stopping needs an eval split (--eval-ratio > 0, 10+ examples); it is off."
            )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
        processing_class=loaded.tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trace = os.environ.get(distributed.BATCH_TRACE_ENV)
    if trace:
        trainer.data_collator = distributed.trace_batches(trainer.data_collator, trace)
    if (loaded.quantization != "none" and loaded.dtype == "float32") or args.fp16:
        # TRL casts QLoRA adapters to bf16 (the paper's GPU recipe); on the CPU they stay fp32,
        # and with fp16 mixed precision the grad scaler needs fp32 trainable weights.
        for parameter in trainer.model.parameters():
            if parameter.requires_grad and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()
    memory = estimate_memory(
        trainer.model,
        config.resolved_batch_size,
        config.max_length,
        config.resolved_gradient_checkpointing,
        torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32,
    )
    return TrainingSetup(
        trainer, loaded, data, output_dir, resume_from, memory, length_report, backend
    )


def train(
    config: TrainConfig,
    on_progress: ProgressHook | None = None,
    examples: list | None = None,
) -> TrainResult:
    """Train a LoRA adapter and save it to OUTPUT/final_model (see the module docstring)."""
    started = time.monotonic()
    setup = build_trainer(config, on_progress, examples)
    loaded, trainer = setup.loaded, setup.trainer
    if torch.cuda.is_available() and loaded.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        setup.output_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "Model %s (%s, %s on %s, backend %s), LoRA r=%d alpha=%d on %s; memory estimate at batch %d × %d tokens:\n%s",
            loaded.path,
            loaded.quantization,
            loaded.dtype,
            loaded.device,
            setup.backend,
            config.lora_r,
            config.lora_alpha,
            config.resolved_target_modules,
            config.resolved_batch_size,
            config.max_length,
            setup.memory.format(),
        )
        if config.memory_check:
            check_fits(setup.memory, loaded.device)
        if setup.resume_from is not None:
            log.info("Resuming from %s", setup.resume_from)
        resume = str(setup.resume_from) if setup.resume_from else None
        output = trainer.train(resume_from_checkpoint=resume)
        eval_metrics = {}
        if trainer.args.load_best_model_at_end and trainer.state.best_metric is not None:
            eval_metrics = {
                "eval_loss": trainer.state.best_metric
            }  # the weights now loaded were scored
        elif trainer.eval_dataset is not None:
            eval_metrics = trainer.evaluate()
        return _save_run(setup, config, output, eval_metrics, started)
    finally:
        del trainer, setup
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _throughput(setup: TrainingSetup, output, state) -> dict[str, Any]:
    """The trainer's own runtime, the real (non-pad) tokens trained (the data's tokens per
    epoch x epochs done), tokens/s and the peak GPU memory."""
    runtime = (output.metrics or {}).get("train_runtime")
    tokens = int(setup.length_report.get("tokens_per_epoch", 0) * (state.epoch or 0.0))
    values: dict[str, Any] = {
        "train_runtime_s": round(float(runtime), 2) if runtime else None,
        "train_tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if runtime else None,
        "peak_memory_gib": None,
    }
    if setup.loaded.device.startswith("cuda") and torch.cuda.is_available():
        values["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return values


def _save_run(
    setup: TrainingSetup, config: TrainConfig, output, eval_metrics: dict, started: float
) -> TrainResult:
    import peft
    import transformers
    import trl

    trainer, loaded, data, output_dir = setup.trainer, setup.loaded, setup.data, setup.output_dir
    memory, length_report = setup.memory, setup.length_report
    final = output_dir / FINAL_MODEL
    ranks = distributed.rank_info()
    main = ranks.is_main
    trainer.save_model(str(final))  # every rank calls it; only rank 0 (args.should_save) writes
    if main:
        loaded.tokenizer.save_pretrained(str(final))
    state = trainer.state
    history = state.log_history
    train_loss = float(output.training_loss) if output.training_loss is not None else None
    eval_loss = float(eval_metrics["eval_loss"]) if "eval_loss" in eval_metrics else None
    examples = data.train + data.eval
    throughput = _throughput(setup, output, state)
    info = {
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "best_eval_loss": state.best_metric,
        "epochs": round(state.epoch or 0.0, 4),
        "global_step": state.global_step,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "runtime_s": round(time.monotonic() - started, 1),
        "data_sha256": data.loaded.sha256,
        "data": {
            "source": data.source,
            "examples": len(data.train) + len(data.eval),
            "train": len(data.train),
            "eval": len(data.eval),
            "by_category": dict(
                sorted(Counter(e.category for e in data.train + data.eval).items())
            ),
            "issues": len(data.loaded.issues),
            **length_report,
        },
        "base_model": loaded.name or loaded.path,
        "base_model_path": loaded.path,
        "quantization": loaded.quantization,
        "device": loaded.device,
        "dtype": loaded.dtype,
        "precision": precision_name(getattr(torch, loaded.dtype, torch.float32)),
        "backend": setup.backend,
        "liger": bool(trainer.args.use_liger_kernel),
        "packing": bool(config.packing),
        # What the adapter reads (services.assistant warns when a closed-book one serves RAG).
        "prompt_format": prompt_format_of(examples),
        "throughput": throughput,
        # Data parallel: processes, and the examples of one optimizer step over all of them.
        "world_size": ranks.world_size,
        "global_batch_size": config.resolved_batch_size
        * config.resolved_gradient_accumulation_steps
        * ranks.world_size,
        "preset": config.preset,
        "arguments": config.to_dict(),
        "lora_trainable_params": memory.lora_params,
        "memory_estimate": memory.to_dict(),
        "loss_history": [
            {"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]}
            for e in history
            if "loss" in e
        ],
        "eval_history": [
            {"step": e["step"], "epoch": e.get("epoch"), "eval_loss": e["eval_loss"]}
            for e in history
            if "eval_loss" in e
        ],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
        },
    }
    curve = None
    # Every rank is done with the checkpoints (the best one loaded, the last eval run) before
    # rank 0 writes the run's files and removes them; the others write nothing.
    distributed.barrier()
    if main:
        (final / TRAINING_INFO).write_text(
            json.dumps(info, indent=2, ensure_ascii=False, default=str)
        )
        curve = save_loss_curve(
            history, output_dir / LOSS_CURVE, title=f"{output_dir.name} ({config.preset})"
        )
        if not config.keep_checkpoints:
            for checkpoint in output_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
        log.info("Adapter saved to %s (train loss %s, eval loss %s)", final, train_loss, eval_loss)
    distributed.barrier()  # no rank returns before the adapter and training_info.json exist
    return TrainResult(
        final_model_path=final,
        train_loss=train_loss,
        eval_loss=eval_loss,
        metrics={
            "global_step": state.global_step,
            "epochs": info["epochs"],
            "best_eval_loss": state.best_metric,
            "runtime_s": info["runtime_s"],
            "train_examples": len(data.train),
            "eval_examples": len(data.eval),
            "prompt_format": info["prompt_format"],
            **throughput,
        },
        output_dir=output_dir,
        loss_curve_path=curve,
    )
