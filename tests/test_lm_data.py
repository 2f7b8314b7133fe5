"""Tests for the causal-lm data layer: record formats, normalization, the txt format, example corpora."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tunelab.config.schema import DataConfig
from tunelab.data import (
    FORMATS,
    RECORDS,
    Table,
    detect_records,
    load_table,
    normalize_records,
)
from tunelab.data.corpora import CORPORA, materialize
from tunelab.errors import DataError

BAD_ROW_FIX = "fix or remove the row, or set data.bad_rows: skip"


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (so messages show relative paths) with the tunelab cache inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def write(path: str, content: bytes | str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return p


def write_rows(path: str, rows: list[dict[str, Any] | None]) -> Path:
    """One JSON object per line; None writes a blank line (physical line numbers must count it)."""
    return write(path, "".join("\n" if r is None else json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def config(**values: Any) -> DataConfig:
    return DataConfig(train="unused", **values)


def load(path: str | Path, **values: Any) -> Table:
    return load_table(path, config(**values), "train")


def normalize(path: str | Path, **values: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = config(**values)
    dataset, info = normalize_records(load_table(path, cfg, "train"), cfg)
    return dataset.to_list(), info


def normalize_error(path: str | Path, **values: Any) -> str:
    with pytest.raises(DataError) as info:
        normalize(path, **values)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


# --------------------------------------------------------------------------- valid rows convert exactly


def test_registries() -> None:
    kinds = {name: fmt.kind for name, fmt in RECORDS.items()}
    assert kinds == {"alpaca": "chat", "chat-preference": "chat-preference", "messages": "chat",
                     "openai-preference": "chat-preference", "preference": "preference",
                     "prompt-completion": "prompt-completion", "sharegpt": "chat", "text": "text",
                     "unpaired-preference": "unpaired", "chat-unpaired-preference": "chat-unpaired",
                     "prompt-only": "prompt-only", "chat-prompt-only": "chat-prompt-only"}
    assert "txt" in FORMATS and FORMATS.get("txt").extensions == (".txt", ".md")


def test_messages_multi_turn_exact_and_extra_keys_dropped() -> None:
    conversation = [
        {"role": "system", "content": "Be  brief.\n"},
        {"role": "user", "content": "  Héllo 👋", "name": "ann"},
        {"role": "assistant", "content": "Hi!\n\nHow can I help?"},
        {"role": "user", "content": ""},  # an empty user turn is allowed; only assistant turns must say something
        {"role": "assistant", "content": "Anything else?"},
    ]
    write_rows("data/x.jsonl", [{"messages": conversation, "id": 7}])
    rows, info = normalize("data/x.jsonl")
    expected = [{k: m[k] for k in ("role", "content")} for m in conversation]
    assert rows == [{"messages": expected, "row": 0}]
    assert info == {"records": "messages", "kind": "chat", "rows": 1, "skipped": 0, "skipped_examples": []}


def test_sharegpt_maps_speakers() -> None:
    turns = [("system", "S"), ("human", "q1"), ("gpt", "a1"), ("user", "q2"), ("assistant", "a2 ")]
    write_rows("data/x.jsonl", [{"conversations": [{"from": f, "value": v, "weight": 1} for f, v in turns]}])
    rows, info = normalize("data/x.jsonl")
    assert rows == [{"messages": chat(("system", "S"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"),
                                      ("assistant", "a2 ")), "row": 0}]
    assert (info["records"], info["kind"]) == ("sharegpt", "chat")


def test_alpaca_input_and_system() -> None:
    write_rows("data/x.jsonl", [
        {"instruction": "Translate.", "input": "chat", "output": "cat", "system": "You translate."},
        {"instruction": "Say hi.", "input": "", "output": "hi", "system": None},
        {"instruction": "Count.", "input": None, "output": "1 2 3", "system": ""},
        {"instruction": "Spaces.", "input": "   ", "output": "ok", "system": "  "},
    ])
    rows, info = normalize("data/x.jsonl")
    assert [r["messages"] for r in rows] == [
        chat(("system", "You translate."), ("user", "Translate.\n\nchat"), ("assistant", "cat")),
        chat(("user", "Say hi."), ("assistant", "hi")),
        chat(("user", "Count."), ("assistant", "1 2 3")),
        chat(("user", "Spaces."), ("assistant", "ok")),
    ]
    assert [r["row"] for r in rows] == [0, 1, 2, 3]
    assert (info["records"], info["kind"]) == ("alpaca", "chat")


def test_alpaca_without_optional_columns() -> None:
    write_rows("data/x.jsonl", [{"instruction": "Do it.", "output": "Done."}])
    rows, _ = normalize("data/x.jsonl")
    assert rows == [{"messages": chat(("user", "Do it."), ("assistant", "Done.")), "row": 0}]


def test_prompt_completion_allows_empty_prompt() -> None:
    write_rows("data/x.jsonl", [{"prompt": "2+2=", "completion": " 4"}, {"prompt": "", "completion": "Once upon"}])
    rows, info = normalize("data/x.jsonl")
    assert rows == [{"prompt": "2+2=", "completion": " 4", "row": 0},
                    {"prompt": "", "completion": "Once upon", "row": 1}]
    assert (info["records"], info["kind"]) == ("prompt-completion", "prompt-completion")


def test_text_uses_text_column_and_keeps_whitespace() -> None:
    write_rows("data/x.jsonl", [{"body": "  An article.\n\nSecond paragraph.\n", "label": 1}])
    rows, info = normalize("data/x.jsonl", text_column="body")
    assert rows == [{"text": "  An article.\n\nSecond paragraph.\n", "row": 0}]
    assert (info["records"], info["kind"]) == ("text", "text")


# --------------------------------------------------------------------------- malformed rows name file and line

GOOD_MESSAGES = {"messages": chat(("user", "q"), ("assistant", "a"))}


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        ([{"messages": chat(("user", "q"), ("assistant", "a"), ("bot", "x"))}], 3,
         "message 3 has unknown role 'bot' (use system, user or assistant)"),
        ([{"messages": chat(("user", "q"), ("human", "x"))}], 3,
         "message 2 has unknown role 'human' (use system, user or assistant)"),
        ([{"messages": chat(("user", "q"), ("system", "s"), ("assistant", "a"))}], 3,
         "message 2 is a system message; only the first message may be one"),
        ([{"messages": chat(("system", "s"), ("user", "q"))}], 3, "no assistant message (nothing to learn from)"),
        ([{"messages": chat(("user", "q"), ("assistant", " \n\t"))}], 3,
         "message 2 is an assistant message with empty content"),
        ([{"messages": []}], 3, "'messages' is an empty list"),
        ([{"messages": None}], 3, "'messages' is missing"),
        ([{"other": 1}], 3, "'messages' is missing"),  # the key is absent: Arrow reads null
        ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}], 3, "message 2 has no 'content'"),
        ([{"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}], 3,
         "message 1 has no role (use system, user or assistant)"),
    ],
)
def test_messages_malformed_rows(rows: list[dict[str, Any]], line: int, reason: str) -> None:
    write_rows("data/x.jsonl", [GOOD_MESSAGES, None, *rows, GOOD_MESSAGES])
    assert normalize_error("data/x.jsonl") == f"data/x.jsonl line {line}: {reason} — {BAD_ROW_FIX}"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": 4}]}',
         "message 1 'content' is a number, not text"),
        ('{"messages": "hello"}', "'messages' is a str, not a list of messages"),
        ('{"messages": ["hello"]}', "message 1 is a str, not an object with role and content"),
    ],
)
def test_messages_wrong_types_that_still_load(content: str, reason: str) -> None:
    write("data/x.jsonl", "\n\n" + content + "\n")
    assert normalize_error("data/x.jsonl", records="messages") == f"data/x.jsonl line 3: {reason} — {BAD_ROW_FIX}"


@pytest.mark.parametrize(
    ("turn", "reason"),
    [
        ({"from": "bot", "value": "a"},
         "message 2 has unknown 'from' 'bot' (use system, human, user, gpt or assistant)"),
        ({"from": "gpt"}, "message 2 has no 'value'"),
        ({"from": "gpt", "value": ""}, "message 2 is an assistant message with empty content"),
    ],
)
def test_sharegpt_malformed_rows(turn: dict[str, str], reason: str) -> None:
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    bad = {"conversations": [{"from": "human", "value": "q"}, turn]}
    write_rows("data/x.jsonl", [good, good, None, None, bad])
    assert normalize_error("data/x.jsonl") == f"data/x.jsonl line 5: {reason} — {BAD_ROW_FIX}"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"instruction": "", "output": "o"}, "'instruction' is empty"),
        ({"instruction": "i", "output": "  "}, "'output' is empty"),
        ({"instruction": None, "output": "o"}, "'instruction' is missing"),
        ({"instruction": "i"}, "'output' is missing"),
    ],
)
def test_alpaca_malformed_rows(bad: dict[str, Any], reason: str) -> None:
    write_rows("data/x.jsonl", [{"instruction": "i", "output": "o"}, bad])
    assert normalize_error("data/x.jsonl") == f"data/x.jsonl line 2: {reason} — {BAD_ROW_FIX}"


def test_alpaca_non_text_input() -> None:
    write_rows("data/x.jsonl", [None, {"instruction": "i", "input": 5, "output": "o"}])
    assert normalize_error("data/x.jsonl") == f"data/x.jsonl line 2: 'input' is a number, not text — {BAD_ROW_FIX}"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"prompt": "p", "completion": ""}, "'completion' is empty"),
        ({"prompt": "p", "completion": "\n"}, "'completion' is empty"),
        ({"prompt": None, "completion": "c"}, "'prompt' is missing"),
    ],
)
def test_prompt_completion_malformed_rows(bad: dict[str, Any], reason: str) -> None:
    write_rows("data/x.jsonl", [{"prompt": "p", "completion": "c"}, None, bad])
    assert normalize_error("data/x.jsonl") == f"data/x.jsonl line 3: {reason} — {BAD_ROW_FIX}"


@pytest.mark.parametrize(("bad", "reason"), [({"text": " \n "}, "empty text"), ({"text": None}, "'text' is missing")])
def test_text_malformed_rows(bad: dict[str, Any], reason: str) -> None:
    write_rows("data/x.jsonl", [{"text": "fine"}, bad])
    assert normalize_error("data/x.jsonl") == f"data/x.jsonl line 2: {reason} — {BAD_ROW_FIX}"


def test_text_column_of_numbers() -> None:
    write_rows("data/x.jsonl", [{"text": 3}])
    assert normalize_error("data/x.jsonl", records="text") == (
        f"data/x.jsonl line 1: 'text' is a number, not text — {BAD_ROW_FIX}"
    )


def test_malformed_row_in_second_file_of_folder() -> None:
    write_rows("data/f/a.jsonl", [{"prompt": "p", "completion": "c"}] * 3)
    write_rows("data/f/b.jsonl", [None, {"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": ""}])
    assert normalize_error("data/f").startswith("data/f/b.jsonl line 3: 'completion' is empty — ")


# --------------------------------------------------------------------------- bad_rows: skip


def test_skip_drops_counts_and_reports_bad_rows(caplog: pytest.LogCaptureFixture) -> None:
    good = [{"messages": chat(("user", f"q{i}"), ("assistant", f"a{i}"))} for i in range(5)]
    write_rows("data/x.jsonl", [
        good[0],
        {"messages": chat(("user", "q"), ("robot", "a"))},  # line 2
        good[1],
        None,
        {"messages": chat(("user", "q"))},  # line 5
        good[2],
        good[3],
        {"messages": []},  # line 8
        good[4],
    ])
    cfg = config(bad_rows="skip")
    table = load_table("data/x.jsonl", cfg, "train")
    with caplog.at_level(logging.WARNING):
        dataset, info = normalize_records(table, cfg)
    assert dataset["row"] == [0, 2, 4, 5, 7]
    assert [m[0]["content"] for m in dataset["messages"]] == ["q0", "q1", "q2", "q3", "q4"]
    assert [table.where(r) for r in dataset["row"]] == [f"data/x.jsonl line {n}" for n in (1, 3, 6, 7, 9)]
    assert info == {
        "records": "messages", "kind": "chat", "rows": 5, "skipped": 3,
        "skipped_examples": [
            {"where": "data/x.jsonl line 2",
             "reason": "message 2 has unknown role 'robot' (use system, user or assistant)"},
            {"where": "data/x.jsonl line 5", "reason": "no assistant message (nothing to learn from)"},
            {"where": "data/x.jsonl line 8", "reason": "'messages' is an empty list"},
        ],
    }
    json.dumps(info)  # JSON-able for run records
    assert "skipped 3 malformed row(s)" in caplog.text and "data/x.jsonl line 2" in caplog.text


def test_skip_keeps_at_most_five_examples_across_batches() -> None:
    rows = [{"text": "ok" if i % 3 else ""} for i in range(2500)]  # 834 blank rows over three map batches
    write_rows("data/x.jsonl", rows)
    dataset, info = normalize_records(load("data/x.jsonl"), config(bad_rows="skip"))
    assert (info["rows"], info["skipped"]) == (1666, 834)
    assert [e["where"] for e in info["skipped_examples"]] == [f"data/x.jsonl line {n}" for n in (1, 4, 7, 10, 13)]
    assert dataset["row"][:3] == [1, 2, 4] and dataset["row"][-1] == 2498


def test_skip_every_row_is_an_error() -> None:
    write_rows("data/x.jsonl", [{"prompt": "p", "completion": ""}, {"prompt": "p", "completion": " "}])
    message = normalize_error("data/x.jsonl", bad_rows="skip")
    assert message.startswith("data/x.jsonl: no usable rows, all 2 are malformed (first: data/x.jsonl line 1: ")


def test_row_column_indexes_table_after_max_rows() -> None:
    write_rows("data/x.jsonl", [{"text": f"t{i}"} for i in range(10)])
    table = load("data/x.jsonl", max_rows=4)
    dataset, _ = normalize_records(table, config(max_rows=4))
    assert dataset.to_dict() == {"text": ["t0", "t1", "t2", "t3"], "row": [0, 1, 2, 3]}


# --------------------------------------------------------------------------- detection and configured formats


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages", "text"], "messages"),
        (["id", "conversations"], "sharegpt"),
        (["instruction", "input", "output"], "alpaca"),
        (["prompt", "completion", "text"], "prompt-completion"),
        (["text", "label"], "text"),
        (["prompt", "output", "text"], "text"),  # half of two layouts is neither
        (["prompt", "answer"], "prompt-only"),  # prompts for GRPO, with a column for a reward
    ],
)
def test_detect_records(columns: list[str], expected: str) -> None:
    assert detect_records(columns, "text", "data/x.jsonl") == expected


def test_detect_records_custom_text_column_and_unknown_columns() -> None:
    assert detect_records(["body"], "body", "data/x.jsonl") == "text"
    with pytest.raises(DataError) as info:
        detect_records(["question", "answer"], "text", "data/x.jsonl")
    assert str(info.value) == (
        "data/x.jsonl: cannot tell how the rows are laid out (columns: question, answer) — name the columns like "
        "one of: messages | conversations | instruction/output | prompt/completion | prompt/chosen/rejected | "
        "prompt/completion/label | prompt (GRPO) | text, or set data.records"
    )


@pytest.mark.parametrize(
    ("row", "records"),
    [
        (GOOD_MESSAGES, "messages"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "sharegpt"),
        ({"instruction": "i", "output": "o"}, "alpaca"),
        ({"prompt": "p", "completion": "c"}, "prompt-completion"),
        ({"text": "t"}, "text"),
    ],
)
def test_auto_detection_in_normalize(row: dict[str, Any], records: str) -> None:
    write_rows("data/x.jsonl", [row])
    assert normalize("data/x.jsonl")[1]["records"] == records


def test_auto_detection_failure_names_file() -> None:
    write_rows("data/x.jsonl", [{"q": "a", "a": "b"}])
    message = normalize_error("data/x.jsonl")
    assert message.startswith("data/x.jsonl: cannot tell how the rows are laid out (columns: q, a)")


def test_configured_records_with_missing_column() -> None:
    write_rows("data/x.jsonl", [{"instruction": "i", "response": "o"}])
    message = normalize_error("data/x.jsonl", records="alpaca")
    assert message.startswith(
        "data/x.jsonl: data.records is alpaca but column 'output' is missing (columns: instruction, response) — "
    )
    write_rows("data/y.jsonl", [{"body": "t"}])
    message = normalize_error("data/y.jsonl", records="text")
    assert message.startswith("data/y.jsonl: data.records is text but column 'text' is missing (columns: body)")
    assert "data.text_column" in message


def test_configured_records_overrides_detection() -> None:
    write_rows("data/x.jsonl", [{"messages": "ignored", "text": "raw"}])
    rows, info = normalize("data/x.jsonl", records="text")
    assert rows == [{"text": "raw", "row": 0}] and info["kind"] == "text"


# --------------------------------------------------------------------------- txt format


def test_txt_folder_loads_one_row_per_file_exactly() -> None:
    contents = {
        "a.txt": "  First document.\n\nWith a blank line and trailing spaces.   \n\n",
        "b.md": "# Title\n\n* item — ünïcödé ✓\n\tindented",
        "c.txt": "single line, no newline",
    }
    for name, text in contents.items():
        write(f"data/docs/{name}", text)
    write("data/docs/.hidden.txt", "not read")
    table = load("data/docs")
    assert table.dataset.to_dict() == {"text": list(contents.values())}
    assert table.where(1) == "data/docs/b.md (whole file)"
    rows, info = normalize("data/docs")
    assert [r["text"] for r in rows] == list(contents.values())
    assert (info["records"], info["kind"], info["rows"]) == ("text", "text", 3)


def test_txt_normalizes_line_endings_and_drops_bom() -> None:
    # The datasets text builder reads in Python text mode (universal newlines); a BOM is not text.
    write("data/x.txt", b"\xef\xbb\xbfline one\r\nline two\rline three\n")
    assert load("data/x.txt").dataset.to_dict() == {"text": ["line one\nline two\nline three\n"]}


def test_txt_explicit_format_and_empty_file() -> None:
    write("data/notes.log", "log text\n")
    assert load("data/notes.log", format="txt").dataset.to_dict() == {"text": ["log text\n"]}
    write("data/blank.md", " \n\t\n")
    with pytest.raises(DataError) as info:
        load("data/blank.md")
    assert str(info.value).startswith("data/blank.md: the file is empty — ")


def test_unknown_extension_fix_mentions_txt() -> None:
    write("data/x.doc", "hello\n")
    with pytest.raises(DataError) as info:
        load("data/x.doc")
    assert ".txt or .md" in str(info.value)


# --------------------------------------------------------------------------- example corpora


def test_chatterbot_en_corpus(workspace: Path) -> None:
    summary = CORPORA.get("chatterbot-en")(workspace / "chat")
    # 2,306 consecutive pairs over the 2,025 list conversations (trivia.yml holds one more "conversation"
    # that a YAML slip made a single string); 1,130 are exact repeats, mostly in tech_support.yml.
    assert {k: summary[k] for k in ("pairs", "empty_dropped", "duplicates_dropped", "malformed_conversations")} == {
        "pairs": 2306, "empty_dropped": 0, "duplicates_dropped": 1130, "malformed_conversations": 1,
    }
    assert (summary["train"], summary["validation"], summary["test"]) == (940, 118, 118)
    assert len(summary["categories"]) == 21 and "tech_support" in summary["categories"]
    seen: set[str] = set()
    for split in ("train", "validation", "test"):
        path = workspace / "chat" / f"{split}.jsonl"
        raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(raw) == summary[split]
        cfg = config(bad_rows="error")
        _, info = normalize_records(load_table(path, cfg, split), cfg)  # raises on any malformed row
        assert (info["records"], info["rows"]) == ("messages", summary[split])
        for row in raw:
            user, assistant = row["messages"]
            assert (user["role"], assistant["role"]) == ("user", "assistant")
            assert user["content"] == user["content"].strip() != ""
            assert row["category"] in summary["categories"]
            key = json.dumps(row["messages"])
            assert key not in seen, "duplicate pair (within or across splits)"
            seen.add(key)
    first = (workspace / "chat" / "train.jsonl").read_bytes()
    CORPORA.get("chatterbot-en")(workspace / "again")
    assert (workspace / "again" / "train.jsonl").read_bytes() == first, "the split must be deterministic"


def test_preference_corpora_are_valid_hard_negatives(workspace: Path) -> None:
    """bbc-headline-pairs and -feedback reject a same-topic story's headline; chatterbot-pairs an answer
    from another category. Every row normalizes; the files are deterministic."""
    pairs = CORPORA.get("bbc-headline-pairs")(workspace / "pairs")
    feedback = CORPORA.get("bbc-headline-feedback")(workspace / "feedback")
    news = CORPORA.get("bbc-headlines")(workspace / "headlines")
    titles = {}
    for split in ("train", "validation", "test"):
        for row in map(json.loads, (workspace / "headlines" / f"{split}.jsonl").read_text().splitlines()):
            titles.setdefault(row["messages"][1]["content"], set()).add(row["label"])
        rows = [json.loads(x) for x in (workspace / "pairs" / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == pairs[split] and pairs[split] >= news[split] - 2
        assert all(r["chosen"] != r["rejected"] and r["label"] in titles[r["rejected"]] for r in rows)
        for corpus, kind in (("pairs", "chat-preference"), ("feedback", "chat-unpaired-preference")):
            cfg = config(bad_rows="error")
            _, info = normalize_records(load_table(workspace / corpus / f"{split}.jsonl", cfg, split), cfg)
            assert info["records"] == kind
        assert abs(2 * feedback["desirable"][split] - feedback[split]) <= 2  # balanced labels
    chat = materialize("chatterbot-pairs", workspace / "chat")
    readme = (workspace / "chat" / "README.md").read_text()
    assert "another category" in readme and "- train: 940" in readme  # how it was made, what it holds
    rows = [json.loads(x) for x in (workspace / "chat" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == chat["train"] == 940 and all(r["chosen"] != r["rejected"] for r in rows)
    first = (workspace / "feedback" / "train.jsonl").read_bytes()
    CORPORA.get("bbc-headline-feedback")(workspace / "again")
    assert (workspace / "again" / "train.jsonl").read_bytes() == first


def test_bbc_news_text_is_bbc_news_as_raw_text(workspace: Path) -> None:
    news = CORPORA.get("bbc-news")(workspace / "news")
    text = CORPORA.get("bbc-news-text")(workspace / "text")
    sizes = ("train", "validation", "test")
    assert {k: text[k] for k in sizes} == {k: news[k] for k in sizes}
    for split in ("train", "validation", "test"):
        articles = [json.loads(line) for line in (workspace / "news" / f"{split}.jsonl").read_text().splitlines()]
        raw = [json.loads(line) for line in (workspace / "text" / f"{split}.jsonl").read_text().splitlines()]
        assert raw == [{"text": a["text"]} for a in articles]
    _, info = normalize(workspace / "text" / "validation.jsonl")
    assert (info["records"], info["rows"]) == ("text", news["validation"])
