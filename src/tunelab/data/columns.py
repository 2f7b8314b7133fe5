"""Task-agnostic column checks over Arrow data (never whole columns as Python lists)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunelab.choices import closest
from tunelab.data.loading import Table
from tunelab.errors import DataError

logger = logging.getLogger(__name__)


def arrow_column(dataset: datasets.Dataset, column: str) -> pa.ChunkedArray:
    """`column` as Arrow, honouring any indices mapping (select/filter/shuffle); zero-copy without one."""
    if dataset._indices is None:  # noqa: SLF001 - the public formatter would copy through `take`
        return dataset.data.column(column)
    return dataset.select_columns([column]).with_format("arrow")[:].column(0)


def require_columns(table: Table, columns: list[str], *, keys: Mapping[str, str] | None = None) -> None:
    """Raise DataError for the first of `columns` missing from `table`, hinting the closest name.

    `keys` maps a column to the config key that names it (e.g. {"txt": "data.text_column"}).
    """
    present = table.dataset.column_names
    for column in columns:
        if column in present:
            continue
        hint = closest(column, present)
        key = (keys or {}).get(column)
        fix = f"did you mean {hint!r}? " if hint else ""
        fix += f"set {key}" if key else "fix the column name in the config"
        raise DataError(f"{table.name}: column {column!r} not found (columns: {', '.join(present)})", fix=fix)


def _mask_rows(chunks: list[pa.Array]) -> np.ndarray:
    offset = 0
    found = []
    for mask in chunks:
        values = mask.to_numpy(zero_copy_only=False)
        found.append(np.flatnonzero(values) + offset)
        offset += len(mask)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def blank_rows(table: Table, column: str) -> np.ndarray:
    """Row indices whose `column` is null, empty or only (Unicode) whitespace."""
    data = arrow_column(table.dataset, column)
    string_like = pa.types.is_string(data.type) or pa.types.is_large_string(data.type)
    masks = []
    for chunk in data.chunks:
        blank = pc.is_null(chunk)
        if string_like:
            empty = pc.or_(pc.equal(pc.utf8_length(chunk), 0), pc.utf8_is_space(chunk))
            blank = pc.or_(blank, pc.fill_null(empty, False))
        masks.append(blank)
    return _mask_rows(masks)


def non_string_rows(table: Table, column: str) -> np.ndarray:
    """Rows whose `column` value is not a string (nulls excluded: see `blank_rows`).

    A string column gives no rows. A mixed-type (datasets `Json`) column gives the rows holding
    non-strings. Any other column type is not text at all: DataError naming the type.
    """
    data = arrow_column(table.dataset, column)
    if pa.types.is_string(data.type) or pa.types.is_large_string(data.type) or pa.types.is_null(data.type):
        return np.empty(0, dtype=np.int64)
    if isinstance(data.type, pa.BaseExtensionType) and pa.types.is_string(data.type.storage_type):
        # datasets' Json feature stores each value as JSON text: strings start with a quote.
        masks = []
        for chunk in data.chunks:
            storage = chunk.storage
            masks.append(pc.fill_null(pc.invert(pc.starts_with(storage, '"')), False))
        return _mask_rows(masks)
    non_null = _mask_rows([pc.is_valid(chunk) for chunk in data.chunks])
    first = f" (first at {table.where(int(non_null[0]))})" if len(non_null) else ""
    raise DataError(
        f"{table.name}: column {column!r} holds {_describe(data.type)}, not text{first}",
        fix="point the config at the text column, or store the values as strings",
    )


def _describe(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return f"numbers ({arrow_type})"
    if pa.types.is_boolean(arrow_type):
        return "true/false values"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "lists"
    if pa.types.is_struct(arrow_type):
        return "objects"
    return f"{arrow_type} values"


def value_counts(dataset: datasets.Dataset, column: str) -> dict[str, int]:
    """Counts of each value of `column` (labels stringified), ordered by value; nulls are not counted."""
    counts = pc.value_counts(arrow_column(dataset, column))
    values = counts.field("values").to_pylist()  # one entry per distinct value: small
    numbers = counts.field("counts").to_pylist()
    pairs = sorted(((v, n) for v, n in zip(values, numbers, strict=True) if v is not None), key=lambda p: p[0])
    return {str(v): n for v, n in pairs}
