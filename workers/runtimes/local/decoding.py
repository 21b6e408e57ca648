"""From sampled token ids to the text a client sees, one delta at a time.

Two things make this more than `tokenizer.decode(token)`: a token may be part of a
multi-byte character (or merge with its neighbour when decoded), and a stop string may
arrive over several tokens. So the stream decodes a short window of ids (the offsets
method of vLLM and TGI), emits only whole characters, and holds back any tail that could
still grow into a stop string. What it emits, joined, is exactly the final text.
"""

from __future__ import annotations

# Prompt ids kept in the window so that the first completion token decodes with the
# spacing it has after the prompt (SentencePiece drops a leading space at position 0).
PROMPT_TAIL = 5


class TextStream:
    def __init__(self, decode, prompt_ids: list[int], stop: tuple[str, ...] = ()):
        """`decode(ids) -> str` must skip special tokens and not clean up spaces, so that
        decoding a longer window only ever appends to the text of a shorter one."""
        self._decode = decode
        self._ids = list(prompt_ids[-PROMPT_TAIL:])
        self._prefix = 0  # start of the decode window
        self._read = len(self._ids)  # ids before this are already in `text`
        self._stop = tuple(s for s in stop if s)
        self.text = ""  # the completion's text so far (cut at a stop string once found)
        self._sent = 0  # characters of `text` already emitted
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; returns the text that may be emitted now (often "")."""
        self._ids.append(token_id)
        self._advance(final=False)
        return self._release()

    def flush(self) -> str:
        """The rest, when the completion ends for another reason than a stop string."""
        if not self.stopped:
            self._advance(final=True)
        end = len(self.text)
        delta, self._sent = self.text[self._sent:end], end
        return delta

    def _advance(self, *, final: bool) -> None:
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        # U+FFFD at the end means a character's bytes are still incomplete: wait for more.
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self._ids)

    def _release(self) -> str:
        end = len(self.text)
        if self._stop:
            # Nothing before `_sent` can start a stop string: such a start was held back.
            hits = [i for s in self._stop if (i := self.text.find(s, self._sent)) >= 0]
            if hits:
                end = min(hits)
                self.text = self.text[:end]
                self.stopped = True
            else:
                end -= _held_back(self.text, self._stop)
        delta, self._sent = self.text[self._sent:end], end
        return delta


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is the start of some stop string."""
    longest = min(len(text), max(len(s) for s in stops) - 1)
    for k in range(longest, 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0
