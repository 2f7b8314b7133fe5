"""Data check: planted problems are found at their rows, pass/fail is right, reports are safe to share."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from conftest import write_jsonl

from tunelab.config.schema import Config, GovernanceConfig, ModelConfig
from tunelab.datacheck import duplicates as dup
from tunelab.datacheck.suite import SplitData, check_splits, mojibake, row_text
from tunelab.errors import DataError
from tunelab.models import load_tokenizer, resolve_model
from tunelab.recipes.config_data import load_splits, pii_block_message, redact_file, run_data_check

EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"


def _vocab(rng: random.Random, n: int = 600) -> list[str]:
    letters = "abcdefghijklmnoprstuvwy"
    return ["".join(rng.choices(letters, k=rng.randint(3, 8))) for _ in range(n)]


def text_rows(n: int, seed: int, labels: tuple[str, ...] = ("pos", "neg"), words: int = 12) -> list[dict]:
    """Distinct rows of random pseudo-words (no accidental duplicates), labels in turn."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    return [{"text": " ".join(rng.choices(vocab, k=words + rng.randint(0, 6))), "label": labels[i % len(labels)]}
            for i in range(n)]


def config_for(paths: dict[str, Path], **governance) -> Config:
    data = {split: str(path) for split, path in paths.items()}
    return Config.model_validate({
        "task": "text-classification",
        "model": {"source": "tiny-random-bert"},
        "data": data,
        "train": {"max_length": 64},
        "governance": governance,
    })


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path]:
    """Train/validation/test files with one problem of each kind at known lines (line = row + 1)."""
    train = text_rows(40, seed=1)
    long30 = text_rows(1, seed=9, words=30)[0]["text"].split()[:30]
    leak30 = text_rows(1, seed=10, words=30)[0]["text"].split()[:30]
    train[5]["text"] = "Exactly the same words appear twice here"
    train[12]["text"] = "  exactly THE same   words appear twice here "  # line 13 = line 6, normalised
    train[20]["text"] = " ".join(long30)
    train[27]["text"] = " ".join(long30[:-1] + ["different"])  # line 28 ~ line 21
    train[33]["text"] = "   "  # line 34: empty
    train[8]["text"] = f"please write to {EMAIL} soon"  # line 9: PII
    train[15]["text"] = "the cafÃ© was closed"  # line 16: mojibake
    train[30]["text"] = " ".join(leak30)
    test = text_rows(10, seed=3)
    test[2]["text"] = train[3]["text"]  # test line 3 = train line 4
    test[6]["text"] = " ".join(leak30[:-1] + ["changed"])  # test line 7 ~ train line 31
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", train),
        "validation": write_jsonl(tmp_path / "validation.jsonl", text_rows(10, seed=2)),
        "test": write_jsonl(tmp_path / "test.jsonl", test),
    }


