"""A tiny causal LM built on the spot, for tests and benchmarks that must not download weights.

A Llama with random weights and a word-level tokenizer trained on a few sentences, saved
like a hub model so that it loads through the real path (MONKEY_LOCAL_MODELS=NAME=FOLDER).
It names no end-of-sequence token, so a completion always runs to max_tokens.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "the monkey writes code all day long",
    "a batch of jobs waits in the queue for the worker",
    "tokens stream back to the client one by one",
    "cancel the job and the model stops at once",
    "embeddings are vectors and generation is text",
    "red green blue yellow purple orange black white",
    "one two three four five six seven eight nine ten",
    "system : user : assistant :",
]


def build_tiny_lm(path: str | Path, *, chat_template: bool = True, hidden: int = 64,
                  layers: int = 2, seed: int = 1234) -> str:
    """Build and save the model in `path`; returns the folder. Defaults: 2 layers, hidden 64."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|user|>", "<|system|>", "<|assistant|>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                        additional_special_tokens=specials[2:])
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
