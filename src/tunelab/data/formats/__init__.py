"""Data file formats: one module per format, each registering itself in FORMATS."""

from tunelab.data.formats import conll, delimited, imagefolder, json, parquet, txt  # noqa: F401  (registration)
from tunelab.data.formats.base import (
    EMPTY_FIX,
    FORMATS,
    DataFormat,
    check_file,
    format_for_extension,
    quiet_datasets,
    root_message,
    utf8_error,
)

__all__ = [
    "EMPTY_FIX",
    "FORMATS",
    "DataFormat",
    "check_file",
    "format_for_extension",
    "quiet_datasets",
    "root_message",
    "utf8_error",
]
