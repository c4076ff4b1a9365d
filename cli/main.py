"""`fcc-rag`: one command line for every job. Each subcommand is the module that owns the job,
with the same flags and JSON output as its `python -m` form:

    fcc-rag ingest PATH...          python -m ingest
    fcc-rag ask "QUESTION"          python -m chains.ask
    fcc-rag retrieve "QUERY"        python -m chains.retrieve
    fcc-rag summarize SOURCE        python -m chains.summarize
    fcc-rag evaluate --gold FILE    python -m chains.evaluate (python -m evals)
    fcc-rag train|chat|test|merge|data ...   python -m finetune ...
    fcc-rag feedback export|stats   python -m services.feedback
    fcc-rag serve                   python -m app (the chat and the REST API)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from core.errors import cli_errors

# subcommand -> (module with main(argv), argv prefix, one-line help). Imported on use only:
# `fcc-rag ingest` never loads torch's generation stack, `fcc-rag ask` never loads TRL.
COMMANDS: dict[str, tuple[str, list[str], str]] = {
    "ingest": ("ingest.cli", [], "index files or folders into Qdrant"),
    "ask": ("cli.ask", [], "answer a question with numbered, verified sources"),
    "retrieve": ("cli.retrieve", [], "search the index (no model)"),
    "summarize": ("cli.summarize", [], "summarize a document or what a query retrieves"),
    "evaluate": ("evals.cli", [], "evaluate retrieval, answers and citations on gold data"),
    "train": ("finetune.cli", ["train"], "fine-tune a (Q)LoRA adapter"),
    "chat": ("finetune.cli", ["chat"], "terminal chat with an adapter (no retrieval)"),
    "test": ("finetune.cli", ["test"], "score an adapter against the base on held-out Q&A"),
    "merge": ("finetune.cli", ["merge"], "merge an adapter into a full-precision base"),
    "data": ("finetune.cli", ["data"], "inspect, preview and build training data"),
    "feedback": ("services.feedback", [], "export or count chat feedback"),
    "serve": ("app", [], "serve the chat and the REST API"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (
        "usage: fcc-rag COMMAND [ARGS...]   (fcc-rag COMMAND --help for its options)\n\n"
        f"commands:\n{rows}\n"
    )


def entry(name: str) -> Callable[[list[str]], int]:
    module_name, prefix, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    if name == "serve":
        return lambda argv: module.main()
    return lambda argv: module.main([*prefix, *argv])


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    if args[0] not in COMMANDS:
        print(f"fcc-rag: unknown command {args[0]!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    from core.store import close_clients

    try:
        return int(entry(args[0])(args[1:]) or 0)
    finally:
        close_clients()  # before interpreter shutdown, which the embedded store's __del__ trips over


if __name__ == "__main__":
    raise SystemExit(main())
