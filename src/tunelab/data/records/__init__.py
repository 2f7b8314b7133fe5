"""Causal-lm record formats: one module per row layout, each registering itself in RECORDS.

`normalize_records` turns a loaded `Table` into one canonical layout (chat messages,
prompt/completion or raw text) with each row's original index, for line-accurate errors later.
"""

from tunelab.data.records import alpaca, messages, preference, prompt_completion, prompts, sharegpt, text  # noqa: F401
from tunelab.data.records.base import FEATURES, RECORDS, Kind, RecordFormat, RowError
from tunelab.data.records.normalize import (
    detect_records,
    normalize_records,
    record_format,
)

__all__ = [
    "FEATURES",
    "RECORDS",
    "Kind",
    "RecordFormat",
    "RowError",
    "detect_records",
    "normalize_records",
    "record_format",
]
