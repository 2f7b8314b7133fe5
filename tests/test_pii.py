"""PII detectors: precision/recall on a labelled set of real values and look-alikes, masking, redaction."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from tunelab.datacheck import pii
from tunelab.datacheck.pii import (
    ENTITIES,
    find_pii,
    iban_ok,
    luhn_ok,
    mask,
    redact_row,
    redact_value,
    scan_rows,
    ssn_ok,
)
from tunelab.errors import ConfigError

LABELLED = Path(__file__).parent / "data" / "pii_labelled.jsonl"


def _labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def measure() -> dict[str, dict[str, float]]:
    """Per-entity precision and recall over the labelled set, counted per text (entity present or not)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for item in _labelled():
        predicted = {m.entity for m in find_pii(item["text"])}
        gold = set(item["entities"])
        for entity in ENTITIES:
            tp[entity] += entity in predicted and entity in gold
            fp[entity] += entity in predicted and entity not in gold
            fn[entity] += entity in gold and entity not in predicted
    scores = {}
    for entity in ENTITIES:
        found, real = tp[entity] + fp[entity], tp[entity] + fn[entity]
        scores[entity] = {
            "precision": tp[entity] / found if found else 1.0,
            "recall": tp[entity] / real if real else 1.0,
            "support": real,
        }
    return scores


def test_labelled_set_covers_every_entity_and_has_negatives():
    items = _labelled()
    assert len(items) >= 60
    support = Counter(e for item in items for e in item["entities"])
    assert all(support[e] >= 5 for e in ENTITIES), support
    assert sum(not item["entities"] for item in items) >= 30


@pytest.mark.parametrize("entity", ENTITIES)
def test_precision_is_perfect_and_recall_high_per_entity(entity):
    score = measure()[entity]
    print(f"{entity}: precision {score['precision']:.3f} recall {score['recall']:.3f} (n={score['support']})")
    assert score["precision"] == 1.0
    assert score["recall"] >= 0.95


def test_findings_and_previews_never_hold_the_raw_value():
    for index, item in enumerate(_labelled()):
        findings = scan_rows([item], split="train", entities=list(ENTITIES), skip_fields={"entities"})
        for finding in findings:
            raw = item["text"][finding.start:finding.end]
            assert raw not in finding.preview
            assert raw not in json.dumps(asdict(finding)), (index, finding)


def test_masks_show_shape_only():
    assert mask("email", "john.doe@example.com") == "j***@e***.com"
    assert mask("credit_card", "4111 1111 1111 1111") == "**** **** **** 1111"
    assert mask("phone", "+44 20 7946 0958") == "+** ** **** **58"
    assert mask("national_id", "123-45-6789") == "***-**-****"
    assert mask("ip_address", "192.168.1.25") == "192.*.*.*"
    assert "7654" not in mask("iban", "GB82 WEST 1234 5698 7654 32")


def test_redaction_replaces_each_value_by_its_placeholder():
    text = "Mail jane@acme.com, call +1 202-555-0143, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00"
    redacted, n = redact_value(text, ENTITIES)
    assert redacted == "Mail [EMAIL], call [PHONE], card [CREDIT_CARD], IBAN [IBAN]"
    assert n == 4
    only_email, n = redact_value(text, ["email"])
    assert n == 1 and "[EMAIL]" in only_email and "202-555-0143" in only_email
    assert redact_value("SSN 123-45-6789 from 10.1.2.3", ENTITIES) == ("SSN [NATIONAL_ID] from [IP_ADDRESS]", 2)


def test_nested_fields_are_scanned_and_the_label_is_skipped():
    row = {
        "messages": [
            {"role": "user", "content": "my mail is a.b@example.org"},
            {"role": "assistant", "content": "noted; your IP 203.0.113.9 is logged"},
        ],
        "meta": {"tags": ["ok", "call +44 20 7946 0958"]},
        "label": "owner@example.org",
    }
    findings = scan_rows([row], split="train", entities=list(ENTITIES), skip_fields={"label"},
                         where=lambda i: f"data.jsonl line {i + 1}")
    assert [(f.field, f.entity) for f in findings] == [
        ("messages[0].content", "email"), ("messages[1].content", "ip_address"), ("meta.tags[1]", "phone"),
    ]
    assert {f.where for f in findings} == {"data.jsonl line 1"}
    redacted, n = redact_row(row, ENTITIES, {"label"})
    assert n == 3
    assert redacted["messages"][0]["content"] == "my mail is [EMAIL]"
    assert redacted["label"] == "owner@example.org"
    assert row["messages"][0]["content"] == "my mail is a.b@example.org"  # the input is not modified


