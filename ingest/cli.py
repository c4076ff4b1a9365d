"""`python -m ingest PATH... [--collection NAME] [--recreate] [--json]`;
`python -m ingest --list [--collection NAME] [--json]`"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from core.errors import EXIT_USER_ERROR, cli_errors

EXIT_NOTHING_INGESTED = 1
EXIT_STORE_UNUSABLE = EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Ingest PDF, HTML, Markdown, text, DOCX and eCFR XML files (folders are "
        "taken recursively) into the Qdrant collection. Unchanged files are skipped, changed "
        "ones replaced, and files gone from an ingested folder removed.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders")
    parser.add_argument(
        "--list",
        action="store_true",
        help="ingest nothing: print one line per indexed source (root, source, chunk count, "
        "file sha256); with --json one JSON object per line with the keys source, root, "
        "chunks, file_hash, doc_type, title",
    )
    parser.add_argument("--collection", help="collection name (default: COLLECTION_NAME setting)")
    parser.add_argument(
        "--recreate", action="store_true", help="drop the collection and rebuild it from PATHs"
    )
    parser.add_argument(
        "--json", action="store_true", help="no progress bar; end with one JSON line (the report)"
    )
    return parser


def _list(collection: str, as_json: bool) -> int:
    from core.store import close_clients
    from ingest.pipeline import list_sources

    try:
        entries = list_sources(collection, by_root=True)
    finally:
        close_clients()
    for entry in entries:
        if as_json:
            print(json.dumps(entry))
        else:
            print(
                f"{entry['root'] or '-'}\t{entry['source']}\t{entry['chunks']} chunks\t"
                f"{entry['file_hash'] or '(mixed versions)'}"
            )
    if not as_json:
        print(f"{collection}: {len(entries)} sources", file=sys.stderr)
    return 0


def _print_summary(report, collection: str) -> None:
    print(
        f"{collection}: {report.files_seen} files seen, {report.files_added} added, "
        f"{report.files_replaced} replaced, {report.files_unchanged} unchanged, "
        f"{report.files_removed} removed, {report.files_skipped} skipped; "
        f"{report.chunks_written} chunks written in {report.seconds:.1f}s"
    )
    for entry in report.skipped:
        print(f"  skipped {entry['file']}: {entry['reason']}")
    if report.ignored:
        shown = ", ".join(report.ignored[:5]) + (" ..." if len(report.ignored) > 5 else "")
        print(f"  ignored {len(report.ignored)} file(s) of unsupported types: {shown}")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list and (args.paths or args.recreate):
        parser.error("--list takes no PATH and no --recreate")
    if not args.list and not args.paths:
        parser.error("give at least one PATH (or --list)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning made
    # one query embedding take ~0.5 s instead of ~10 ms. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(
        level=logging.WARNING if args.json else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "sentence_transformers", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from core.settings import get_settings
    from core.store import close_clients
    from ingest.pipeline import ingest_paths

    settings = get_settings()
    collection = args.collection or settings.collection_name
    if args.list:
        return _list(collection, args.json)
    try:  # a locked store, a missing embedding model: one line, exit 2 (cli_errors)
        report = ingest_paths(
            args.paths, collection=collection, recreate=args.recreate, progress=not args.json
        )
    finally:
        close_clients()  # the embedded store must close before interpreter shutdown
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print_summary(report, collection)
        if report.files_seen == 0:
            print("No supported files found (PDF, HTML, Markdown, text, DOCX, eCFR XML).")
    if report.files_seen and report.files_skipped == report.files_seen:
        print("error: nothing could be ingested (see the reasons above)", file=sys.stderr)
        return EXIT_NOTHING_INGESTED
    return 0
