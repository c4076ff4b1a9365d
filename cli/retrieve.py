"""`fcc-rag retrieve "QUERY" [--k N] [--mode dense|hybrid|bm25|mmr] [--section S] ...`

Prints the ranked chunks with source, page, section and scores; `--json` ends with one JSON
line: the list of hits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap

from core.errors import cli_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcc-rag retrieve", description="Search the ingested documents."
    )
    parser.add_argument("query")
    parser.add_argument(
        "--k", type=int, default=None, help="number of chunks (default: RETRIEVAL_K)"
    )
    parser.add_argument(
        "--mode",
        choices=["dense", "hybrid", "bm25", "mmr"],
        default=None,
        help="default: RETRIEVAL_MODE (hybrid = dense + keyword, fused by rank)",
    )
    parser.add_argument("--collection", help="default: COLLECTION_NAME")
    parser.add_argument(
        "--section", action="append", help="only these sections (repeatable), e.g. 15.109"
    )
    parser.add_argument("--source", action="append", help="only these sources (repeatable)")
    parser.add_argument("--part", action="append", help="only these CFR parts (repeatable)")
    parser.add_argument(
        "--threshold", type=float, default=None, help="minimum dense cosine (default: none)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of hits")
    return parser


def _filters(args) -> dict | None:
    filters = {
        name: values
        for name, values in (
            ("section", args.section),
            ("source", args.source),
            ("part", args.part),
        )
        if values
    }
    return filters or None


def _print_hits(hits) -> None:
    for rank, hit in enumerate(hits, start=1):
        where = hit.source or "?"
        if hit.page is not None:
            where += f" p.{hit.page}"
        if hit.section:
            where += f" § {hit.section}"
        dense = f"{hit.dense_score:.3f}" if hit.dense_score is not None else "n/a"
        print(f"{rank}. [{where}] score={hit.score:.4f} cosine={dense}")
        if hit.heading:
            print(f"   {hit.heading}")
        body = " ".join(hit.text.split())
        print(textwrap.indent(textwrap.shorten(body, 400, placeholder=" ..."), "   "))


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning made
    # one query embedding take ~0.5 s instead of ~10 ms. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)

    from chains.retrieval import Retriever
    from core.settings import get_settings
    from core.store import close_clients

    settings = get_settings()
    k = args.k or settings.retrieval_k
    try:
        retriever = Retriever(collection=args.collection, settings=settings)
        if retriever.count() == 0:
            print(
                f"error: collection {retriever.collection!r} is empty or missing; ingest first: "
                "make corpus (or python -m ingest data/corpus)",
                file=sys.stderr,
            )
            return 1
        filters = _filters(args)
        if args.mode == "mmr":
            hits = retriever.mmr(
                args.query,
                k=k,
                fetch_k=max(20, 4 * k),
                filters=filters,
                score_threshold=args.threshold,
            )
        else:
            hits = retriever.search(
                args.query, k=k, mode=args.mode, filters=filters, score_threshold=args.threshold
            )
    finally:  # a locked store, bad filters: one line, exit 2 (cli_errors)
        close_clients()
    if args.json:
        print(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False))
    else:
        if not hits:
            print("No matching chunks.")
        _print_hits(hits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
