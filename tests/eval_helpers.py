"""Helpers for the evaluation tests: a character tokenizer for the tiny models, and a model factory that a
spawned process (sharded runs) can import by name."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_tiny_model


class CharTokenizer:
    """Printable ASCII characters -> ids 3..95 (the tiny models' vocabulary is 96); 0 pad, 1 BOS, 2 EOS."""

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [3 + (ord(c) - 32) % 93 if 32 <= ord(c) < 127 else 3 for c in text]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(32 + int(i) - 3) for i in ids if int(i) >= 3)


def load_tiny():
    """``(model, tokenizer)``: the tiny llama and the character tokenizer."""
    return make_tiny_model("llama"), CharTokenizer()


def load_tiny_gpt2():
    """``(model, tokenizer)``: the tiny GPT-2 (another architecture) and the character tokenizer."""
    return make_tiny_model("gpt2"), CharTokenizer()


TEXT = (
    "The lighthouse stood on the rock for a hundred years. Ships passed it at night and the keeper kept the "
    "lamp burning. In winter the sea rose over the rocks and the wind shook the windows."
)


@pytest.fixture(autouse=False)
def one_thread():
    """Run a test with one torch thread (restored after): on a loaded 2-core machine, two threads that contend with
    other processes make the tiny models ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
