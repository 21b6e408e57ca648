"""A generate job's input as prompt token ids."""

from __future__ import annotations

from common.errors import JobInvalid
from workers.runtimes.base import JobSpec


def prompt_ids(tokenizer, job: JobSpec) -> list[int]:
    """Chat template when the tokenizer has one (a plain prompt becomes one user message);
    otherwise the prompt itself, or the messages as "role: content" lines."""
    messages = _messages(job)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template writes the special tokens (BOS included) itself.
        special = False
    elif "messages" in job.input:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        special = True
    else:
        text, special = job.input["prompt"], True
    # BERT-derived tokenizers add token_type_ids, which causal LMs refuse.
    ids = tokenizer(text, add_special_tokens=special, return_token_type_ids=False)["input_ids"]
    if not ids:
        raise JobInvalid("the prompt is empty")
    return list(ids)


def _messages(job: JobSpec) -> list[dict]:
    if "messages" not in job.input and not isinstance(job.input.get("prompt"), str):
        raise JobInvalid("generate input needs a prompt string or a list of messages")
    messages = job.messages()
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise JobInvalid("each message needs a string role and a string content")
    if not messages:
        raise JobInvalid("messages is empty")
    return messages
