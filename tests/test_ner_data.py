"""Tests for the token-classification data layer: the CoNLL format, tag schemes, layouts, the clinical-ner corpus."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from tunelab.config.schema import DataConfig
from tunelab.data import (
    FORMATS,
    Table,
    bio_to_scheme,
    labels_from_tags,
    load_table,
    normalize_token_rows,
    spans_from_bio,
)
from tunelab.data.corpora import CORPORA
from tunelab.data.tags import detect_scheme, split_words, to_bio
from tunelab.data.tags.schemes import InvalidTags, TagRowError
from tunelab.errors import DataError

BAD_ROW_FIX = "fix or remove the row, or set data.bad_rows: skip"
TAGS_FIX = "fix the tags, or set data.invalid_tags: repair"
SPANS_FIX = "fix the spans, or set data.invalid_tags: repair"


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (so messages show relative paths) with the tunelab cache inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def write(path: str, content: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content, encoding="utf-8")
    return p


def write_rows(path: str, rows: list[dict[str, Any] | None]) -> Path:
    """One JSON object per line; None writes a blank line (physical line numbers must count it)."""
    return write(path, "".join("\n" if r is None else json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def conll(*sentences: list[str], docstart: bool = False) -> str:
    """CoNLL text: each sentence a list of token lines, a blank line after each."""
    head = "-DOCSTART- -X- -X- O\n\n" if docstart else ""
    return head + "".join("\n".join(lines) + "\n\n" for lines in sentences)


def config(**values: Any) -> DataConfig:
    return DataConfig(train="unused", **values)


def load(path: str | Path, **values: Any) -> Table:
    return load_table(path, config(**values), "train")


def normalize(path: str | Path, **values: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = config(**values)
    dataset, info = normalize_token_rows(load_table(path, cfg, "train"), cfg)
    return dataset.to_list(), info


def error(path: str | Path, **values: Any) -> str:
    with pytest.raises(DataError) as info:
        normalize(path, **values)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- the conll format


def test_conll_format_registered() -> None:
    assert FORMATS.get("conll").extensions == (".conll", ".bio", ".iob")


def test_conll_loads_sentences_with_every_field_and_skips_docstart() -> None:
    write("data/x.conll", conll(
        ["EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "German JJ B-NP B-MISC"],
        ["Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER"],
        docstart=True,
    ) + "-DOCSTART- -X- -X- O\n\n\n" + conll(["BRUSSELS NNP B-NP B-LOC"]))
    table = load("data/x.conll")
    assert table.dataset.to_list() == [
        {"tokens": ["EU", "rejects", "German"],
         "fields": [["EU", "rejects", "German"], ["NNP", "VBZ", "JJ"], ["B-NP", "B-VP", "B-NP"],
                    ["B-ORG", "O", "B-MISC"]]},
        {"tokens": ["Peter", "Blackburn"],
         "fields": [["Peter", "Blackburn"], ["NNP", "NNP"], ["B-NP", "I-NP"], ["B-PER", "I-PER"]]},
        {"tokens": ["BRUSSELS"], "fields": [["BRUSSELS"], ["NNP"], ["B-NP"], ["B-LOC"]]},
    ]
    # Physical lines of each sentence's first token: DOCSTART lines and extra blank lines are counted.
    assert [table.where(i) for i in range(3)] == ["data/x.conll line 3", "data/x.conll line 7", "data/x.conll line 13"]


def test_conll_tag_column_choice() -> None:
    sentence = ["EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "German JJ B-NP B-MISC", "Union NN I-NP O"]
    write("data/x.conll", conll(sentence))
    rows, info = normalize("data/x.conll")  # -1: the last field
    assert rows[0]["tags"] == ["B-ORG", "O", "B-MISC", "O"] and info["layout"] == "conll"
    rows, _ = normalize("data/x.conll", conll_tag_column=2)  # the chunk tags
    assert rows[0]["tags"] == ["B-NP", "B-VP", "B-NP", "I-NP"]
    rows, _ = normalize("data/x.conll", conll_tag_column=-2)
    assert rows[0]["tags"] == ["B-NP", "B-VP", "B-NP", "I-NP"]
    assert error("data/x.conll", conll_tag_column=1).startswith("data/x.conll line 1: token 1 'NNP' is not a BIO tag")


@pytest.mark.parametrize(("column", "problem"), [(0, "the token itself"), (4, "not one of its 4 fields"),
                                                 (-4, "the token itself"), (-9, "not one of its 4 fields")])
def test_conll_tag_column_out_of_range(column: int, problem: str) -> None:
    write("data/x.conll", "\n" + conll(["EU NNP B-NP B-ORG"]))
    assert error("data/x.conll", conll_tag_column=column) == (
        f"data/x.conll line 2: data.conll_tag_column is {column}, {problem} — set data.conll_tag_column to the field "
        "that holds the tag (the token is field 0; -1 is the last)"
    )


def test_conll_tabs_crlf_bom_and_no_break_space_in_token() -> None:
    write("data/x.bio", "\ufeffNew\u00a0York\tB-LOC\r\nis\tO\r\n\r\n\r\nok\tO\r\n")
    rows, _ = normalize("data/x.bio")
    assert [(r["tokens"], r["tags"]) for r in rows] == [(["New\u00a0York", "is"], ["B-LOC", "O"]), (["ok"], ["O"])]
    assert load("data/x.bio").where(1) == "data/x.bio line 5"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a O\nb O\n\nc\n", ("data/x.conll line 4: one field ('c') where a token line needs the token and its tag — "
         "separate the token and its tag with a space or tab, and sentences with a blank line")),
        ("\n\na NN O\nb NN O\n\nc O\n", ("data/x.conll line 6: 2 fields where line 3 has 3 — give every token line "
         "the same fields (a token cannot contain a space)")),
        ("-DOCSTART- O\n\n\n", ("data/x.conll: no sentences (only blank and -DOCSTART- lines) — add rows to it or "
         "point the config at another file")),
    ],
)
def test_conll_malformed_file_names_physical_line(content: str, message: str) -> None:
    write("data/x.conll", content)
    with pytest.raises(DataError) as info:
        load("data/x.conll")
    assert str(info.value) == message


def test_conll_edit_with_same_mtime_is_reloaded() -> None:
    path = write("data/x.conll", conll(["a B-DRUG"]))
    assert load(path).dataset["tokens"] == [["a"]]
    stat = path.stat()
    write("data/x.conll", conll(["b B-DRUG"]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load(path).dataset["tokens"] == [["b"]]


def test_conll_folder_of_files() -> None:
    write("data/f/a.conll", conll(["x O"], ["y B-DRUG"]))
    write("data/f/b.conll", "\n" + conll(["z O", "w I-DRUG"]))
    write("data/f/README.md", "notes\n")
    message = error("data/f")
    assert message.startswith("data/f/b.conll line 3: token 2 'I-DRUG' follows 'O' (an I- tag must continue an entity)")


# --------------------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    ("tags", "scheme", "bio"),
    [
        (["I-DRUG", "I-DRUG", "O", "I-DOSE", "I-DRUG", "I-DRUG"], "IO",
         ["B-DRUG", "I-DRUG", "O", "B-DOSE", "B-DRUG", "I-DRUG"]),
        (["B-DRUG", "I-DRUG", "B-DRUG", "O", "B-DOSE"], "BIO", ["B-DRUG", "I-DRUG", "B-DRUG", "O", "B-DOSE"]),
        (["B-DRUG", "I-DRUG", "E-DRUG", "S-DRUG", "O", "S-DOSE", "B-DOSE", "E-DOSE"], "BIOES",
         ["B-DRUG", "I-DRUG", "I-DRUG", "B-DRUG", "O", "B-DOSE", "B-DOSE", "I-DOSE"]),
        (["U-DRUG", "B-DOSE", "L-DOSE", "O"], "BILOU", ["B-DRUG", "B-DOSE", "I-DOSE", "O"]),
        (["O", "O"], "IOB2", ["O", "O"]),
    ],
)
def test_to_bio_exact(tags: list[str], scheme: str, bio: list[str]) -> None:
    assert to_bio(tags, scheme) == (bio, [])
    # And back: BIO -> scheme -> BIO is the identity, and -> scheme gives the original tags.
    assert bio_to_scheme(bio, scheme) == tags
    assert to_bio(bio_to_scheme(bio, scheme), scheme)[0] == bio


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["O", "I-X", "I-Y"], "IO"),
        (["B-X", "I-X", "O"], "BIO"),
        (["O", "O"], "BIO"),
        (["B-X", "E-X", "I-Y"], "BIOES"),
        (["S-X", "O"], "BIOES"),
        (["U-X", "B-Y", "L-Y"], "BILOU"),
        (["B-X", "weird", "Z-X"], "BIO"),  # tags of no scheme are left to validation
    ],
)
def test_detect_scheme(tags: list[str], expected: str) -> None:
    assert detect_scheme(tags) == expected


@pytest.mark.parametrize(
    ("tags", "scheme", "reason"),
    [
        (["O", "B-DRUG", "O", "I-DOSE"], "BIO", "token 4 'I-DOSE' follows 'O' (an I- tag must continue an entity)"),
        (["I-DRUG", "O"], "BIO", "token 1 'I-DRUG' starts the sentence (an I- tag must continue an entity)"),
        (["B-DRUG", "I-DOSE"], "BIO",
         "token 2 'I-DOSE' follows 'B-DRUG' (an I- tag must continue an entity of its own type)"),
        (["O", "E-DRUG"], "BIOES", "token 2 'E-DRUG' follows 'O' (an E- tag must continue an entity)"),
        (["S-DRUG", "I-DRUG", "E-DRUG"], "BIOES",
         "token 2 'I-DRUG' follows 'S-DRUG', which ends its entity (an I- tag must continue an entity)"),
        (["B-DRUG", "O"], "BIOES", ("token 2 'O' follows 'B-DRUG', an entity that never ended (in BIOES an entity "
         "ends with E- or is one S- token)")),
        (["O", "B-DRUG", "I-DRUG"], "BIOES", ("the sentence ends inside an entity: token 3 'I-DRUG' (in BIOES an "
         "entity ends with E- or is one S- token)")),
        (["B-DRUG", "U-DOSE"], "BILOU", ("token 2 'U-DOSE' follows 'B-DRUG', an entity that never ended (in BILOU an "
         "entity ends with L- or is one U- token)")),
    ],
)
def test_invalid_sequences(tags: list[str], scheme: str, reason: str) -> None:
    with pytest.raises(InvalidTags) as info:
        to_bio(tags, scheme)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("tags", "scheme", "reason"),
    [
        (["O", "X-DRUG"], "BIO", "token 2 'X-DRUG' is not a BIO tag (use O, B-<type> or I-<type>)"),
        (["B-DRUG", "E-DRUG"], "BIO", "token 2 'E-DRUG' is not a BIO tag (use O, B-<type> or I-<type>)"),
        (["B-DRUG"], "IO", "token 1 'B-DRUG' is not an IO tag (use O or I-<type>)"),
        (["DRUG"], "BIOES", "token 1 'DRUG' is not a BIOES tag (use O, B-, I-, E- or S-<type>)"),
        (["B-"], "BIO", "token 1 'B-' is not a BIO tag (use O, B-<type> or I-<type>)"),
        (["b-drug"], "BIO", "token 1 'b-drug' is not a BIO tag (use O, B-<type> or I-<type>)"),
    ],
)
def test_tags_of_no_scheme_are_bad_rows(tags: list[str], scheme: str, reason: str) -> None:
    with pytest.raises(TagRowError) as info:
        to_bio(tags, scheme, repair=True)
    assert not isinstance(info.value, InvalidTags)
    assert info.value.reason == reason


def test_repair_turns_orphan_continuations_into_starts() -> None:
    bio, repairs = to_bio(["I-DRUG", "I-DRUG", "O", "I-DOSE", "B-DRUG", "I-DOSE", "I-DOSE"], "BIO", repair=True)
    assert bio == ["B-DRUG", "I-DRUG", "O", "B-DOSE", "B-DRUG", "B-DOSE", "I-DOSE"]
    assert [(r.token, r.reason.split(" (")[0]) for r in repairs] == [
        (0, "token 1 'I-DRUG' starts the sentence"),
        (3, "token 4 'I-DOSE' follows 'O'"),
        (5, "token 6 'I-DOSE' follows 'B-DRUG'"),
    ]
    # BIOES: an unended entity just ends (BIO needs no end tag); an E- that starts one is a one-token entity.
    bio, repairs = to_bio(["B-DRUG", "O", "E-DOSE", "B-DOSE"], "BIOES", repair=True)
    assert bio == ["B-DRUG", "O", "B-DOSE", "B-DOSE"] and len(repairs) == 3


# --------------------------------------------------------------------------- errors name the file and line


@pytest.mark.parametrize(
    ("sentence", "line", "reason"),
    [
        (["Started O", "metformin B-DRUG", "500 O", "mg I-DOSE"], 8,
         "token 4 'I-DOSE' follows 'O' (an I- tag must continue an entity)"),
        (["metformin B-DRUG", "500 I-DOSE"], 6,
         "token 2 'I-DOSE' follows 'B-DRUG' (an I- tag must continue an entity of its own type)"),
        (["mg I-DOSE", "daily O"], 5, "token 1 'I-DOSE' starts the sentence (an I- tag must continue an entity)"),
    ],
)
def test_invalid_conll_tags_name_the_tokens_line(sentence: list[str], line: int, reason: str) -> None:
    write("data/x.conll", "-DOCSTART- O\n\n" + conll(["aspirin B-DRUG"], sentence))  # a B- tag: the file is BIO
    assert error("data/x.conll") == f"data/x.conll line {line}: {reason} — {TAGS_FIX} (an I- tag that starts an " \
        "entity becomes B-; this also reads IOB1 files such as the original CoNLL-2003)"


def test_bioes_unended_entity_names_line_of_the_next_token() -> None:
    write("data/x.iob", conll(["a S-DRUG"], ["b B-DRUG", "c E-DRUG", "d B-DOSE", "e O"]))
    assert error("data/x.iob") == (
        "data/x.iob line 6: token 4 'O' follows 'B-DOSE', an entity that never ended (in BIOES an entity ends with "
        f"E- or is one S- token) — {TAGS_FIX} (an I- tag that starts an entity becomes B-; this also reads IOB1 "
        "files such as the original CoNLL-2003)"
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
        ({"tokens": ["a", ""], "tags": ["O", "O"]}, "token 2 is empty"),
        ({"tokens": ["a", " "], "tags": ["O", "O"]}, "token 2 is only whitespace"),
        ({"tokens": [], "tags": []}, "'tokens' is an empty list"),
        ({"tokens": ["a"], "tags": None}, "'tags' is missing"),
        ({"tokens": ["a", "b"], "tags": ["O", "Q-DRUG"]},
         "token 2 'Q-DRUG' is not a BIO tag (use O, B-<type> or I-<type>)"),
    ],
)
def test_malformed_token_rows(row: dict[str, Any], reason: str) -> None:
    write_rows("data/x.jsonl", [{"tokens": ["ok"], "tags": ["O"]}, None, row])
    assert error("data/x.jsonl", tag_scheme="BIO") == f"data/x.jsonl line 3: {reason} — {BAD_ROW_FIX}"


TEXT = "Gave aspirin 81 mg daily."  # words: Gave aspirin 81 mg daily .


@pytest.mark.parametrize(
    ("entities", "reason"),
    [
        ([{"start": 5, "end": 12, "label": "DRUG"}, {"start": 10, "end": 15, "label": "DOSE"}],
         "entity 2 [10, 15) 'DOSE' overlaps entity 1 [5, 12) 'DRUG'"),
        ([{"start": 13, "end": 18, "label": "DOSE"}, {"start": 17, "end": 18, "label": "UNIT"}],
         "entity 2 [17, 18) 'UNIT' overlaps entity 1 [13, 18) 'DOSE'"),
        ([{"start": 5, "end": 10, "label": "DRUG"}, {"start": 10, "end": 12, "label": "DRUG"}],
         "entity 2 [10, 12) 'DRUG' shares the word 'aspirin' with entity 1 [5, 10) 'DRUG'"),
        ([{"start": 19, "end": 30, "label": "DOSE"}], "entity 1 [19, 30) 'DOSE' is outside the text (25 characters)"),
        ([{"start": -1, "end": 4, "label": "DOSE"}], "entity 1 [-1, 4) 'DOSE' is outside the text (25 characters)"),
        ([{"start": 12, "end": 12, "label": "DOSE"}], ("entity 1 [12, 12) 'DOSE' is empty or reversed (start must be "
         "below end)")),
        ([{"start": 12, "end": 13, "label": "DOSE"}], "entity 1 [12, 13) 'DOSE' covers no word (only spaces)"),
    ],
)
def test_invalid_spans(entities: list[dict[str, Any]], reason: str) -> None:
    write_rows("data/x.jsonl", [None, {"text": TEXT, "entities": entities}])
    assert error("data/x.jsonl").startswith(f"data/x.jsonl line 2: {reason} — {SPANS_FIX}")


@pytest.mark.parametrize(
    ("entities", "reason"),
    [
        ([{"start": "5", "end": 12, "label": "DRUG"}], "entity 1 'start' is a str, not a character offset"),
        ([{"start": 5, "end": 12.5, "label": "DRUG"}], "entity 1 'end' is a number, not a character offset"),
        ([{"start": 5, "end": 12, "label": "NEW DRUG"}],
         "entity 1 'label' is 'NEW DRUG' (a label is text without spaces)"),
        ([{"start": 5, "end": 12}], "entity 1 'label' is missing (a label is text without spaces)"),
        (None, "'entities' is missing (write [] for a text without entities)"),
    ],
)
def test_malformed_span_rows(entities: Any, reason: str) -> None:
    write_rows("data/x.jsonl", [{"text": TEXT, "entities": []}, {"text": TEXT, "entities": entities}])
    assert error("data/x.jsonl") == f"data/x.jsonl line 2: {reason} — {BAD_ROW_FIX}"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"tokens": [3, 4], "tags": ["O", "O"]}, "token 1 is a number, not text"),
        ({"tokens": "a b", "tags": ["O", "O"]}, "'tokens' is a str, not a list"),
        ({"tokens": ["a"], "tags": [1]}, "tag 1 is a number, not text"),
    ],
)
def test_wrong_types_in_token_rows(row: dict[str, Any], reason: str) -> None:
    # Alone in its file: Arrow cannot load one column holding both these types and the right ones.
    write_rows("data/x.jsonl", [row])
    assert error("data/x.jsonl") == f"data/x.jsonl line 1: {reason} — {BAD_ROW_FIX}"


def test_layout_cannot_be_detected() -> None:
    write_rows("data/x.jsonl", [{"words": ["a"], "labels": ["O"]}])
    assert error("data/x.jsonl").startswith(
        "data/x.jsonl: cannot tell how the token-classification rows are laid out (columns: words, labels) — "
    )
    rows, info = normalize("data/x.jsonl", tokens_column="words", tags_column="labels")
    assert rows[0]["tags"] == ["O"] and info["layout"] == "tokens"


# --------------------------------------------------------------------------- repair and skip


def test_repair_mode_fixes_counts_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    write("data/x.conll", conll(
        ["Started O", "metformin I-DRUG", "500 B-DOSE", "mg I-DOSE", "for O", "type I-CONDITION", "2 I-CONDITION"],
        ["HTN B-CONDITION"],
        ["aspirin B-DRUG", "81 I-DOSE", "mg I-DOSE"],
    ))
    with caplog.at_level(logging.WARNING):
        rows, info = normalize("data/x.conll", invalid_tags="repair")
    assert [r["tags"] for r in rows] == [
        ["O", "B-DRUG", "B-DOSE", "I-DOSE", "O", "B-CONDITION", "I-CONDITION"],
        ["B-CONDITION"],
        ["B-DRUG", "B-DOSE", "I-DOSE"],
    ]
    assert info == {
        "layout": "conll", "scheme": "BIO", "rows": 3, "skipped": 0, "repaired": 3, "widened": 0,
        "examples": [
            {"where": "data/x.conll line 2", "reason": "token 2 'I-DRUG' follows 'O' (an I- tag must continue an "
             "entity)", "action": "repaired"},
            {"where": "data/x.conll line 6", "reason": "token 6 'I-CONDITION' follows 'O' (an I- tag must continue "
             "an entity)", "action": "repaired"},
            {"where": "data/x.conll line 12", "reason": "token 2 'I-DOSE' follows 'B-DRUG' (an I- tag must continue "
             "an entity of its own type)", "action": "repaired"},
        ],
        "entity_counts": {"CONDITION": 2, "DOSE": 2, "DRUG": 2},
    }
    json.dumps(info)
    assert "made 3 repair(s)" in caplog.text and "data/x.conll line 2" in caplog.text


def test_repair_drops_bad_spans_and_keeps_the_first_overlapping() -> None:
    write_rows("data/x.jsonl", [{"text": TEXT, "entities": [
        {"start": 13, "end": 24, "label": "DOSE"},
        {"start": 5, "end": 12, "label": "DRUG"},
        {"start": 16, "end": 18, "label": "UNIT"},  # overlaps the DOSE listed first
        {"start": 20, "end": 40, "label": "DOSE"},  # outside the text
    ]}])
    rows, info = normalize("data/x.jsonl", invalid_tags="repair")
    assert rows[0]["tags"] == ["O", "B-DRUG", "B-DOSE", "I-DOSE", "I-DOSE", "O"]
    assert (info["repaired"], info["entity_counts"]) == (2, {"DOSE": 1, "DRUG": 1})
    assert [e["reason"] for e in info["examples"]] == [
        "entity 3 [16, 18) 'UNIT' overlaps entity 1 [13, 24) 'DOSE'",
        "entity 4 [20, 40) 'DOSE' is outside the text (25 characters)",
    ]


def test_skip_drops_malformed_rows_but_not_invalid_tags() -> None:
    good = {"tokens": ["aspirin"], "tags": ["B-DRUG"]}
    write_rows("data/x.jsonl", [good, {"tokens": ["a", "b"], "tags": ["O"]}, good,
                                {"tokens": ["a", ""], "tags": ["O", "O"]}, good])
    cfg = config(bad_rows="skip")
    table = load_table("data/x.jsonl", cfg, "train")
    dataset, info = normalize_token_rows(table, cfg)
    assert dataset["row"] == [0, 2, 4]
    assert (info["rows"], info["skipped"], info["repaired"]) == (3, 2, 0)
    assert info["examples"] == [
        {"where": "data/x.jsonl line 2", "reason": "2 tokens but 1 tags", "action": "skipped"},
        {"where": "data/x.jsonl line 4", "reason": "token 2 is empty", "action": "skipped"},
    ]
    # Invalid tag sequences are data.invalid_tags' business: skip does not hide them.
    write_rows("data/y.jsonl", [good, {"tokens": ["a", "b"], "tags": ["O", "I-DRUG"]}])
    assert error("data/y.jsonl", bad_rows="skip").startswith("data/y.jsonl line 2: token 2 'I-DRUG' follows 'O'")


def test_skip_every_row_is_an_error() -> None:
    write_rows("data/x.jsonl", [{"tokens": ["a"], "tags": ["O", "O"]}, {"tokens": ["b"], "tags": []}])
    assert error("data/x.jsonl", bad_rows="skip").startswith(
        "data/x.jsonl: no usable rows, all 2 are malformed (first: data/x.jsonl line 1: 1 tokens but 2 tags)"
    )


# --------------------------------------------------------------------------- layouts convert exactly


def test_tokens_layout_converts_io_and_bioes_files_to_bio_with_joined_text() -> None:
    write_rows("data/io.jsonl", [{"tokens": ["Gave", "Tylenol", "PM", "and", "aspirin"],
                                  "tags": ["O", "I-DRUG", "I-DRUG", "O", "I-DRUG"]}])
    rows, info = normalize("data/io.jsonl")
    assert rows == [{"tokens": ["Gave", "Tylenol", "PM", "and", "aspirin"],
                     "tags": ["O", "B-DRUG", "I-DRUG", "O", "B-DRUG"],
                     "offsets": [[0, 4], [5, 12], [13, 15], [16, 19], [20, 27]],
                     "text": "Gave Tylenol PM and aspirin", "row": 0}]
    assert (info["layout"], info["scheme"], info["entity_counts"]) == ("tokens", "IO", {"DRUG": 2})
    write_rows("data/bioes.jsonl", [{"tokens": ["81", "mg", "daily", "aspirin"],
                                     "tags": ["B-DOSE", "I-DOSE", "E-DOSE", "S-DRUG"]}])
    rows, info = normalize("data/bioes.jsonl")
    assert rows[0]["tags"] == ["B-DOSE", "I-DOSE", "I-DOSE", "B-DRUG"] and info["scheme"] == "BIOES"
    for row in rows:
        assert [row["text"][s:e] for s, e in row["offsets"]] == row["tokens"]


def test_configured_scheme_overrides_detection() -> None:
    # With only I- tags the data reads as IO; declared BIO, the I- tags that start entities are invalid.
    write_rows("data/x.jsonl", [{"tokens": ["a", "b"], "tags": ["I-DRUG", "I-DRUG"]}])
    assert normalize("data/x.jsonl")[0][0]["tags"] == ["B-DRUG", "I-DRUG"]
    assert error("data/x.jsonl", tag_scheme="BIO").startswith("data/x.jsonl line 1: token 1 'I-DRUG' starts the")


def test_span_layout_words_offsets_and_bio_exactly() -> None:
    text = "Pt's BP 150/90; started amoxicillin-clavulanate 875 mg (PO) bid for community-acquired pneumonia."
    entities = [
        {"start": 24, "end": 47, "label": "DRUG"},
        {"start": 48, "end": 63, "label": "DOSE"},
        {"start": 68, "end": 96, "label": "CONDITION"},
    ]
    assert [text[e["start"]:e["end"]] for e in entities] == [
        "amoxicillin-clavulanate", "875 mg (PO) bid", "community-acquired pneumonia"]
    write_rows("data/x.jsonl", [{"id": 7, "text": text, "entities": entities}])
    rows, info = normalize("data/x.jsonl")
    row = rows[0]
    assert list(zip(row["tokens"], row["tags"], strict=True)) == [
        ("Pt", "O"), ("'", "O"), ("s", "O"), ("BP", "O"), ("150", "O"), ("/", "O"), ("90", "O"), (";", "O"),
        ("started", "O"), ("amoxicillin", "B-DRUG"), ("-", "I-DRUG"), ("clavulanate", "I-DRUG"),
        ("875", "B-DOSE"), ("mg", "I-DOSE"), ("(", "I-DOSE"), ("PO", "I-DOSE"), (")", "I-DOSE"), ("bid", "I-DOSE"),
        ("for", "O"), ("community", "B-CONDITION"), ("-", "I-CONDITION"), ("acquired", "I-CONDITION"),
        ("pneumonia", "I-CONDITION"), (".", "O"),
    ]
    assert row["offsets"][:4] == [[0, 2], [2, 3], [3, 4], [5, 7]]
    assert [text[s:e] for s, e in row["offsets"]] == row["tokens"] and row["text"] == text
    assert (info["layout"], info["scheme"], info["widened"]) == ("spans", None, 0)
    assert spans_from_bio(row["tags"], row["offsets"]) == entities


def test_span_edges_inside_a_word_take_the_whole_word() -> None:
    entities = [{"start": 7, "end": 12, "label": "DRUG"}]  # "etfor", inside the word "metformin500mg"
    write_rows("data/x.jsonl", [{"text": "Héllo metformin500mg ok", "entities": entities}])
    rows, info = normalize("data/x.jsonl")
    assert rows[0]["tokens"] == ["Héllo", "metformin500mg", "ok"]  # \w is Unicode-aware
    assert rows[0]["tags"] == ["O", "B-DRUG", "O"] and info["widened"] == 1


def test_spans_from_bio_round_trips_the_span_layout_and_is_lenient() -> None:
    text = "Lasix 40 mg IV, KCl 20 mEq; denies chest pain."
    entities = [{"start": 0, "end": 5, "label": "DRUG"}, {"start": 6, "end": 14, "label": "DOSE"},
                {"start": 16, "end": 19, "label": "DRUG"}, {"start": 20, "end": 26, "label": "DOSE"},
                {"start": 35, "end": 45, "label": "CONDITION"}]
    write_rows("data/x.jsonl", [{"text": text, "entities": entities}])
    row = normalize("data/x.jsonl")[0][0]
    assert spans_from_bio(row["tags"], row["offsets"]) == entities
    # Predictions need not be valid BIO: an I- that continues nothing starts an entity.
    offsets = [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert spans_from_bio(["I-DRUG", "I-DOSE", "I-DOSE", "O"], offsets) == [
        {"start": 0, "end": 1, "label": "DRUG"}, {"start": 2, "end": 5, "label": "DOSE"}]


def test_split_words() -> None:
    assert split_words("q6h PRN, 2.5mg") == [("q6h", 0, 3), ("PRN", 4, 7), (",", 7, 8), ("2", 9, 10),
                                             (".", 10, 11), ("5mg", 11, 14)]


def test_labels_from_tags_lists_o_then_b_and_i_of_each_type() -> None:
    write_rows("data/a.jsonl", [{"tokens": ["a", "b"], "tags": ["B-DRUG", "O"]}])
    write_rows("data/b.jsonl", [{"tokens": ["c", "d"], "tags": ["B-CONDITION", "I-CONDITION"]}])
    a, _ = normalize_token_rows(load("data/a.jsonl"), config())
    b, _ = normalize_token_rows(load("data/b.jsonl"), config())
    assert labels_from_tags([a, b]) == ["O", "B-CONDITION", "I-CONDITION", "B-DRUG", "I-DRUG"]
    assert labels_from_tags(a) == ["O", "B-DRUG", "I-DRUG"]
    assert labels_from_tags(b.filter(lambda r: False)) == ["O"]


# --------------------------------------------------------------------------- the clinical-ner corpus


def test_clinical_ner_corpus(workspace: Path) -> None:
    summary = CORPORA.get("clinical-ner")(workspace / "ner")
    assert summary["files"] == ["train.conll", "validation.conll", "test.jsonl"]
    assert summary["train"] + summary["validation"] + summary["test"] >= 360
    seen: set[str] = set()
    for split, name in zip(("train", "validation", "test"), summary["files"], strict=True):
        path = workspace / "ner" / name
        cfg = config(invalid_tags="error", bad_rows="error", tag_scheme="auto")
        table = load_table(path, cfg, split)
        dataset, info = normalize_token_rows(table, cfg)  # raises on any invalid tag or malformed row
        assert info["layout"] == ("spans" if name.endswith(".jsonl") else "conll")
        assert info["scheme"] in ("BIO", None)
        assert (info["rows"], info["skipped"], info["repaired"], info["widened"]) == (summary[split], 0, 0, 0)
        assert set(info["entity_counts"]) == {"DRUG", "DOSE", "CONDITION"}, split
        assert all(count >= 15 for count in info["entity_counts"].values()), (split, info["entity_counts"])
        texts = [" ".join(tokens) for tokens in dataset["tokens"]]  # one form for both layouts
        assert len(set(texts)) == len(texts), f"duplicate sentences in {split}"
        assert not seen & set(texts), f"{split} repeats sentences of another split"
        seen.update(texts)
        without = sum(all(tag == "O" for tag in tags) for tags in dataset["tags"])
        assert 0 < without < len(texts) // 4
    assert sum(summary["entities"].values()) > 900
    first = (workspace / "ner" / "train.conll").read_bytes()
    CORPORA.get("clinical-ner")(workspace / "again")
    assert (workspace / "again" / "train.conll").read_bytes() == first
