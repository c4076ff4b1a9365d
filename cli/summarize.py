"""`fcc-rag summarize SOURCE | --query QUERY [--k N] [--json]`: map-reduce summaries.

fcc-rag summarize kdb_447498_rf_exposure.pdf
fcc-rag summarize --query "conducted emission limits" --k 8 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from chains.summarize import Summarizer
from core.errors import cli_errors

# CLI ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcc-rag summarize",
        description="Summarize an ingested document, or what a query retrieves (map-reduce).",
    )
    parser.add_argument(
        "source", nargs="?", help="a source as ingested, e.g. kdb_447498_rf_exposure.pdf"
    )
    parser.add_argument("--query", help="summarize the chunks retrieved for this query instead")
    parser.add_argument(
        "--k", type=int, default=8, help="chunks to retrieve with --query (default 8)"
    )
    parser.add_argument("--collection", help="default: COLLECTION_NAME")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="per summary (default: MAX_NEW_TOKENS)"
    )
    parser.add_argument("--list", action="store_true", help="list the ingested sources and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON line, nothing else")
    return parser


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    from core.store import close_clients

    try:
        if args.list:
            from ingest.pipeline import list_sources

            for entry in list_sources(args.collection):
                print(f"{entry['source']}\t{entry['chunks']} chunks\t{entry.get('title') or ''}")
            return 0
        if bool(args.source) == bool(args.query):
            build_parser().error("give a SOURCE or --query QUERY (one of them)")
        from services.assistant import get_assistant

        assistant = get_assistant()
        summarizer = Summarizer(
            assistant.llm, assistant.retriever(args.collection), args.max_new_tokens
        )
        if args.query:
            result = summarizer.summarize_query(args.query, k=args.k)
        else:
            result = summarizer.summarize_source(args.source)
    finally:  # an unknown source, a missing model, a locked store: one line, exit 2
        close_clients()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    print(result.summary or "(the model produced no summary)")
    names = sorted({s["source"] for s in result.sources if s.get("source")})
    print(
        f"\nFrom {result.chunks} chunks of {', '.join(names) or 'the text'}; "
        f"{result.calls} model calls, {result.levels} reduce rounds, {result.seconds:.1f}s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
