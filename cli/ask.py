"""`fcc-rag ask "QUESTION" [--k N] [--mode dense|hybrid|bm25] [--json] ...`

Streams the answer to stdout token by token, then lists the numbered sources.
`--json` prints nothing but one JSON line at the end (logs go to stderr).
`--retrieve-only` lists the sources without loading the model.
`--batch FILE.jsonl` answers one question per line (`question` or `q`, optional `history`
as [[user, assistant], ...]); with `--json` it writes exactly one JSON line per input line,
in order, and a line it cannot use gives `{"line": n, "error": "..."}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from chains.prompts import source_header
from core.errors import cli_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcc-rag ask",
        description="Answer a question from the indexed documents, with sources.",
    )
    parser.add_argument("question", nargs="?", help="the question (or use --batch)")
    parser.add_argument(
        "--k", type=int, default=None, help="chunks to retrieve (default: RETRIEVAL_K)"
    )
    parser.add_argument(
        "--mode", choices=["dense", "hybrid", "bm25"], default=None, help="default: RETRIEVAL_MODE"
    )
    parser.add_argument("--collection", help="default: COLLECTION_NAME")
    parser.add_argument(
        "--answer-mode",
        choices=["verified", "extractive", "raw"],
        default=None,
        help="verified: only sentences a cited passage supports; extractive: verbatim quotes, "
        "no model; raw: the model's text unverified (default: ANSWER_MODE, verified)",
    )
    parser.add_argument(
        "--adapter", help="LoRA adapter folder to answer with (default: LOCAL_ADAPTER_PATH)"
    )
    parser.add_argument(
        "--retrieve-only", action="store_true", help="list the sources; do not load the model"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line per question, nothing else"
    )
    parser.add_argument("--batch", type=Path, help="JSONL file, one question per line")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: MAX_NEW_TOKENS")
    parser.add_argument(
        "--temperature", type=float, default=None, help="0 = greedy (default: TEMPERATURE)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="relevance threshold, dense cosine (default: SCORE_THRESHOLD)",
    )
    return parser


def _generation(args) -> dict[str, Any]:
    values = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    return {key: value for key, value in values.items() if value is not None}


def _chain(args):
    from services.assistant import get_assistant

    assistant = get_assistant()
    if args.threshold is not None:
        assistant.settings = assistant.settings.model_copy(
            update={"score_threshold": args.threshold}
        )
    if args.retrieve_only or args.answer_mode == "extractive":
        return assistant.rag(args.collection, load_llm=False)
    if args.adapter:
        assistant.load(adapter_path=args.adapter)
    return assistant.rag(args.collection)


def _answer(chain, args, question: str, history=None, stream_to=None):
    """Run one question; stream tokens to `stream_to` if given; return the RagResult."""
    if args.retrieve_only:
        return chain.retrieve_only(question, k=args.k, mode=args.mode)
    result = None
    for kind, payload in chain.stream(
        question,
        history,
        k=args.k,
        mode=args.mode,
        answer_mode=args.answer_mode,
        **_generation(args),
    ):
        if kind == "token" and stream_to is not None:
            stream_to.write(payload)
            stream_to.flush()
        elif kind == "done":
            result = payload
    return result


def _json_line(result) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False)


def _print_sources(result, out) -> None:
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    if not result.sources:
        return
    cited = any(s.cited for s in result.sources)
    title = (
        "Sources" if cited or result.answer is None else "Sources (given to the model; none cited)"
    )
    print(f"\n{title}:", file=out)
    for s in result.sources:
        heading = f" — {s.heading}" if s.heading else ""
        score = f" (score {s.score:.3f})" if s.score is not None else ""
        print(
            f"{source_header(s.n, s.source, s.page, s.section, s.pinpoint)}{heading}{score}",
            file=out,
        )
        print(textwrap.indent(textwrap.shorten(s.text, 240), "    "), file=out)
    if result.truncated:
        print("(the context was cut to fit the model's window)", file=out)
    if result.dropped:
        print(
            f"({len(result.dropped)} draft sentence(s) not shown: no passage supports them; "
            "--json lists them under 'dropped')",
            file=out,
        )


def _read_batch(path: Path) -> list[tuple[int, str | None, list | None, str | None]]:
    """(line number, question, history, error) for every line of the file."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError as error:
            items.append((number, None, None, f"not a JSON object: {error}"))
            continue
        if not isinstance(record, dict):
            items.append((number, None, None, "not a JSON object"))
            continue
        question = record.get("question", record.get("q"))
        if not isinstance(question, str) or not question.strip():
            items.append((number, None, None, 'no question: put it under "question" or "q"'))
            continue
        history = record.get("history")
        if history is not None and not (
            isinstance(history, list)
            and all(isinstance(t, list | tuple) and len(t) == 2 for t in history)
        ):
            items.append((number, None, None, "history must be a list of [user, assistant] pairs"))
            continue
        items.append((number, question.strip(), [tuple(t) for t in history or []], None))
    return items


def run_batch(args) -> int:
    try:
        items = _read_batch(args.batch)
    except OSError as error:
        print(f"error: cannot read {args.batch}: {error}", file=sys.stderr)
        return 2
    chain = _chain(args) if any(error is None for *_, error in items) else None
    for number, question, history, error in items:
        if error is not None:
            if args.json:
                print(json.dumps({"line": number, "error": error}), flush=True)
            else:
                print(f"line {number}: error: {error}\n", flush=True)
            continue
        print(f"[{number}/{len(items)}] {question}", file=sys.stderr, flush=True)
        result = _answer(chain, args, question, history)
        if args.json:
            print(json.dumps({"line": number, **result.to_dict()}, ensure_ascii=False), flush=True)
        else:
            print(
                f"Q: {question}\nA: {result.answer if result.answer is not None else '(retrieval only)'}"
            )
            _print_sources(result, sys.stdout)
            print(flush=True)
    return 0


def run_one(args) -> int:
    chain = _chain(args)
    if args.json:
        result = _answer(chain, args, args.question)
        print(_json_line(result), flush=True)
    else:
        result = _answer(chain, args, args.question, stream_to=sys.stdout)
        sys.stdout.write("\n")
        _print_sources(result, sys.stdout)
    return 1 if result.error else 0


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.batch and not (args.question or "").strip():
        build_parser().error("give a QUESTION or --batch FILE.jsonl")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    from core.store import close_clients

    try:  # a missing model, a bad adapter, a locked store: one line, exit 2 (cli_errors)
        return run_batch(args) if args.batch else run_one(args)
    finally:
        close_clients()


if __name__ == "__main__":
    raise SystemExit(main())
