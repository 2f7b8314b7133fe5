"""Task-agnostic data layer: load files into memory-mapped `datasets`, check columns, split,
fingerprint, cache derived (tokenized) datasets by content, and normalize causal-lm records."""

from tunelab.data.cache import cached_dataset
from tunelab.data.checks import (
    arrow_column,
    blank_rows,
    non_string_rows,
    require_columns,
    value_counts,
)
from tunelab.data.fingerprint import digest, file_sha256, fingerprint_table
from tunelab.data.formats import FORMATS, DataFormat
from tunelab.data.loading import Table, cache_dir, load_table
from tunelab.data.records import (
    RECORDS,
    RecordFormat,
    RowError,
    detect_records,
    normalize_records,
)
from tunelab.data.split import stratified_split

__all__ = [
    "FORMATS",
    "RECORDS",
    "DataFormat",
    "RecordFormat",
    "RowError",
    "Table",
    "arrow_column",
    "blank_rows",
    "cache_dir",
    "cached_dataset",
    "detect_records",
    "digest",
    "file_sha256",
    "fingerprint_table",
    "load_table",
    "non_string_rows",
    "normalize_records",
    "require_columns",
    "stratified_split",
    "value_counts",
]
