"""Text-classification pieces below the end-to-end runs: tokenization with truncation flags."""

from __future__ import annotations

import pytest

from tunelab.config.schema import ModelConfig
from tunelab.models import load_tokenizer, resolve_model
from tunelab.tasks.text_classification import _encode_truncating


@pytest.fixture(scope="module")
def tokenizer():
    config = ModelConfig(source="tiny-random-bert")
    return load_tokenizer(resolve_model(config), config)


TEXTS = ["short one", "x" * 40, "a much longer text that certainly exceeds the limit of tokens", "exactly"]


def test_single_texts_match_plain_truncation_and_flag_cut_rows(tokenizer):
    enc, truncated = _encode_truncating(tokenizer, TEXTS, None, max_length=12)
    plain = tokenizer(TEXTS, truncation=True, max_length=12)
    full = tokenizer(TEXTS)
    assert enc["input_ids"] == plain["input_ids"]
    assert enc["attention_mask"] == plain["attention_mask"]
    assert truncated == [len(ids) > 12 for ids in full["input_ids"]]
    assert truncated == [False, True, True, False]


def test_row_of_exactly_max_length_is_not_truncated(tokenizer):
    n = len(tokenizer("exactly")["input_ids"])
    _, truncated = _encode_truncating(tokenizer, ["exactly"], None, max_length=n)
    assert truncated == [False]


def test_pairs_fall_back_to_two_passes(tokenizer):
    pairs = ["p"] * 4
    enc, truncated = _encode_truncating(tokenizer, TEXTS, pairs, max_length=12)
    assert enc["input_ids"] == tokenizer(TEXTS, pairs, truncation=True, max_length=12)["input_ids"]
    assert truncated == [len(ids) > 12 for ids in tokenizer(TEXTS, pairs)["input_ids"]]
    assert truncated == [False, True, True, False]