def test_planted_problems_are_found_at_their_rows(planted, tmp_path):
    train, test = str(planted["train"]), str(planted["test"])
    report = run_data_check(config_for(planted), out_dir=tmp_path / "out")
    assert report["passed"] is False
    split = report["splits"]["train"]
    assert split["rows"] == 40
    assert split["empty_rows"] == [f"{train} line 34"]
    assert split["exact_duplicates"] == {"groups": 1, "rows": 1, "examples": [[f"{train} line 6", f"{train} line 13"]]}
    assert split["near_duplicates"]["examples"] == [[f"{train} line 21", f"{train} line 28"]]
    assert [e["where"] for e in split["encoding"]] == [f"{train} line 16"]
    assert "'Ã©'" in split["encoding"][0]["problem"]
    leak = next(x for x in report["leakage"] if (x["a"], x["b"]) == ("train", "test"))
    assert (leak["exact"], leak["near"]) == (1, 1)
    assert [(e["kind"], e["a_where"], e["b_where"]) for e in leak["examples"]] == [
        ("exact", f"{train} line 4", f"{test} line 3"), ("near", f"{train} line 31", f"{test} line 7"),
    ]
    [finding] = report["pii"]["findings"]
    assert (finding["where"], finding["field"], finding["entity"]) == (f"{train} line 9", "text", "email")
    errors = " | ".join(report["errors"])
    assert "train: 1 empty or whitespace-only row(s)" in errors
    assert "test: 1 row(s) also in train (exact leakage)" in errors
    assert len(report["errors"]) == 2
    warnings = " | ".join(report["warnings"])
    for part in ("exact duplicate group", "near-duplicate", "nearly the same as a row of train", "encoding problem"):
        assert part in warnings
    assert report["splits"]["validation"]["exact_duplicates"]["groups"] == 0
    assert report["summary"]["leaked_rows"] == {"train->validation": 0, "train->test": 2, "validation->test": 0}
    on_disk = json.loads((tmp_path / "out" / "data_check.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(report))


def test_clean_data_passes(tmp_path):
    paths = {"train": write_jsonl(tmp_path / "train.jsonl", text_rows(30, seed=1)),
             "test": write_jsonl(tmp_path / "test.jsonl", text_rows(10, seed=2))}
    report = run_data_check(config_for(paths), out_dir=tmp_path / "out")
    assert report["passed"] and report["errors"] == [] and report["warnings"] == []
    assert report["splits"]["train"]["labels"] == {"neg": 15, "pos": 15}
    assert report["splits"]["train"]["imbalance_ratio"] == 1.0
    assert report["pii"]["count"] == 0
    assert report["splits"]["train"]["lengths"]["tokens"] is None  # no tokenizer given


def test_imbalance_warns_and_unseen_labels_fail(tmp_path):
    train = text_rows(60, seed=1, labels=("a",) * 11 + ("b",))  # 55 a, 5 b
    validation = text_rows(6, seed=2, labels=("a", "b", "c"))
    paths = {"train": write_jsonl(tmp_path / "train.jsonl", train),
             "validation": write_jsonl(tmp_path / "validation.jsonl", validation)}
    report = run_data_check(config_for(paths), out_dir=tmp_path / "out")
    assert report["splits"]["train"]["imbalance_ratio"] == 11.0
    assert any("imbalanced 11.0:1" in w for w in report["warnings"])
    assert report["passed"] is False
    [error] = report["errors"]
    assert error.startswith("validation: label(s) 'c' never occur in train")
    assert f"{paths['validation']} line 3" in error


def test_schema_mismatch_and_load_errors_are_errors_not_crashes(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", text_rows(10, seed=1))
    validation = write_jsonl(tmp_path / "validation.jsonl",
                             [{"text": r["text"], "source": "web"} for r in text_rows(5, seed=2)])
    paths = {"train": train, "validation": validation, "test": tmp_path / "missing.jsonl"}
    report = run_data_check(config_for(paths), out_dir=tmp_path / "out")
    assert report["passed"] is False
    assert report["schema"]["validation"]["missing"] == ["label"]
    assert report["schema"]["validation"]["extra"] == ["source"]
    errors = " | ".join(report["errors"])
    assert "test: data.test:" in errors and "does not exist" in errors
    assert "validation: column(s) 'label' of train are missing" in errors
    assert "test" not in report["splits"]


def test_token_lengths_and_truncation_rate(tmp_path):
    config = ModelConfig(source="tiny-random-bert")
    tokenizer = load_tokenizer(resolve_model(config), config)
    rows = [{"text": "short", "label": "a"} for _ in range(8)] + [{"text": "word " * 40, "label": "b"} for _ in range(2)]
    for i, row in enumerate(rows):
        row["text"] += f" {i}"
    report = check_splits({"train": SplitData(rows)}, label_column="label",
                          tokenizer=tokenizer, max_length=16, governance=GovernanceConfig())
    tokens = report["splits"]["train"]["lengths"]["tokens"]
    expected = [len(ids) for ids in tokenizer([r["text"] for r in rows])["input_ids"]]
    assert tokens["max"] == max(expected)
    assert tokens["truncated"] == sum(n > 16 for n in expected) == 2
    assert tokens["truncation_rate"] == 0.2
    assert tokens["examples"] == ["train row 9", "train row 10"]
    assert any("20.0% of rows (2) are longer than max_length (16 tokens)" in w for w in report["warnings"])


def test_html_is_self_contained_escaped_and_masks_pii(planted, tmp_path):
    rows = [json.loads(line) for line in planted["train"].read_text().splitlines()]
    rows[0]["label"] = "<script>alert(1)</script>"
    rows[1]["text"] = f"call me on {PHONE} or see https://example.com/x"
    write_jsonl(planted["train"], rows)
    run_data_check(config_for(planted), out_dir=tmp_path / "out")
    page = (tmp_path / "out" / "data_check.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "http" not in page
    assert EMAIL not in page and PHONE not in page
    assert "j***@e***.com" in page and "FAILED" in page
    raw_json = (tmp_path / "out" / "data_check.json").read_text(encoding="utf-8")
    assert EMAIL not in raw_json and PHONE not in raw_json


def test_pii_block_message_names_rows_and_fields_without_values(planted, tmp_path):
    report = run_data_check(config_for(planted, pii="block"), out_dir=tmp_path / "out")
    message = pii_block_message(report)
    assert "\n" not in message
    assert f"{planted['train']} line 9 (text: email)" in message
    assert "1 PII value(s) in 1 row(s)" in message
    assert message.endswith("remove or redact them, or set governance.pii: redact")
    assert EMAIL not in message


def test_pii_off_skips_the_scan(planted, tmp_path):
    report = check_splits({n: s for n, s in load_splits(config_for(planted)).items()},
                          label_column="label", governance=GovernanceConfig(pii="off"))
    assert report["pii"]["enabled"] is False and report["pii"]["findings"] == []


def test_redact_file_round_trip(tmp_path):
    rows = [{"text": f"mail {EMAIL} or call {PHONE}", "label": "x@example.com"}, {"text": "nothing here", "label": "b"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    config = config_for({"train": src})
    dst = tmp_path / "redacted" / "train.jsonl"
    assert redact_file(src, dst, config) == 2
    back = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert back == [{"text": "mail [EMAIL] or call [PHONE]", "label": "x@example.com"},
                    {"text": "nothing here", "label": "b"}]
    again = tmp_path / "again.jsonl"
    assert redact_file(dst, again, config) == 0
    csv = tmp_path / "in.csv"
    csv.write_text(f"text,label\n\"write {EMAIL}\",a\nplain,b\n", encoding="utf-8")
    assert redact_file(csv, tmp_path / "csv.jsonl", config) == 1
    txt = tmp_path / "notes.txt"
    txt.write_text(f"{EMAIL}\n", encoding="utf-8")
    with pytest.raises(DataError, match="redact supports jsonl/json/csv/tsv/parquet files, not txt"):
        redact_file(txt, tmp_path / "txt.jsonl", config)


def test_row_text_skips_labels_and_chat_roles_and_flags_empty_turns():
    row = {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": ""}]}
    assert row_text({**row, "label": "x"}, {"label"}).strip() == ""
    report = check_splits({"train": SplitData([row, {"messages": [{"role": "user", "content": "hi"}]}])},
                          label_column=None, governance=GovernanceConfig())
    assert report["splits"]["train"]["empty_rows"] == ["train row 1"]
    assert report["splits"]["train"]["labels"] is None


def test_image_rows_without_text_are_not_empty():
    rows = [{"label": "cat"}, {"label": "dog"}]
    report = check_splits({"train": SplitData(rows)}, label_column="label", text_rows=False,
                          governance=GovernanceConfig())
    assert report["passed"] and report["splits"]["train"]["labels"] == {"cat": 1, "dog": 1}


def test_duplicate_helpers_return_row_indices():
    texts = ["good film", "Good   FILM", "film good", "", "completely other words here"]
    index = dup.TextIndex.build(texts)
    assert dup.exact_groups(index) == [[0, 1]]
    assert dup.near_groups(index, 0.8) == [[0, 2]]  # under three words: word 1-grams, order ignored
    other = dup.TextIndex.build(["completely other words here", "unrelated", "GOOD film"])
    leak = dup.leakage(index, other, 0.8)
    assert leak.exact == [(4, 0), (0, 2)] and leak.near == []
    assert mojibake("naÃ¯ve â€™quotesâ€™ but São Paulo and Ä ß") == ["Ã¯", "â€™", "â€™"]


def test_near_duplicates_scale_to_thousands_of_rows():
    rows = text_rows(3000, seed=5, words=25)
    rows[2999]["text"] = rows[17]["text"] + " extra"
    start = time.perf_counter()
    index = dup.TextIndex.build([r["text"] for r in rows])
    groups = dup.near_groups(index, 0.8)
    elapsed = time.perf_counter() - start
    assert groups == [[17, 2999]]
    assert elapsed < 10, elapsed
