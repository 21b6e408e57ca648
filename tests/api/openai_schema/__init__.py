"""OpenAI's published schemas of the OpenAI-compatible routes, the Responses API and its
webhook events (a verbatim subset, PROVENANCE.txt beside this file), and
`validate(name, instance)` against them: what our OpenAI-compatible answers must match
to the letter."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

_HERE = Path(__file__).parent


def _nullable(node: Any) -> Any:
    # OpenAPI 3.0's `nullable: true` (still on some schemas) is JSON Schema's "or null".
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def _document() -> dict:
    doc = json.loads((_HERE / "openai-openapi-subset.json").read_text())
    return {"components": _nullable(doc["components"])}


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({**_document(), "$ref": f"#/components/schemas/{name}"})


def validate(name: str, instance: Any) -> None:
    """AssertionError (the first error, briefly) if `instance` is not a `name`."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise AssertionError(f"not a {name}: {e.message[:300]} at {list(e.absolute_path)}")


STREAM_EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.failed": "ResponseFailedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
}


def validate_event(event: dict) -> None:
    """A streamed event against its schema. `response.cancelled` has none in OpenAI's
    document (its stream never ends that way there); its `response` is checked."""
    if event["type"] == "response.cancelled":
        assert set(event) == {"type", "sequence_number", "response"}
        validate("Response", event["response"])
        return
    validate(STREAM_EVENT_SCHEMAS[event["type"]], event)
