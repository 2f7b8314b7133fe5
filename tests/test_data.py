"""Tests for tunelab.data: loading, row locations, one-line errors, checks, splits, fingerprints, cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import typing
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunelab.config.schema import DataConfig
from tunelab.data import (
    FORMATS,
    Table,
    blank_rows,
    cache_dir,
    cached_dataset,
    digest,
    file_sha256,
    fingerprint_table,
    load_table,
    non_string_rows,
    require_columns,
    stratified_split,
    value_counts,
)
from tunelab.data import cache as cache_module
from tunelab.errors import DataError


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (so messages show relative paths) with the tunelab cache inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    return tmp_path


def write(path: str, content: bytes | str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return p


def load(path: str, split: str = "train", **cfg: object) -> Table:
    return load_table(path, DataConfig(train="unused", **cfg), split)


def load_error(path: str, **cfg: object) -> str:
    with pytest.raises(DataError) as info:
        load(path, **cfg)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def rows(table: Table) -> dict[str, list]:
    return table.dataset.to_dict()


# --------------------------------------------------------------------------- formats load


def test_formats_registry_has_one_entry_per_format() -> None:
    # Every value data.format accepts (but "auto") is a registered format, and nothing else is.
    configurable = set(typing.get_args(DataConfig.model_fields["format"].annotation)) - {"auto"}
    assert {"conll", "imagefolder"} <= configurable
    assert FORMATS.names() == sorted(configurable)


def test_jsonl_loads_memory_mapped_under_tunelab_cache(workspace: Path) -> None:
    write("data/x.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n')
    table = load("data/x.jsonl", split="validation")
    assert rows(table) == {"text": ["a", "b"], "label": [1, 2]}
    assert table.split == "validation"
    assert table.files == [Path("data/x.jsonl")]
    assert table.dataset.cache_files, "expected an Arrow file on disk (memory-mapped)"
    for entry in table.dataset.cache_files:
        assert Path(entry["filename"]).is_relative_to(workspace / "cache")


def test_json_array_and_json_lines_in_dot_json() -> None:
    write("data/a.json", '[\n  {"text": "a", "label": "x"},\n  {"text": "b", "label": "y"}\n]\n')
    write("data/l.json", '{"text": "c"}\n{"text": "d"}\n')
    assert rows(load("data/a.json")) == {"text": ["a", "b"], "label": ["x", "y"]}
    assert rows(load("data/l.json")) == {"text": ["c", "d"]}


def test_csv_and_tsv_keep_na_like_text() -> None:
    write("data/x.csv", 'text,label\n"a, with comma",NA\nNone,null\n')
    write("data/x.tsv", "text\tlabel\na, b\t1\nc\t2\n")
    # pandas' default would turn NA/None/null into missing values.
    assert rows(load("data/x.csv")) == {"text": ["a, with comma", "None"], "label": ["NA", "null"]}
    assert rows(load("data/x.tsv")) == {"text": ["a, b", "c"], "label": [1, 2]}


def test_parquet_loads() -> None:
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 0]}), "data/x.parquet")
    table = load("data/x.parquet")
    assert rows(table) == {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    assert table.where(2) == "data/x.parquet row 3"


def test_folder_concatenates_sorted_files_and_skips_hidden() -> None:
    write("data/f/b.jsonl", '{"text": "b1"}\n{"text": "b2"}\n')
    write("data/f/a.jsonl", '{"text": "a1"}\n')
    write("data/f/.hidden.jsonl", "not json\n")
    table = load("data/f")
    assert table.files == [Path("data/f/a.jsonl"), Path("data/f/b.jsonl")]
    assert rows(table) == {"text": ["a1", "b1", "b2"]}


def test_explicit_format_overrides_extension() -> None:
    write("data/x.txt", '{"text": "a"}\n')
    assert rows(load("data/x.txt", format="jsonl")) == {"text": ["a"]}


def test_max_rows_keeps_first_rows_and_stops_reading_files() -> None:
    write("data/f/a.jsonl", '{"text": "a1"}\n{"text": "a2"}\n')
    write("data/f/b.jsonl", '{"text": "b1"}\n')
    write("data/f/c.jsonl", "broken\n")  # never read: max_rows is reached before it
    table = load("data/f", max_rows=3)
    assert rows(table) == {"text": ["a1", "a2", "b1"]}
    assert table.files == [Path("data/f/a.jsonl"), Path("data/f/b.jsonl")]
    assert load("data/f/a.jsonl", max_rows=1).dataset.num_rows == 1


def test_file_edited_in_place_is_reread_even_with_same_mtime() -> None:
    path = write("data/x.jsonl", '{"text": "old"}\n')
    assert rows(load("data/x.jsonl")) == {"text": ["old"]}
    stat = path.stat()
    path.write_text('{"text": "new"}\n')
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # datasets alone keys on path + mtime
    assert rows(load("data/x.jsonl")) == {"text": ["new"]}


def test_folder_files_int_and_float_are_unified() -> None:
    write("data/f/a.jsonl", '{"text": "a", "score": 1}\n')
    write("data/f/b.jsonl", '{"text": "b", "score": 2.5}\n')
    assert rows(load("data/f")) == {"text": ["a", "b"], "score": [1.0, 2.5]}


# --------------------------------------------------------------------------- where()


def test_where_jsonl_counts_blank_lines() -> None:
    write("data/x.jsonl", '\n{"text": "a"}\n\n   \n{"text": "b"}\n{"text": "c"}\n')
    table = load("data/x.jsonl")
    assert [table.where(i) for i in range(3)] == ["data/x.jsonl line 2", "data/x.jsonl line 5", "data/x.jsonl line 6"]


def test_where_csv_counts_header_blank_lines_and_multiline_fields() -> None:
    write("data/x.csv", 'text,label\na,1\n\n"two\nlines",2\nb,3\n')
    table = load("data/x.csv")
    assert rows(table)["text"] == ["a", "two\nlines", "b"]
    assert [table.where(i) for i in range(3)] == ["data/x.csv line 2", "data/x.csv line 4", "data/x.csv line 6"]


def test_where_json_array_gives_item_line() -> None:
    write("data/x.json", '[\n  {"text": "a"},\n\n  {"text": "b"}\n]')
    assert load("data/x.json").where(1) == "data/x.json line 4"


def test_where_folder_names_the_right_file() -> None:
    write("data/f/a.jsonl", '{"text": "a1"}\n{"text": "a2"}\n')
    write("data/f/b.jsonl", '\n{"text": "b1"}\n{"text": "b2"}\n')
    table = load("data/f")
    assert table.where(1) == "data/f/a.jsonl line 2"
    assert table.where(2) == "data/f/b.jsonl line 2"
    assert table.where(3) == "data/f/b.jsonl line 3"
    with pytest.raises(IndexError):
        table.where(4)


# --------------------------------------------------------------------------- bad input


def test_missing_file() -> None:
    assert load_error("data/x.jsonl").startswith("data.train: data/x.jsonl does not exist — ")


def test_malformed_json_line_names_file_and_line() -> None:
    write("data/x.jsonl", '{"text": "a"}\n\n{"text": "b" "label": 2}\n{"text": "c"}\n')
    assert load_error("data/x.jsonl") == (
        "data/x.jsonl line 3: invalid JSON (Expecting ',' delimiter at column 14) — fix or remove that line"
    )


def test_malformed_json_array_names_line() -> None:
    write("data/x.json", '[\n  {"text": "a"},\n  {"text": "b" "x": 1}\n]')
    assert load_error("data/x.json").startswith("data/x.json line 3: invalid JSON (")


def test_undecodable_bytes_name_line_and_column() -> None:
    write("data/x.jsonl", b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    write("data/x.csv", b"text,label\na,1\n\nd\xe9j\xe0 vu,2\n")
    assert load_error("data/x.jsonl") == (
        "data/x.jsonl line 2: bytes that are not UTF-8 (0xe9 at column 14) — re-save the file as UTF-8"
    )
    assert load_error("data/x.csv").startswith("data/x.csv line 4: bytes that are not UTF-8 (0xe9 at column 2)")


def test_utf8_split_across_read_chunks_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunelab.data.formats import base as formats

    monkeypatch.setattr(formats, "CHUNK", 16)
    write("data/x.jsonl", '{"text": "ééééééééé"}\n'.encode())  # 2-byte chars straddle 16-byte chunks
    assert rows(load("data/x.jsonl")) == {"text": ["ééééééééé"]}


def test_json_line_that_is_not_an_object() -> None:
    write("data/x.jsonl", '{"text": "a"}\n["b"]\n')
    assert load_error("data/x.jsonl").startswith("data/x.jsonl line 2: an array where a JSON object was expected")
    write("data/y.json", '["a", "b"]')
    assert load_error("data/y.json").startswith("data/y.json line 1 (item 1): a string where a JSON object")


def test_pretty_printed_object_is_not_json_lines() -> None:
    write("data/x.jsonl", '{\n  "text": "a"\n}\n')
    assert "one JSON object spread over several lines" in load_error("data/x.jsonl")


def test_json_column_type_change_names_line() -> None:
    write("data/x.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": null}\n{"text": "c", "label": "pos"}\n')
    assert load_error("data/x.jsonl").startswith(
        "data/x.jsonl line 3: column 'label' holds a string here but a number on line 1"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("text,label\na,1\nb,2,3\n", "data/x.csv line 3: 3 fields where the header has 2"),
        ("text,label\na,1\nb\nc,3\n", "data/x.csv line 3: 1 field where the header has 2"),  # pandas pads silently
    ],
)
def test_csv_wrong_field_count(content: str, expected: str) -> None:
    write("data/x.csv", content)
    assert load_error("data/x.csv").startswith(expected)


def test_csv_unclosed_quote_names_line_and_odd_quoting_is_tolerated() -> None:
    write("data/x.csv", 'text,label\na,1\n"open,2\nc,3\n')
    assert load_error("data/x.csv").startswith("data/x.csv line 3: a quoted field starts here and is never closed")
    write("data/y.csv", 'text,label\n"a"b,1\nc,2\n')  # pandas accepts text after a closing quote
    table = load("data/y.csv")
    assert table.where(1) == "data/y.csv line 3"


def test_csv_type_change_after_first_chunk_names_line() -> None:
    body = "".join(f"t{i},{i}\n" for i in range(10_050))
    write("data/x.csv", "text,label\n" + body + "z,pos\n")
    assert load_error("data/x.csv").startswith("data/x.csv line 10052: column 'label' holds 'pos'")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("x.jsonl", "", "data/x.jsonl: the file is empty"),
        ("x.jsonl", "\n  \n", "data/x.jsonl: the file is empty"),
        ("x.csv", "text,label\n", "data/x.csv: a header line but no rows"),
        ("x.json", "[]", "data/x.json: the JSON array is empty"),
    ],
)
def test_empty_inputs(name: str, content: str, expected: str) -> None:
    write(f"data/{name}", content)
    assert load_error(f"data/{name}").startswith(expected)


def test_parquet_without_rows_or_not_parquet() -> None:
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), "data/e.parquet")
    write("data/b.parquet", b"definitely not parquet")
    assert load_error("data/e.parquet").startswith("data/e.parquet: no rows")
    assert load_error("data/b.parquet").startswith("data/b.parquet: not a readable Parquet file")


def test_unknown_extension_names_it_and_the_format_key() -> None:
    write("data/x.doc", "hello\n")
    message = load_error("data/x.doc")
    assert message.startswith("data.train: data/x.doc has extension '.doc'")
    assert "data.format" in message


def test_folder_problems() -> None:
    write("data/mix/a.jsonl", '{"text": "a"}\n')
    write("data/mix/b.csv", "text\nb\n")
    write("data/none/notes.rst", "hi\n")
    (Path("data/empty")).mkdir()
    assert load_error("data/mix").startswith("data.train: data/mix mixes data formats: a.jsonl (jsonl), b.csv (csv)")
    assert load_error("data/none").startswith("data.train: data/none has no data files (found: notes.rst)")
    assert load_error("data/empty").startswith("data.train: data/empty has no data files")


def test_folder_files_disagreeing_on_columns_or_types() -> None:
    write("data/f/a.jsonl", '{"text": "a", "label": 1}\n')
    write("data/f/b.jsonl", '{"text": "b", "label": "pos"}\n')
    assert load_error("data/f").startswith("data/f/b.jsonl: column 'label' holds string values but data/f/a.jsonl")
    write("data/g/a.jsonl", '{"text": "a", "label": 1}\n')
    write("data/g/b.jsonl", '{"text": "b", "tag": 1}\n')
    assert load_error("data/g").startswith("data/g/b.jsonl: columns text, tag differ from data/g/a.jsonl")


def test_file_named_like_a_glob_is_read_literally() -> None:
    write("data/x[1].jsonl", '{"text": "literal"}\n')
    write("data/x1.jsonl", '{"text": "glob match"}\n')
    assert rows(load("data/x[1].jsonl")) == {"text": ["literal"]}


# --------------------------------------------------------------------------- checks


def table_of(data: dict[str, list]) -> Table:
    return Table(datasets.Dataset.from_dict(data), [Path("data/x.jsonl")], "train", source=Path("data/x.jsonl"))


def test_require_columns_hints_closest_name_and_key() -> None:
    table = table_of({"text": ["a"], "label": [1]})
    require_columns(table, ["text", "label"])
    with pytest.raises(DataError) as info:
        require_columns(table, ["txt"], keys={"txt": "data.text_column"})
    assert str(info.value) == (
        "data/x.jsonl: column 'txt' not found (columns: text, label) — did you mean 'text'? set data.text_column"
    )


def test_blank_rows_finds_null_empty_and_whitespace() -> None:
    table = table_of({"text": ["ok", "", "  ", None, "\t\n", "\u00a0", " x "]})
    assert blank_rows(table, "text").tolist() == [1, 2, 3, 4, 5]


def test_blank_rows_respects_selected_rows_and_non_string_columns() -> None:
    table = table_of({"text": ["", "a", "", "b"], "n": [1, None, 3, None]})
    table.dataset = table.dataset.select([3, 2, 1])
    assert blank_rows(table, "text").tolist() == [1]
    assert blank_rows(table, "n").tolist() == [0, 2]


def test_non_string_rows() -> None:
    write("data/x.jsonl", '{"text": "a", "n": 1}\n\n{"text": "b", "n": 2}\n')
    table = load("data/x.jsonl")
    assert non_string_rows(table, "text").tolist() == []
    with pytest.raises(DataError) as info:
        non_string_rows(table, "n")
    assert str(info.value).startswith(
        "data/x.jsonl: column 'n' holds numbers (int64), not text (first at data/x.jsonl line 1)"
    )


def test_non_string_rows_in_mixed_type_json_column(workspace: Path) -> None:
    path = write("data/m.jsonl", '{"text": "a"}\n{"text": ["b"]}\n{"text": null}\n{"text": 3}\n')
    # datasets' default (on_mixed_types="use_json") makes an opaque Json column instead of failing.
    ds = datasets.load_dataset("json", data_files=str(path.resolve()), split="train", cache_dir=str(workspace / "c"))
    table = Table(ds, [path], "train", format="jsonl")
    assert non_string_rows(table, "text").tolist() == [1, 3]


def test_value_counts_ordered_by_value_and_stringified() -> None:
    ds = datasets.Dataset.from_dict({"label": [10, 2, 2, None, 10, 10, 1]})
    assert list(value_counts(ds, "label").items()) == [("1", 1), ("2", 2), ("10", 3)]
    ds = datasets.Dataset.from_dict({"label": ["pos", "neg", "pos"]})
    assert list(value_counts(ds.select([0, 2]), "label").items()) == [("pos", 2)]


# --------------------------------------------------------------------------- split


def labelled(counts: dict[str, int]) -> datasets.Dataset:
    labels = [label for label, n in counts.items() for _ in range(n)]
    order = np.random.default_rng(0).permutation(len(labels))
    return datasets.Dataset.from_dict({"i": list(range(len(labels))), "label": [labels[j] for j in order]})


def test_stratified_split_is_deterministic_and_partitions_rows() -> None:
    ds = labelled({"a": 50, "b": 30, "c": 20})
    kept, held = stratified_split(ds, "label", 0.2, seed=7)
    again_kept, again_held = stratified_split(ds, "label", 0.2, seed=7)
    assert held["i"][:] == again_held["i"][:] and kept["i"][:] == again_kept["i"][:]
    assert sorted(kept["i"][:] + held["i"][:]) == list(range(100))
    assert held.num_rows == 20
    assert stratified_split(ds, "label", 0.2, seed=8)[1]["i"][:] != held["i"][:]


def test_stratified_split_preserves_proportions_and_covers_classes() -> None:
    counts = {"a": 41, "b": 23, "c": 7, "d": 2, "e": 3}
    ds = labelled(counts)
    kept, held = stratified_split(ds, "label", 0.15, seed=1)
    held_counts = value_counts(held, "label")
    kept_counts = value_counts(kept, "label")
    for label, n in counts.items():
        assert abs(held_counts[label] - 0.15 * n) <= 1, (label, held_counts)
        assert kept_counts[label] >= 1 and held_counts[label] >= 1
    assert abs(held.num_rows - 0.15 * 76) <= len(counts)


def test_stratified_split_single_row_class_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    ds = labelled({"a": 10, "b": 9, "lonely": 1})
    with caplog.at_level(logging.WARNING, logger="tunelab.data.split"):
        kept, held = stratified_split(ds, "label", 0.25, seed=3)
    assert "single row" in caplog.text
    assert (kept.num_rows, held.num_rows) == (15, 5)
    assert stratified_split(ds, "label", 0.25, seed=3)[1]["i"][:] == held["i"][:]


@pytest.mark.slow  # launches a Python process (~2 s)
def test_stratified_split_same_across_processes() -> None:
    ds = labelled({"a": 30, "b": 20, "c": 10})
    here = stratified_split(ds, "label", 0.3, seed=11)[1]["i"][:]
    code = (
        "import numpy as np, datasets, json\n"
        "from tunelab.data.split import stratified_split\n"
        "labels=[l for l,n in {'a':30,'b':20,'c':10}.items() for _ in range(n)]\n"
        "o=np.random.default_rng(0).permutation(len(labels))\n"
        "ds=datasets.Dataset.from_dict({'i':list(range(len(labels))),'label':[labels[j] for j in o]})\n"
        "print(json.dumps(stratified_split(ds,'label',0.3,seed=11)[1]['i'][:]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


# --------------------------------------------------------------------------- fingerprints


def test_file_sha256_and_fingerprint_table() -> None:
    path = write("data/x.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path) == expected
    table = load("data/x.jsonl")
    assert fingerprint_table(table) == {
        "split": "train",
        "files": [{"path": "data/x.jsonl", "sha256": expected, "bytes": path.stat().st_size}],
        "rows": 2,
    }
    path.write_text('{"text": "changed"}\n')
    assert fingerprint_table(table)["files"][0]["sha256"] == file_sha256(path) != expected


def test_digest_is_canonical() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert digest({"a": 1}, "x") != digest({"a": 1}, "y")
    assert digest(Path("data/x")) == digest("data/x")
    with pytest.raises(TypeError):
        digest(object())


# --------------------------------------------------------------------------- cache


def small_dataset() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]], "label": [0, 1]})


def test_cached_dataset_builds_once_and_is_memory_mapped() -> None:
    calls = []

    def build() -> datasets.Dataset:
        calls.append(1)
        return small_dataset()

    key = {"data": "abc", "tokenizer": "tok", "max_length": 8}
    first, hit = cached_dataset(key, build)
    assert (hit, len(calls)) == (False, 1)
    second, hit = cached_dataset(dict(reversed(list(key.items()))), build)
    assert (hit, len(calls)) == (True, 1)
    assert second.to_dict() == first.to_dict() == small_dataset().to_dict()
    folder = cache_dir() / "tokenized" / digest(key)
    for ds in (first, second):
        assert ds.cache_files and all(Path(f["filename"]).is_relative_to(folder) for f in ds.cache_files)
    assert json.loads((folder / "key.json").read_text()) == key
    cached_dataset({**key, "max_length": 16}, build)
    assert len(calls) == 2


def test_cached_dataset_crash_in_build_leaves_nothing() -> None:
    def build() -> datasets.Dataset:
        raise RuntimeError("tokenizer exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        cached_dataset({"k": 1}, build)
    root = cache_dir() / "tokenized"
    assert not root.exists() or list(root.iterdir()) == []


def test_cached_dataset_crash_while_saving_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self: datasets.Dataset, path: str, **kwargs: object) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "partial.arrow").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cached_dataset({"k": 2}, small_dataset)
    assert list((cache_dir() / "tokenized").iterdir()) == []


def test_cached_dataset_race_loser_discards_its_copy() -> None:
    key = {"k": 3}
    winner, _ = cached_dataset(key, small_dataset)
    target = cache_dir() / "tokenized" / digest(key)
    cache_module._save(datasets.Dataset.from_dict({"input_ids": [[9]], "label": [9]}), key, target)  # noqa: SLF001
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    again, hit = cached_dataset(key, small_dataset)
    assert hit and again.to_dict() == winner.to_dict()
