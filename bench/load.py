"""Load test: N concurrent `/api/chat` requests against a running server.

    python -m bench.load                 # starts its own server on a free port (temp store)
    python -m bench.load --url http://localhost:8000 [--api-key KEY]

The N questions cycle through 16 distinct ones. Each distinct question is first asked one
at a time (the reference), then all N at once (streaming, so the time to the first token
shows the queue wait; `--no-stream` for plain JSON requests), while `/api/health` is polled
every 0.1 s. Every concurrent answer must equal its question's reference answer and sources
(greedy decoding is deterministic, batched or not): nothing lost, nothing mixed up between
requests. Reported: latency, first token, health latency under the load, and refusals (429
past MAX_PENDING_ANSWERS). Results go to bench/results/load.json and load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "data" / "samples"
RESULTS = ROOT / "bench" / "results"

QUESTIONS = [
    "What are the two conditions of operation for a Part 15 device?",
    "What must the user manual warn about changes or modifications?",
    "Which detector is used for measurements at or below 1000 MHz?",
    "What is an intentional radiator?",
    "What is an unintentional radiator?",
    "What are the conducted emission limits on AC power lines?",
    "What information must appear on an FCC label?",
    "When may the FCC ID be shown electronically instead of on a label?",
    "What are the radiated emission limits for Class B digital devices?",
    "What output power is allowed for frequency hopping systems in 2400-2483.5 MHz?",
    "What is the SAR limit for the general population?",
    "When is a device exempt from routine RF exposure evaluation?",
    "What is a permissive change?",
    "What is a modular transmitter approval?",
    "What are the limits for maximum permissible exposure?",
    "What does equipment authorization mean?",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m app` as a subprocess with its own store and data dir (the sample corpus
    ingested first with `python -m ingest`), stopped on exit. Used by the browser test too."""

    def __init__(
        self,
        state_dir: Path | None = None,
        port: int | None = None,
        corpus: Path = SAMPLE_CORPUS,
        env: dict[str, str] | None = None,
        startup_timeout: float = 180.0,
    ):
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="fcc-rag-server-"))
        self.port = port or free_port()
        self.corpus = corpus
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.state_dir / "server.log"
        self.startup_timeout = startup_timeout
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "QDRANT_PATH": str(self.state_dir / "qdrant"),
            "DATA_DIR": str(self.state_dir / "data"),
            "CORPUS_DIR": str(corpus),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **(env or {}),
        }
        for name in ("QDRANT_URL", "QDRANT_HOST", "API_KEY", "CHECKPOINTS_DIR"):
            if name not in (env or {}):
                self.env.pop(name, None)
        self.process: subprocess.Popen | None = None

    def ingest(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "ingest", str(self.corpus)],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )

    def start(self) -> ServerProcess:
        self.ingest()
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"The server exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"The server did not answer within {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# One request -------------------------------------------------------------------------------


@dataclass
class Reply:
    question: str
    answer: str = ""
    sources: list[tuple[str, int | None, str | None]] = field(default_factory=list)
    tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    server_timings: dict = field(default_factory=dict)
    abstained: bool = False
    error: str | None = None


async def ask(
    client: httpx.AsyncClient,
    question: str,
    max_tokens: int,
    headers: dict[str, str],
    stream: bool = True,
) -> Reply:
    """One /api/chat request; streamed SSE events are parsed as they arrive."""
    reply = Reply(question)
    body = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": stream,
    }
    started = time.perf_counter()
    if not stream:
        return await _ask_json(client, body, headers, reply, started)
    try:
        async with client.stream("POST", "/api/chat", json=body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event["type"] == "token":
                    reply.tokens += 1
                    if reply.first_token_s is None:
                        reply.first_token_s = time.perf_counter() - started
                elif event["type"] == "final":
                    reply.answer = event["answer"]
                    reply.sources = [
                        (s["source"], s["page"], s["section"]) for s in event["sources"]
                    ]
                    reply.server_timings = event.get("timings") or {}
                    reply.abstained = event["abstained"]
                elif event["type"] == "error":
                    reply.error = event["detail"]
    except httpx.HTTPError as error:
        reply.error = f"{type(error).__name__}: {error}"
    reply.total_s = time.perf_counter() - started
    return reply


async def _ask_json(client, body, headers, reply: Reply, started: float) -> Reply:
    try:
        response = await client.post("/api/chat", json=body, headers=headers)
        if response.status_code == 429:
            reply.error = f"429 (Retry-After {response.headers.get('Retry-After')})"
        else:
            response.raise_for_status()
            payload = response.json()
            reply.answer, reply.abstained = payload["answer"], payload["abstained"]
            reply.sources = [(s["source"], s["page"], s["section"]) for s in payload["sources"]]
            reply.server_timings = payload.get("timings") or {}
            reply.tokens = (payload.get("usage") or {}).get("output_tokens") or 0
    except httpx.HTTPError as error:
        reply.error = f"{type(error).__name__}: {error}"
    reply.total_s = time.perf_counter() - started
    return reply


async def run_sequential(url, questions, max_tokens, headers) -> list[Reply]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        return [await ask(client, q, max_tokens, headers) for q in questions]


HEALTH_FAILED_S = 30.0  # what a failed or timed-out health probe counts as


async def _probe_health(client: httpx.AsyncClient, stop: asyncio.Event, times: list[float]):
    while not stop.is_set():
        started = time.perf_counter()
        try:
            ok = (await client.get("/api/health", timeout=30)).status_code == 200
        except httpx.HTTPError:
            ok = False
        times.append(time.perf_counter() - started if ok else HEALTH_FAILED_S)
        await asyncio.sleep(0.1)


async def run_concurrent(
    url, questions, max_tokens, headers, stream: bool = True
) -> tuple[list[Reply], float, list[float]]:
    limits = httpx.Limits(max_connections=len(questions) + 8)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        stop, health = asyncio.Event(), []
        probe = asyncio.create_task(_probe_health(client, stop, health))
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(ask(client, q, max_tokens, headers, stream) for q in questions)
        )
        wall = time.perf_counter() - started
        stop.set()
        await probe
        return list(replies), wall, health


