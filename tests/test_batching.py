"""Concurrent generations decoded as one batch, on the real model: the same greedy text as one
at a time, each row ending on its own (stop string, max tokens, its caller leaving), and a
row that ends early handed back before the batch is over."""

from __future__ import annotations

import threading
import time

import pytest

from chains.llm import QLoRAChatModel

PROMPTS = [
    "Name a radio band.",
    "What is an antenna? Explain in detail how it radiates.",
    "Define frequency.",
    "What is a license?",
    "What does the FCC regulate?",
    "Explain what a ship station is and who may operate one on board.",
]


@pytest.fixture(scope="module")
def batching_model(chat_model):
    """Shares the session's base (no adapter); repetition penalty 1.0 so rows may batch."""
    return QLoRAChatModel(
        max_new_tokens=32, temperature=0.0, repetition_penalty=1.0, max_batch_size=8
    )


@pytest.fixture(scope="module")
def alone(batching_model):
    """Each prompt's greedy text, one at a time (batching off)."""
    single = QLoRAChatModel(
        max_new_tokens=32, temperature=0.0, repetition_penalty=1.0, max_batch_size=1
    )
    texts = [single.invoke(p).content for p in PROMPTS]
    assert single._worker.stats()["largest_batch"] == 1
    return texts


def run_together(model, calls) -> tuple[list, list[float]]:
    """Start every call at once on its own thread; results and when each ended."""
    results: list = [None] * len(calls)
    ended: list[float] = [0.0] * len(calls)
    gate = threading.Barrier(len(calls))

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = calls[i]()
        except BaseException as error:  # reported by the test
            results[i] = error
        ended[i] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, ended


def test_batched_greedy_text_is_the_text_alone(batching_model, alone):
    before = batching_model._worker.stats()
    calls = [lambda p=p: batching_model.invoke(p).content for p in PROMPTS]
    results, _ = run_together(batching_model, calls)
    assert results == alone
    after = batching_model._worker.stats()
    assert after["largest_batch"] >= 3, after  # they did share a batch
    assert after["generations"] - before["generations"] == len(PROMPTS)


def test_rows_end_on_their_own_and_early_ones_return_first(batching_model, alone):
    short = 4
    stop = " " + alone[1].split()[5]  # a word its text alone reaches
    calls = [
        lambda: batching_model.invoke(PROMPTS[0], max_new_tokens=short),
        lambda: batching_model.invoke(PROMPTS[1], stop=[stop]),
        *[lambda p=p: batching_model.invoke(p) for p in PROMPTS[2:]],
    ]
    results, ended = run_together(batching_model, calls)
    assert not [r for r in results if isinstance(r, BaseException)], results
    first, stopped = results[0], results[1]
    assert first.usage_metadata["output_tokens"] == short
    assert first.response_metadata["finish_reason"] == "length"
    assert alone[0].startswith(first.content)
    assert stop not in stopped.content and alone[1].startswith(stopped.content)
    assert alone[1].index(stop) == len(stopped.content)
    assert stopped.response_metadata["finish_reason"] == "stop"
    assert [r.content for r in results[2:]] == alone[2:]
    assert ended[0] < max(ended[2:])  # the 4-token row did not wait for the longest


def test_a_caller_that_leaves_does_not_disturb_the_batch(batching_model, alone):
    def leave_early() -> str:
        pieces = []
        for chunk in batching_model.stream(PROMPTS[1]):
            pieces.append(chunk.content)
            if len(pieces) == 3:
                break  # closing the stream stops this row only
        return "".join(pieces)

    calls = [leave_early, *[lambda p=p: batching_model.invoke(p).content for p in PROMPTS[2:]]]
    results, _ = run_together(batching_model, calls)
    assert alone[1].startswith(results[0])
    assert results[1:] == alone[2:]