def test_only_the_first_findings_are_located_through_where():
    calls = []

    def where(i: int) -> str:
        calls.append(i)
        return f"f line {i + 1}"

    rows = [{"text": f"user{i}@example.com"} for i in range(5)]
    findings = scan_rows(rows, split="train", entities=["email"], where=where, max_located=2)
    assert calls == [0, 1]
    assert [f.where for f in findings] == ["f line 1", "f line 2", "train row 3", "train row 4", "train row 5"]


def test_luhn_and_card_edge_cases():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("0000000000000000")  # Luhn-valid, but no card network has that prefix:
    assert not find_pii("0000 0000 0000 0000")
    assert not luhn_ok("") and not luhn_ok("4111-1111")
    assert find_pii("3782 822463 10005")[0].entity == "credit_card"  # Amex grouping 4-6-5
    assert not find_pii("4111 1111-1111 1111")  # mixed separators
    assert not find_pii("41111 11111 11111 1")  # not a printed card grouping
    assert find_pii("4222222222222")[0].entity == "credit_card"  # 13-digit Visa
    assert not find_pii("5555 5555 5555 4445")  # Mastercard prefix, Luhn fails


def test_mod97_and_iban_lengths():
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")  # checksum
    assert not iban_ok("GB82 WEST 1234 5698 7654 3")  # length of GB is 22
    assert not iban_ok("XX82 WEST 1234 5698 7654 32")  # no such country
    assert not iban_ok("GB82-WEST-1234")
    assert [m.entity for m in find_pii("to DE89 3704 0044 0532 0130 00 EUR")] == ["iban"]
    assert not find_pii("DE89 3704 0044 0532 0130 001")  # one digit too many
    assert "iban" not in {m.entity for m in find_pii("GB82 WES T123 4569 8765 432")}  # not grouped in fours


def test_ssn_rules():
    assert ssn_ok("123", "45", "6789")
    for area, group, serial in [("000", "12", "3456"), ("666", "12", "3456"), ("900", "12", "3456"),
                                ("123", "00", "4567"), ("123", "45", "0000")]:
        assert not ssn_ok(area, group, serial)
    assert not find_pii("ref 123 45 6789")  # spaced SSN only after "SSN" / "social security"
    assert find_pii("SSN 123 45 6789")[0].entity == "national_id"


def test_presidio_missing_is_a_config_error(monkeypatch):
    pii._presidio_engine.cache_clear()
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="presidio-analyzer is not installed") as info:
        scan_rows([{"text": "x"}], split="train", entities=["email"], presidio=True)
    assert "tunelab[presidio]" in str(info.value)
    pii._presidio_engine.cache_clear()


def test_presidio_results_are_merged_when_installed(monkeypatch):
    class Result:
        def __init__(self, entity_type, start, end):
            self.entity_type, self.start, self.end = entity_type, start, end

    class AnalyzerEngine:
        def analyze(self, text, language, entities):
            start = text.find("Alice")
            return [Result("PERSON", start, start + 5)] if start >= 0 else []

    monkeypatch.setitem(sys.modules, "presidio_analyzer", types.SimpleNamespace(AnalyzerEngine=AnalyzerEngine))
    pii._presidio_engine.cache_clear()
    try:
        findings = scan_rows([{"text": "Alice wrote from alice@example.com"}], split="train", entities=["email"],
                             presidio=True)
        assert [(f.entity, f.preview) for f in findings] == [("person", "A***"), ("email", "a***@e***.com")]
        assert redact_value("Alice is here", ["email"], presidio=True) == ("[PERSON] is here", 1)
    finally:
        pii._presidio_engine.cache_clear()
