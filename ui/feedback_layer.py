"""Chainlit's data layer, reduced to 👍/👎 feedback (stored by services.feedback)."""

from __future__ import annotations

import asyncio

from chainlit.data.base import BaseDataLayer
from chainlit.types import Feedback, PageInfo, PaginatedResponse

from services.feedback import UnknownAnswerError, get_feedback_store


# Feedback: Chainlit shows 👍/👎 (with a comment box) only when a data layer exists. This
# one stores just the feedback (the answers are recorded when they are given).
class FeedbackDataLayer(BaseDataLayer):
    async def upsert_feedback(self, feedback: Feedback) -> str:
        try:
            return await asyncio.to_thread(
                get_feedback_store().rate,
                feedback.forId,
                int(feedback.value),
                feedback.comment,
                feedback.id,
            )
        except UnknownAnswerError:
            raise ValueError("Only answers to questions can be rated.") from None

    async def delete_feedback(self, feedback_id: str) -> bool:
        return await asyncio.to_thread(get_feedback_store().delete_feedback, feedback_id)

    # Nothing else is persisted: no users, threads or steps.
    async def get_user(self, identifier):
        return None

    async def create_user(self, user):
        return None

    async def create_element(self, element):
        return None

    async def get_element(self, thread_id, element_id):
        return None

    async def delete_element(self, element_id, thread_id=None):
        return None

    async def create_step(self, step_dict):
        return None

    async def update_step(self, step_dict):
        return None

    async def delete_step(self, step_id):
        return None

    async def get_thread_author(self, thread_id):
        return ""

    async def delete_thread(self, thread_id):
        return None

    async def list_threads(self, pagination, filters):
        return PaginatedResponse(
            pageInfo=PageInfo(hasNextPage=False, startCursor=None, endCursor=None), data=[]
        )

    async def get_thread(self, thread_id):
        return None

    async def update_thread(self, thread_id, name=None, user_id=None, metadata=None, tags=None):
        return None

    async def build_debug_url(self) -> str:
        return ""

    async def close(self) -> None:
        return None

    async def get_favorite_steps(self, user_id):
        return []