# Report ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = int(index), min(int(index) + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (index - low), 3)


def summarize(replies: list[Reply]) -> dict:
    totals = [r.total_s for r in replies if not r.error]
    firsts = [r.first_token_s for r in replies if r.first_token_s is not None]
    return {
        "latency_s": {
            "p50": percentile(totals, 0.5),
            "p95": percentile(totals, 0.95),
            "max": percentile(totals, 1.0),
        },
        "first_token_s": {
            "p50": percentile(firsts, 0.5),
            "p95": percentile(firsts, 0.95),
            "max": percentile(firsts, 1.0),
        },
        "tokens_mean": round(statistics.mean(r.tokens for r in replies), 1) if replies else 0,
    }


def compare(reference: list[Reply], concurrent: list[Reply]) -> list[dict]:
    """Every concurrent reply must be its own question's reference reply."""
    problems = []
    for ref, got in zip(reference, concurrent, strict=True):
        if got.error or not (got.answer or got.abstained):
            problems.append({"question": got.question, "problem": f"not answered: {got.error}"})
        elif got.answer != ref.answer:
            problems.append(
                {
                    "question": got.question,
                    "problem": "answer differs",
                    "expected": ref.answer,
                    "got": got.answer,
                }
            )
        elif got.sources != ref.sources:
            problems.append(
                {
                    "question": got.question,
                    "problem": "sources differ",
                    "expected": ref.sources,
                    "got": got.sources,
                }
            )
    return problems


