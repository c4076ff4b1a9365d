"""`fcc-rag summarize SOURCE | --query QUERY [--mode verified|extractive|raw] [--json]`.

fcc-rag summarize 97.313.txt --collection ecfr
fcc-rag summarize kdb_447498_rf_exposure.pdf --mode raw
fcc-rag summarize --query "conducted emission limits" --k 8 --json

A verified summary (the default, SUMMARY_MODE) is the document's provisions that carry a
limit, a duty, a prohibition or a deadline, each after its pinpoint and citing its numbered
passage `[n]`, with the model's condensed sentences where the verifier keeps them;
`--json` prints one line: summary, sources, dropped, sentences, timings, ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from core.errors import cli_errors

MODES = ("verified", "extractive", "raw")

# CLI ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcc-rag summarize",
        description="Summarize an ingested document, or what a query retrieves: its provisions "
        "quoted with pinpoints and cited [n] (verified), or the model's text (raw).",
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
        "--root",
        help="the ingest root (folder, or uploads / corpus) when SOURCE is indexed under several",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="verified: quoted provisions + verified model sentences; extractive: quotes, no "
        "model; raw: the model's text unverified (default: SUMMARY_MODE)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="per model call (default: 40 for verified, MAX_NEW_TOKENS for raw)",
    )
    parser.add_argument("--list", action="store_true", help="list the ingested sources and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON line, nothing else")
    return parser


def render(result) -> str:
    """The summary, its numbered sources and what the verifier dropped, for a terminal."""
    lines = [result.summary or "(the model produced no summary)"]
    cited = [s for s in result.sources if s.get("cited")]
    if cited:
        lines += ["", "Sources:"]
        for s in cited:
            where = s.get("source") or ""
            if s.get("page"):
                where += f", p. {s['page']}"
            lines.append(f"[{s['n']}] {s.get('pinpoint') or where} ({where})")
    if result.dropped:
        lines += ["", f"Dropped by the verifier ({len(result.dropped)}):"]
        lines += [f"- {d['text'][:160]} ({d['reason']})" for d in result.dropped[:8]]
    names = sorted({s["source"] for s in result.sources if s.get("source")})
    lines.append(
        f"\n{result.mode}: from {result.chunks} chunks of {', '.join(names) or 'the text'}; "
        f"{result.calls} model calls, {result.levels} reduce rounds, {result.seconds:.1f}s."
    )
    return "\n".join(lines)


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
        from services import summaries

        if args.query:
            result = summaries.summarize_query(
                args.query, k=args.k, mode=args.mode, collection=args.collection,
                max_new_tokens=args.max_new_tokens,
            )  # fmt: skip
        else:
            result = summaries.summarize_source(
                args.source, root=args.root, mode=args.mode, collection=args.collection,
                max_new_tokens=args.max_new_tokens,
            )  # fmt: skip
    finally:  # an unknown source, a missing model, a locked store: one line, exit 2
        close_clients()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
