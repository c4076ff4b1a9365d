"""`python -m finetune {train,chat,test,merge,data,embeddings}`: one entry point per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from core.errors import cli_errors
from finetune.config import TrainConfig, read_config_file, train_options

log = logging.getLogger("finetune")


def _tokenizer(model: str | None):
    from core.modeling import load_tokenizer
    from core.models import resolve_base_model

    return load_tokenizer(resolve_base_model(model))


# train -----------------------------------------------------------------------------------------


def _flag_help(option) -> str:
    text = option.help
    default = option.default()
    if default is not None and option.shape[0] is not dict:
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        if option.shape[0] is bool:
            shown = "on" if default else "off"
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, generated from the dataclass: `--field-name` (or the
    field's `flags`), its help, choices and type; booleans get `--x/--no-x`. Defaults are
    SUPPRESSed, so the namespace holds only what was given: those values override a --config
    file, and the dataclass's own defaults (and the preset's) apply to the rest."""
    for option in train_options():
        scalar, is_list, _ = option.shape
        flags = option.metadata.get("flags") or [f"--{option.name.replace('_', '-')}"]
        kwargs: dict = {
            "dest": option.name,
            "default": argparse.SUPPRESS,
            "help": _flag_help(option),
        }
        if scalar is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _text_parser(option)
            if is_list:
                kwargs["nargs"] = "+"
            if option.choices:
                kwargs["choices"] = option.choices
        kwargs.update(option.metadata.get("cli", {}))
        parser.add_argument(*flags, **kwargs)


def _text_parser(option):
    scalar = option.shape[0]
    if scalar in (int, float, str) and "parse" not in option.metadata:
        return scalar  # argparse's own messages: "invalid int value: 'x'"

    def parse(text: str):
        try:
            return option.from_text(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = option.name
    return parse


def add_train_parser(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "train",
        help="train a LoRA/QLoRA adapter",
        description="Train a LoRA/QLoRA adapter. Every option is a field of "
        "finetune.config.TrainConfig; a preset's values apply to the options left unset.",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML or JSON file of TrainConfig field values (field names as keys, e.g. "
        "max_length: 512); options given on the command line override it",
    )
    add_train_options(p)
    p.set_defaults(handler=run_train)
    return p


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of `finetune train`: the --config file's values, then the flags given."""
    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    values.update(
        {
            option.name: getattr(args, option.name)
            for option in train_options()
            if hasattr(args, option.name)
        }
    )
    config = TrainConfig.from_dict(values)
    config.validate()
    return config


def run_train(args) -> int:
    config = train_config(args)
    from finetune.backends import preload

    preload(config)  # Unsloth, when it will train, before transformers is imported
    from finetune.distributed import is_main_process
    from finetune.train import train

    result = train(config)
    if not is_main_process():  # data parallel: rank 0 reports the run
        return 0
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
    corpus.add_argument(
        "--gold-position",
        choices=["random", "ranked"],
        default="random",
        help="where the passage that answers goes among the numbered passages: a random "
        "position (so the adapter reads instead of always citing [1]) or where the chain's "
        "ranking puts it",
    )
    corpus.set_defaults(handler=run_from_corpus)

    docs = sub.add_parser(
        "from-docs",
        help="question/answer pairs generated from documents (rule-based, grounded by construction)",
        description="Generate question/answer pairs from the documents' own statements: limits "
        "with numbers and units, obligations and prohibitions, definitions, who/time facts, table "
        "rows. Every answer is a statement of its document. Writes CSV: question, answer, "
        "category, difficulty, source, section, pinpoint, kind.",
    )
    docs.add_argument("paths", nargs="*", type=Path, help="files or folders (recursively)")
    docs.add_argument(
        "--collection", help="also (or instead) read the chunks of this ingested collection"
    )
    docs.add_argument("--out", type=Path, required=True, help="the CSV to write")
    docs.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    docs.set_defaults(handler=run_from_docs)


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
            gold_position=args.gold_position,
        )
    finally:
        close_clients()
    print(report.format())
    print(f"train on it: python -m finetune train --data {args.out} --max-length 2048")
    return 0


def run_from_docs(args) -> int:
    from core.store import close_clients
    from finetune.qa_gen import build_docs_qa

    if not args.paths and not args.collection:
        raise ValueError("Give document files or folders, or --collection NAME.")
    try:
        report = build_docs_qa(args.paths, args.out, args.collection, progress=args.progress)
    finally:
        close_clients()
    print(report.format())
    print(f"inspect: python -m finetune data stats {args.out}")
    print(f"RAG records: python -m finetune data from-corpus --qa {args.out} --out rag.jsonl")
    return 0


# embeddings --------------------------------------------------------------------------------------


def add_embeddings_parser(commands) -> None:
    from finetune.embedding_config import embedding_options

    p = commands.add_parser(
        "embeddings",
        help="fine-tune the retrieval embedder on Q&A generated from the documents",
        description="Fine-tune the embedder (EMBEDDING_MODEL; default the bundled "
        "all-MiniLM-L6-v2) on (question, chunk) pairs: questions generated from the corpus "
        "documents (and --qa rows), the chunk ingestion stores for the answer as the positive, "
        "hard negatives mined with the base embedder. Every option is a field of "
        "finetune.embedding_config.EmbeddingConfig.",
    )
    for option in embedding_options():
        scalar, is_list, _ = option.shape
        kwargs: dict = {"dest": option.name, "help": _flag_help(option)}
        if scalar is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = option.default()
        else:
            kwargs["type"] = _text_parser(option)
            kwargs["default"] = option.default()
            if is_list:
                kwargs["nargs"] = "+"
        kwargs.update(option.metadata.get("cli", {}))
        p.add_argument(f"--{option.name.replace('_', '-')}", **kwargs)
    p.set_defaults(handler=run_embeddings)


def run_embeddings(args) -> int:
    from finetune.embedding_config import EmbeddingConfig, embedding_options
    from finetune.embeddings import train_embeddings

    config = EmbeddingConfig(**{o.name: getattr(args, o.name) for o in embedding_options()})
    result = train_embeddings(config)
    info = result.info
    before = info["training_pairs_positive_rank"]["before"]
    after = info["training_pairs_positive_rank"]["after"]
    print(f"embedder:    {result.output_dir}")
    print(f"pairs:       {info['pairs']['used']} ({info['pairs']['by_origin']})")
    print(
        f"train loss:  {info['train_loss']:.4f} (first step {info['first_loss']:.4f}, last {info['last_loss']:.4f})"
    )
    print(
        f"training questions, positive chunk: hit@1 {before['hit@1']:.3f} -> {after['hit@1']:.3f}, "
        f"MRR {before['mrr']:.3f} -> {after['mrr']:.3f}"
    )
    print(f"use it:      {info['use_it']}")
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
        add_embeddings_parser,
    ):
        add(commands)
    return parser


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    # Deprecation chatter from transformers/peft is not for the user of this CLI.
    warnings.filterwarnings("ignore", category=FutureWarning)
    for noisy in ("httpx", "urllib3", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.handler(args)  # bad data, options or paths: one line, exit 2 (cli_errors)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
