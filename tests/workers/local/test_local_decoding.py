"""TextStream and prompts, on tokenizers built here (no model needed)."""

import copy

import pytest

from workers.runtimes.base import JobSpec
from workers.runtimes.local.decoding import TextStream
from workers.runtimes.local.prompts import prompt_ids

pytestmark = pytest.mark.timeout(60)

TEXT = "héllo wörld, ünïcode 🙂 and 日本語 text; the end"


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A byte-level BPE: multi-byte characters span several tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world", "the end of the text", "code and tests"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def _stream(tokenizer, prompt, stop=()):
    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    return TextStream(decode, tokenizer(prompt)["input_ids"], stop)


def test_multibyte_characters_come_out_whole(byte_tokenizer):
    ids = byte_tokenizer(TEXT)["input_ids"]
    assert len(ids) > len(TEXT.encode()) // 2  # many characters are split over tokens
    stream = _stream(byte_tokenizer, "prompt: ")
    deltas = [stream.push(i) for i in ids]
    deltas.append(stream.flush())
    assert "".join(deltas) == TEXT == stream.text
    assert not any("\ufffd" in d for d in deltas)
    assert deltas.count("") > 0  # some tokens were held until their character was complete


def test_stop_string_over_several_tokens_is_never_streamed(byte_tokenizer):
    stream = _stream(byte_tokenizer, "prompt: ", stop=("wörld",))
    deltas = []
    for i in byte_tokenizer(TEXT)["input_ids"]:
        deltas.append(stream.push(i))
        if stream.stopped:
            break
    assert stream.stopped and stream.text == "héllo "
    assert "".join(deltas) + stream.flush() == "héllo "


def test_messages_without_a_chat_template(runtime):
    tokenizer = copy.deepcopy(runtime.executors["tiny"].lm.tokenizer)
    tokenizer.chat_template = None
    job = JobSpec("j", "generate", "local/tiny",
                  {"messages": [{"role": "system", "content": "red"},
                                {"role": "user", "content": "green"}]}, {}, 1)
    ids = prompt_ids(tokenizer, job)
    assert tokenizer.decode(ids) == "system : red user : green assistant :"
    plain = JobSpec("j", "generate", "local/tiny", {"prompt": "one two"}, {}, 1)
    assert tokenizer.decode(prompt_ids(tokenizer, plain)) == "one two"
