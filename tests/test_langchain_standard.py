"""LangChain's standard test suites (`langchain-tests`) on the chat model and the retriever.

The chat-model suites run on the real default model (SmolLM2-135M-Instruct, fp32 on CPU)
with a few new tokens per call; the retriever suite on the sample corpus in an embedded
Qdrant collection. What the model cannot do is switched off with the suites' capability
flags, each with its reason below; no standard test is overridden.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import (  # noqa: E402
    ChatModelIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from chains.llm import QLoRAChatModel  # noqa: E402
from chains.retrieval import ChunkRetriever, Retriever  # noqa: E402
from core.models import DEFAULT_LLM_NAME  # noqa: E402

# The suites' async tests are plain `async def`; pytest-asyncio (a langchain-tests
# dependency) runs them when marked. The mark on a class reaches its sync tests too, where
# pytest-asyncio only warns that the mark does nothing; that warning is silenced.
ASYNC_TESTS = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings(
        "ignore:The test <Function .* is marked with '@pytest.mark.asyncio'"
    ),
]


class _LocalModelCapabilities:
    """What a 135M-parameter local chat model without a tool-calling template cannot do."""

    @property
    def chat_model_class(self) -> type[QLoRAChatModel]:
        return QLoRAChatModel

    @property
    def has_tool_calling(self) -> bool:
        # No bind_tools: the chat template renders no tool schemas and the model was not
        # trained to emit tool calls, so there is nothing to parse tool calls from.
        return False

    @property
    def has_structured_output(self) -> bool:
        # Needs tool calling or a JSON mode; neither exists for a plain local causal LM.
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False  # no constrained decoding

    @property
    def supports_image_inputs(self) -> bool:
        return False  # text-only model (also no audio, video or PDF inputs: the defaults)

    @property
    def supports_model_override(self) -> bool:
        # One chat model serves the base it loaded; `model=` per call raises TypeError
        # (create another QLoRAChatModel(model=...) instead, which shares loaded bases).
        return False


class TestQLoRAChatModelUnit(_LocalModelCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": DEFAULT_LLM_NAME}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The unit suite adds api_key="test" for hosted APIs; a local model has no key, and
        # the model rejects unknown arguments (extra="forbid") rather than ignore typos.
        params = dict(super().standard_chat_model_params)
        params.pop("api_key", None)
        return params


@pytest.mark.slow
@pytest.mark.usefixtures("no_cached_bases_left")
class TestQLoRAChatModelIntegration(_LocalModelCapabilities, ChatModelIntegrationTests):
    pytestmark = ASYNC_TESTS

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": DEFAULT_LLM_NAME, "max_tokens": 8, "temperature": 0.0}


@pytest.fixture
def no_cached_bases_left():
    """Every chat model the suite makes shares one loaded base (the cache in chains.adapter_set)."""
    yield
    from chains.adapter_set import BASES

    assert len(BASES) <= 1


class TestChunkRetrieverStandard(RetrieversIntegrationTests):
    pytestmark = ASYNC_TESTS

    @pytest.fixture(autouse=True)
    def _collection(self, corpus_collection: str) -> None:
        self.collection = corpus_collection

    @property
    def retriever_constructor(self) -> type[ChunkRetriever]:
        return ChunkRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": Retriever(self.collection)}

    @property
    def retriever_query_example(self) -> str:
        return "What are the conducted emission limits?"


# Beyond the suites: the other search options, as fields and per call --------------------


def test_retriever_options_as_fields_and_per_call(corpus_collection):
    retriever = Retriever(corpus_collection)
    lc = retriever.as_langchain_retriever(k=2, mode="bm25")
    assert lc.k == 2 and lc.mode == "bm25" and lc.search_kwargs == {"k": 2, "mode": "bm25"}
    query = "What does 15.207 require?"
    assert len(lc.invoke(query)) == 2
    assert len(lc.invoke(query, k=1)) == 1
    assert lc.k == 2  # a call's options do not stick

    only = lc.invoke(query, k=5, filters={"section": "15.207"}, mode="hybrid")
    assert only and {d.metadata["section"] for d in only} == {"15.207"}
    strict = lc.invoke(query, k=5, mode="dense", score_threshold=0.99)
    assert strict == []

    legacy = ChunkRetriever(retriever=retriever, search_kwargs={"k": 3})
    assert len(legacy.invoke(query)) == 3
    mmr = ChunkRetriever(retriever=retriever, search_type="mmr", k=2, fetch_k=6)
    assert len(mmr.invoke("limits")) == 2
    assert len(mmr.invoke("limits", k=3, lambda_mult=0.0)) == 3

    with pytest.raises(TypeError, match="Unknown search option"):
        lc.invoke(query, top_k=1)
    with pytest.raises(ValueError):
        ChunkRetriever(retriever=retriever, kk=1)
