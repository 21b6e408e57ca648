"""Database model of the OpenAI Responses API's own state.

A response is a job (`resp_X` is job `job_X`): the job row holds the status, the
messages the model sees, the output and the metrics, and runs through the same
queue, store and event log as every other job. This row holds what only the
Responses API shows: the input items as the client sent them (for `input_items`),
the instructions, the conversation link (`previous_response_id`), the `background`
and `store` flags, and a delete mark (a deleted response answers 404; its job stays,
as jobs are the record of what ran).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, utcnow


class ResponseRow(Base):
    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_owner_id", "owner_id", "job_id"),)

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40))
    previous_response_id: Mapped[str | None] = mapped_column(String(48), default=None)
    instructions: Mapped[str | None] = mapped_column(Text, default=None)
    # The input items of this request, normalised to messages ({role, content}).
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The conversation before this response's output (earlier turns, then input_items),
    # without instructions: what a later previous_response_id continues from.
    conversation: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    store: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


RESPONSE_PREFIX = "resp_"
JOB_PREFIX = "job_"


def response_id(job_id: str) -> str:
    return RESPONSE_PREFIX + job_id.removeprefix(JOB_PREFIX)


def job_id_of(response_id: str) -> str | None:
    """The job behind a response id, or None when it is not one of ours."""
    if not response_id.startswith(RESPONSE_PREFIX) or len(response_id) > 44:
        return None
    return JOB_PREFIX + response_id.removeprefix(RESPONSE_PREFIX)


__all__ = ["ResponseRow", "job_id_of", "response_id"]
