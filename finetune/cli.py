"""`python -m finetune {train,chat,test,merge,data}`: one entry point per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from finetune.config import TrainConfig
from finetune.data import DataError
from finetune.presets import PRESETS

log = logging.getLogger("finetune")


def _tokenizer(model: str | None):
    from core.modeling import load_tokenizer
    from core.models import resolve_base_model

    return load_tokenizer(resolve_base_model(model))


# train -----------------------------------------------------------------------------------------


def add_train_parser(commands) -> None:
    p = commands.add_parser(
        "train",
        help="train a LoRA/QLoRA adapter",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", required=True, help="CSV, JSONL or JSON file of question/answer pairs or chats"
    )
    p.add_argument("--preset", default="balanced", choices=list(PRESETS))
    p.add_argument("--epochs", type=float, help="default: the preset's")
    p.add_argument("--learning-rate", type=float, help="default: the preset's")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument(
        "--grad-accum", type=int, dest="gradient_accumulation_steps", help="default: the preset's"
    )
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: the preset's",
    )
    p.add_argument(
        "--max-length", type=int, default=1024, help="tokens per example (prompt + answer)"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument(
        "--packing",
        action="store_true",
        help="pack examples into max_length rows without padding (documents stay separate); "
        "with sdpa attention prefer --batch-size 1 and a larger --max-length",
    )
    p.add_argument("--categories", nargs="+", help="train on these categories only")
    p.add_argument("--difficulties", nargs="+", help="train on these difficulties only")
    p.add_argument(
        "--eval-ratio", type=float, default=0.1, help="held-out share, stratified by category"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--strict", action="store_true", help="stop on any data issue instead of skipping the row"
    )
    p.add_argument(
        "--system-prompts", type=Path, help="JSON {category: system prompt, 'default': ...}"
    )
    p.add_argument(
        "--base-model", help="model id or folder (default: the settings' / bundled model)"
    )
    p.add_argument(
        "--quantization",
        choices=["auto", "4bit", "8bit", "none"],
        help="default: settings (auto: 4-bit NF4 on CUDA)",
    )
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument(
        "--target-modules",
        nargs="+",
        default=["q_proj", "k_proj", "v_proj", "o_proj"],
        help="module names, or all-linear",
    )
    p.add_argument(
        "--fp32-upcast",
        action="store_true",
        help="upcast norms and embeddings of a quantized base to fp32 (PEFT's k-bit recipe; slower, for fp16 GPUs)",
    )
    p.add_argument("--neftune-alpha", type=float, help="NEFTune embedding noise (e.g. 5)")
    p.add_argument(
        "--early-stopping-patience",
        type=int,
        help="evaluations without improvement before stopping",
    )
    p.add_argument(
        "--eval-steps",
        type=int,
        help="evaluate and checkpoint every N steps (default: every epoch)",
    )
    p.add_argument(
        "--save-steps", type=int, help="checkpoint every N steps (default: with evaluation)"
    )
    p.add_argument("--logging-steps", type=int)
    p.add_argument("--output-dir", type=Path, help="default: <checkpoints>/<timestamp>-<preset>")
    p.add_argument("--run-name")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="resume from a checkpoint folder, a run folder, or latest",
    )
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep checkpoint-* folders after success"
    )
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(handler=run_train)


def run_train(args) -> int:
    from finetune.train import train

    system_prompts = None
    if args.system_prompts:
        system_prompts = json.loads(args.system_prompts.read_text(encoding="utf-8"))
    config = TrainConfig(
        data=args.data,
        preset=args.preset,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        gradient_checkpointing=args.gradient_checkpointing,
        max_length=args.max_length,
        packing=args.packing,
        max_steps=args.max_steps,
        categories=args.categories,
        difficulties=args.difficulties,
        eval_ratio=args.eval_ratio,
        seed=args.seed,
        strict=args.strict,
        base_model=args.base_model,
        quantization=args.quantization,
        device=args.device,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.target_modules,
        fp32_upcast=args.fp32_upcast,
        neftune_alpha=args.neftune_alpha,
        early_stopping_patience=args.early_stopping_patience,
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        output_dir=args.output_dir,
        run_name=args.run_name,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints,
        progress_bar=not args.no_progress,
    )
    if system_prompts is not None:
        config.system_prompts = system_prompts
    result = train(config)
    print(f"adapter:     {result.final_model_path}")
    print(f"train loss:  {result.train_loss}")
    print(f"eval loss:   {result.eval_loss}")
    print(f"loss curve:  {result.loss_curve_path}")
    print(f"try it:      python -m finetune chat --adapter {result.final_model_path}")
    return 0


# chat, test, merge ---------------------------------------------------------------------------------


def _add_model_options(p) -> None:
    p.add_argument("--base-model", help="default: the base the adapter was trained on")
    p.add_argument("--quantization", choices=["auto", "4bit", "8bit", "none"])
    p.add_argument("--device")


def add_chat_parser(commands) -> None:
    p = commands.add_parser(
        "chat", help="chat in the terminal with the base model + an adapter (no RAG)"
    )
    p.add_argument(
        "--adapter", type=Path, help="adapter folder (final_model) or run folder; none: the base"
    )
    p.add_argument("--system", help="system prompt (default: the default FCC prompt)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    _add_model_options(p)
    p.set_defaults(handler=run_chat)


def run_chat(args) -> int:
    from finetune.chat import chat_loop
    from finetune.inference import load_adapter_model

    loaded = load_adapter_model(args.adapter, args.base_model, args.quantization, args.device)
    return chat_loop(loaded, args.system, args.max_new_tokens)


def add_test_parser(commands) -> None:
    p = commands.add_parser(
        "test", help="score base vs adapter answers on held-out questions (token F1, ROUGE-L)"
    )
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument(
        "--data", type=Path, help="score every row of this file (default: the run's eval split)"
    )
    p.add_argument("--limit", type=int, help="first N questions only")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-base", action="store_true", help="skip the base model's answers")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    _add_model_options(p)
    p.set_defaults(handler=run_test_command)


def run_test_command(args) -> int:
    from finetune.evaluate import run_test

    report = run_test(
        args.adapter,
        data=args.data,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        compare_base=not args.no_base,
        base_model=args.base_model,
        quantization=args.quantization,
        device=args.device,
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(f"{len(report.rows)} questions from {report.data}; greedy decoding\n")
        print(report.format_table())
    return 0


def add_merge_parser(commands) -> None:
    p = commands.add_parser(
        "merge", help="merge an adapter into its full-precision base and verify the output"
    )
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--base-model", help="default: the base the adapter was trained on")
    p.add_argument(
        "--device",
        default="cpu",
        help="where to merge (fp32); cpu is safe for any size that fits in RAM",
    )
    p.set_defaults(handler=run_merge)


def run_merge(args) -> int:
    from finetune.merge import MergeParityError, merge_adapter

    print(
        "Merging in full precision (fp32): the base is NOT loaded in 4-bit, since merging into a "
        "quantized base rounds the LoRA update away."
    )
    try:
        result = merge_adapter(
            args.adapter, args.out, base_model=args.base_model, device=args.device
        )
    except MergeParityError as error:
        print(f"error: merge parity check FAILED: {error}", file=sys.stderr)
        return 1
    print(f"merged model: {result.output_dir} (base {result.base_model})")
    print(
        f"parity: the merged model's greedy output equals the adapter's on {len(result.parity.probes)} probes"
    )
    print(result.parity.format())
    return 0


# data ------------------------------------------------------------------------------------------


def add_data_parser(commands) -> None:
    p = commands.add_parser("data", help="inspect and build training data")
    sub = p.add_subparsers(dest="data_command", required=True)

    stats = sub.add_parser("stats", help="counts by category/difficulty and token lengths")
    stats.add_argument("file", type=Path)
    stats.add_argument("--model", help="tokenizer to count with (default: the base model's)")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=run_stats)

    preview = sub.add_parser("preview", help="the exact rendered chat template, loss tokens marked")
    preview.add_argument("file", type=Path)
    preview.add_argument("--n", type=int, default=1, help="how many examples")
    preview.add_argument("--start", type=int, default=0, help="index of the first example")
    preview.add_argument("--max-length", type=int, default=1024)
    preview.add_argument("--model", help="tokenizer / chat template (default: the base model's)")
    preview.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on a terminal",
    )
    preview.set_defaults(handler=run_preview)

    corpus = sub.add_parser(
        "from-corpus", help="RAG training examples: retrieved context + cited answers"
    )
    corpus.add_argument(
        "--qa", type=Path, required=True, help="question/answer file (any supported format)"
    )
    corpus.add_argument("--collection", help="Qdrant collection (default: settings)")
    corpus.add_argument("--out", type=Path, required=True, help="output JSONL (chat messages)")
    corpus.add_argument("--k", type=int, default=4, help="chunks per prompt")
    corpus.add_argument(
        "--abstain-ratio", type=float, default=0.15, help="share of examples with no relevant chunk"
    )
    corpus.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="answer-token recall that makes a chunk relevant",
    )
    corpus.add_argument("--mode", default="hybrid", choices=["hybrid", "dense", "bm25"])
    corpus.add_argument("--seed", type=int, default=42)
    corpus.set_defaults(handler=run_from_corpus)


def run_stats(args) -> int:
    from finetune.data import dataset_stats, read_examples

    result = read_examples(args.file)
    stats = dataset_stats(result.examples, _tokenizer(args.model))
    stats["issues"] = [str(i) for i in result.issues]
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        return 0
    print(f"{args.file}: {stats['examples']} usable examples, {len(result.issues)} issues")
    for title, counts in (
        ("category", stats["by_category"]),
        ("difficulty", stats["by_difficulty"]),
    ):
        print(f"\nby {title}:")
        for name, count in counts.items():
            print(f"  {name:<28} {count:>5}")
    print("\ntokens per example (chat template applied)   p50    p90    p99    max")
    for name, label in (("total", "prompt + answer"), ("answer", "answer (carries the loss)")):
        s = stats["tokens"][name]
        print(f"  {label:<40} {s['p50']:>6} {s['p90']:>6} {s['p99']:>6} {s['max']:>6}")
    for issue in stats["issues"][:20]:
        print(f"issue: {issue}")
    return 0


def run_preview(args) -> int:
    from finetune.data import load_examples
    from finetune.preview import render_preview

    examples = load_examples(args.file)
    tokenizer = _tokenizer(args.model)
    color = sys.stdout.isatty() if args.color is None else args.color
    for example in examples[args.start : args.start + args.n]:
        print(render_preview(tokenizer, example, max_length=args.max_length, color=color))
        print()
    return 0


def run_from_corpus(args) -> int:
    from core.store import close_clients
    from finetune.corpus import build_corpus_examples

    try:
        report = build_corpus_examples(
            args.qa,
            args.out,
            collection=args.collection,
            k=args.k,
            abstain_ratio=args.abstain_ratio,
            min_overlap=args.min_overlap,
            mode=args.mode,
            seed=args.seed,
        )
    finally:
        close_clients()
    print(report.format())
    print(f"train on it: python -m finetune train --data {args.out} --max-length 2048")
    return 0


# main --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_train_parser,
        add_chat_parser,
        add_test_parser,
        add_merge_parser,
        add_data_parser,
    ):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    # Deprecation chatter from transformers/peft is not for the user of this CLI.
    warnings.filterwarnings("ignore", category=FutureWarning)
    for noisy in ("httpx", "urllib3", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except DataError as error:
        print(f"data error:\n{error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
