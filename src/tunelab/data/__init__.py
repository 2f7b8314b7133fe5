"""Task-agnostic data layer: load files into memory-mapped `datasets`, check columns, split,
fingerprint, and cache derived (tokenized) datasets by content."""

from tunelab.data.cache import cached_dataset
from tunelab.data.checks import arrow_column, blank_rows, non_string_rows, require_columns, value_counts
from tunelab.data.fingerprint import digest, file_sha256, fingerprint_table
from tunelab.data.formats import FORMATS, DataFormat
from tunelab.data.loading import Table, cache_dir, load_table
from tunelab.data.split import stratified_split

__all__ = [
    "FORMATS",
    "DataFormat",
    "Table",
    "arrow_column",
    "blank_rows",
    "cache_dir",
    "cached_dataset",
    "digest",
    "file_sha256",
    "fingerprint_table",
    "load_table",
    "non_string_rows",
    "require_columns",
    "stratified_split",
    "value_counts",
]
