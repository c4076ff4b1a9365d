"""The OpenAI-compatible endpoint through the official `openai` client, against the real
server (`python -m app` in a subprocess with its own store, the sample corpus ingested),
the real default model: no mocks."""

from __future__ import annotations

import httpx
import pytest

from bench.load import SAMPLE_CORPUS, ServerProcess

openai = pytest.importorskip("openai")

QUESTION = "What are the two conditions of operation for a Part 15 device?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("openai-server")) as running:
        yield running
        print(running.log_tail())


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def ask(**kwargs):
    return {"model": "fcc-rag", "messages": [{"role": "user", "content": QUESTION}], **kwargs}


def test_models_list_names_the_served_model(client):
    models = client.models.list().data
    assert len(models) == 1 and models[0].owned_by == "local"
    assert models[0].id  # the model's name once loaded, "fcc-rag" before


def test_completion_cites_its_sources(client):
    completion = client.chat.completions.create(**ask(max_tokens=48))
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    extra = completion.model_extra
    assert extra["sources"] and extra["answer_id"] and extra["abstained"] is False
    corpus = {p.name for p in SAMPLE_CORPUS.iterdir()}
    assert {s["source"] for s in extra["sources"]} <= corpus
    assert all({"n", "source", "text", "cited"} <= set(s) for s in extra["sources"])


def test_a_tiny_max_tokens_finishes_with_length(client):
    completion = client.chat.completions.create(
        **ask(max_tokens=3), extra_body={"answer_mode": "raw"}
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens <= 3
    # max_completion_tokens (OpenAI's newer name) is the same limit.
    newer = client.chat.completions.create(
        **ask(max_completion_tokens=3), extra_body={"answer_mode": "raw"}
    )
    assert newer.choices[0].finish_reason == "length"


def test_streamed_completion_role_first_sources_and_usage_last(client):
    stream = client.chat.completions.create(
        **ask(max_tokens=48), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(not c.choices or c.choices[0].delta.role is None for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1 and finished[0].choices[0].finish_reason in ("stop", "length")
    assert finished[0].model_extra["sources"] and finished[0].model_extra["answer_id"]
    last = chunks[-1]
    assert last.choices == [] and last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_streamed_without_include_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            **ask(max_tokens=4), stream=True, extra_body={"answer_mode": "raw"}
        )
    )
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def error_of(raised) -> dict:
    body = raised.value.body
    assert set(body) == {"message", "type", "param", "code"}, body  # the client unwraps "error"
    return body


def test_system_messages_go_before_the_assistants_instructions(client):
    messages = [{"role": "system", "content": "Answer in one short sentence."}, *ask()["messages"]]
    completion = client.chat.completions.create(
        model="fcc-rag", messages=messages, max_tokens=24, extra_body={"answer_mode": "raw"}
    )
    assert completion.choices[0].message.content and completion.model_extra["sources"]


def test_unsupported_fields_are_refused(client):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**ask(), tools=[tool])
    error = error_of(raised)
    assert error["param"] == "tools" and error["code"] == "unsupported_parameter"
    assert "function calling" in error["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**ask(), response_format={"type": "json_object"})
    assert error_of(raised)["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**ask(), extra_body={"k": 3})  # not an OpenAI field
    assert error_of(raised)["param"] == "k"


def test_neutral_values_of_unimplemented_fields_are_accepted(client):
    completion = client.chat.completions.create(
        **ask(max_tokens=4),
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
        logprobs=False,
        user="someone",
        extra_body={"answer_mode": "raw"},
    )
    assert completion.choices[0].message.content


def test_malformed_bodies_get_an_error_object(client, server):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="fcc-rag", messages=[])
    error = error_of(raised)
    assert error["param"] == "messages" and error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as raised:  # the last message is the question
        client.chat.completions.create(
            model="fcc-rag", messages=[{"role": "assistant", "content": "hi"}]
        )
    assert error_of(raised)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="fcc-rag", messages=[{"role": "user"}], max_tokens=0)
    assert error_of(raised)["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="fcc-rag", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]
        )
    assert "tool messages are not supported" in error_of(raised)["message"]
    for body in ("{not json", "[1, 2]", ""):
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_api_routes_keep_their_error_format(server):
    response = httpx.post(f"{server.url}/api/chat", json={"messages": []})
    assert response.status_code == 422 and isinstance(response.json()["detail"], list)
