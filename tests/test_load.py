"""The server under load, on the real stack: `python -m app` in a subprocess, driven over HTTP.

- 48 concurrent non-streaming chats (more than the 40 threads FastAPI runs sync routes on,
  which used to stop `/api/health` answering) all answer, while `/api/health` keeps its
  p95 under a second;
- past MAX_PENDING_ANSWERS a request is refused at once with 429 and Retry-After;
- non-streaming clients that give up stop their queued generations: their places are
  freed at once, not after the queue has run them for nobody.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bench.load import HEALTH_FAILED_S, QUESTIONS, ServerProcess, percentile, run_concurrent

CONCURRENT = 48
LIMIT = 50

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("load-server")
    # Raw answers from a one-passage prompt: the cheapest real generation, so 48 fit in a minute.
    env = {
        "MAX_PENDING_ANSWERS": str(LIMIT),
        "ANSWER_MODE": "raw",
        "RETRIEVAL_K": "1",
        "EVIDENCE_PASSAGES": "1",
    }
    with ServerProcess(state, env=env) as running:
        yield running
        print(running.log_tail())


def body(question: str, max_tokens: int = 4, stream: bool = False) -> dict:
    messages = [{"role": "user", "content": question}]
    return {"messages": messages, "max_tokens": max_tokens, "stream": stream}


def test_48_concurrent_chats_answer_and_health_stays_responsive(server):
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(CONCURRENT)]
    replies, _, health = asyncio.run(run_concurrent(server.url, questions, 4, {}, stream=False))
    assert not [r.error for r in replies if r.error]  # every one a 200
    assert all(r.answer or r.abstained for r in replies)
    assert len(health) >= 10, "the burst ended before health was probed"
    assert max(health) < HEALTH_FAILED_S, "a health probe failed"
    assert percentile(health, 0.95) < 1.0, sorted(health)[-5:]


async def _burst_and_give_up(url: str, requests: int, give_up_s: float) -> list[int | None]:
    """`requests` chats at once from clients that wait `give_up_s` at most (None: gave up)."""
    limits = httpx.Limits(max_connections=requests + 8)
    async with httpx.AsyncClient(base_url=url, timeout=give_up_s, limits=limits) as client:

        async def one(question: str) -> int | None:
            try:
                response = await client.post("/api/chat", json=body(question, 64))
            except httpx.TimeoutException:
                return None
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert "MAX_PENDING_ANSWERS" in response.json()["detail"]
            return response.status_code

        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(requests)]
        return list(await asyncio.gather(*(one(q) for q in questions)))


def pending(server) -> int:
    return httpx.get(f"{server.url}/api/status", timeout=30).json()["answers"]["pending"]


def test_past_the_bound_429_and_clients_that_give_up_free_their_place(server):
    """LIMIT + 6 at once: the 6 past the bound get 429 at once; the clients of the rest give
    up after 4 s. Their answers, queued behind one generation at a time (minutes of work),
    are dropped: within seconds nothing is pending, and the server answers the next chat."""
    codes = asyncio.run(_burst_and_give_up(server.url, LIMIT + 6, give_up_s=4.0))
    assert set(codes) <= {200, 429, None}, codes
    assert 1 <= codes.count(429) <= 6 + codes.count(200), codes
    assert codes.count(None) > LIMIT // 2, codes  # most were still queued when given up
    deadline = time.monotonic() + 15
    while pending(server) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert pending(server) == 0, "abandoned answers are still queued"
    response = httpx.post(f"{server.url}/api/chat", json=body(QUESTIONS[2]), timeout=120)
    assert response.status_code == 200, response.text