def write_report(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "load.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    seq, con = result["sequential"], result["concurrent"]
    health = con["health_s"]
    lines = [
        "# Load test: concurrent /api/chat",
        "",
        f"{result['requests']} requests ({result['distinct']} distinct questions), "
        f"max_tokens={result['max_tokens']}, greedy, "
        f"{'streaming' if result['stream'] else 'non-streaming JSON'}; {result['machine']}. "
        f"Generated by `python -m bench.load` on {result['date']}.",
        "",
        "| run | wall (s) | latency p50 (s) | latency p95 (s) | first token p50 (s) | first token p95 (s) |",
        "|---|---|---|---|---|---|",
        f"| one at a time | {seq['wall_s']} | {seq['latency_s']['p50']} | {seq['latency_s']['p95']} | {seq['first_token_s']['p50']} | {seq['first_token_s']['p95']} |",
        f"| {result['requests']} concurrent | {con['wall_s']} | {con['latency_s']['p50']} | {con['latency_s']['p95']} | {con['first_token_s']['p50']} | {con['first_token_s']['p95']} |",
        "",
        f"- Answered: {con['answered']}/{result['requests']}; errors: {con['errors']} "
        f"(of which 429: {con['refused']}).",
        f"- `/api/health` during the load ({health['count']} probes): p50 {health['p50']} s, "
        f"p95 {health['p95']} s, max {health['max']} s.",
        f"- Same answer and sources as the one-at-a-time run: "
        f"{result['requests'] - len(result['mismatches'])}/{result['requests']}"
        + (
            " (none lost, none mixed up)."
            if not result["mismatches"]
            else "; see load.json `mismatches`."
        ),
        f"- GENERATION_BATCH_SIZE={result.get('batch_size')}: "
        + (
            "one generation at a time, so concurrent requests queue and the time to the "
            "first token is mostly the wait for the requests ahead."
            if str(result.get("batch_size", "1")).startswith("1")
            else "generations waiting for the model are decoded together "
            "(bench/results/batching.md)."
        ),
    ]
    (out_dir / "load.md").write_text("\n".join(lines) + "\n")


def run(url: str, requests: int, max_tokens: int, api_key: str | None, stream: bool = True) -> dict:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(requests)]
    distinct = list(dict.fromkeys(questions))
    headers = {"X-API-Key": api_key} if api_key else {}
    started = time.perf_counter()
    reference = asyncio.run(run_sequential(url, distinct, max_tokens, headers))
    sequential_wall = time.perf_counter() - started
    by_question = {r.question: r for r in reference}
    concurrent, concurrent_wall, health = asyncio.run(
        run_concurrent(url, questions, max_tokens, headers, stream)
    )
    mismatches = compare([by_question[q] for q in questions], concurrent)
    return {
        "url": url,
        "requests": requests,
        "distinct": len(distinct),
        "stream": stream,
        "batch_size": os.environ.get("GENERATION_BATCH_SIZE", "1 (default)"),
        "max_tokens": max_tokens,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "sequential": {"wall_s": round(sequential_wall, 2), **summarize(reference)},
        "concurrent": {
            "wall_s": round(concurrent_wall, 2),
            "answered": sum(1 for r in concurrent if not r.error and (r.answer or r.abstained)),
            "errors": sum(1 for r in concurrent if r.error),
            "refused": sum(1 for r in concurrent if (r.error or "").startswith("429")),
            "health_s": {
                "count": len(health),
                "p50": percentile(health, 0.5),
                "p95": percentile(health, 0.95),
                "max": percentile(health, 1.0),
            },
            **summarize(concurrent),
        },
        "mismatches": mismatches,
        "replies": [asdict(r) for r in concurrent],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", help="a running server (default: start one on a free port)")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"))
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.url:
        result = run(
            args.url.rstrip("/"), args.requests, args.max_tokens, args.api_key, args.stream
        )
    else:
        with ServerProcess() as server:
            result = run(server.url, args.requests, args.max_tokens, None, args.stream)
    write_report(result, args.out)
    print((args.out / "load.md").read_text())
    return 0 if not result["mismatches"] and result["concurrent"]["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
