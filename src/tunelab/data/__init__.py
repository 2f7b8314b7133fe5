"""Task-agnostic data layer: load files into memory-mapped `datasets`, check columns, split,
fingerprint, cache derived (tokenized) datasets by content, and normalize causal-lm records and
token-classification rows (CoNLL, tokens/tags, text with spans) to BIO."""

from tunelab.data.cache import cached_dataset
from tunelab.data.columns import (
    arrow_column,
    blank_rows,
    non_string_rows,
    require_columns,
    value_counts,
)
from tunelab.data.fingerprint import digest, file_sha256, fingerprint_table
from tunelab.data.formats import FORMATS, DataFormat
from tunelab.data.images import ImageProblem, check_images, open_image
from tunelab.data.loading import Table, cache_dir, load_table
from tunelab.data.records import (
    RECORDS,
    RecordFormat,
    RowError,
    detect_records,
    normalize_records,
)
from tunelab.data.split import stratified_split
from tunelab.data.tags import (
    LAYOUTS,
    bio_to_scheme,
    detect_layout,
    labels_from_tags,
    normalize_token_rows,
    spans_from_bio,
)

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "RECORDS",
    "DataFormat",
    "ImageProblem",
    "RecordFormat",
    "RowError",
    "Table",
    "arrow_column",
    "bio_to_scheme",
    "blank_rows",
    "cache_dir",
    "cached_dataset",
    "check_images",
    "detect_layout",
    "detect_records",
    "digest",
    "file_sha256",
    "fingerprint_table",
    "labels_from_tags",
    "load_table",
    "non_string_rows",
    "normalize_records",
    "normalize_token_rows",
    "open_image",
    "require_columns",
    "spans_from_bio",
    "stratified_split",
    "value_counts",
]
