"""The model registry: versions, gated promotion, refs, model cards and the `registry` CLI (no training)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from tunelab.config import dump_config, validate
from tunelab.config.schema import PromotionPolicy
from tunelab.errors import TunelabError
from tunelab.workspace import Workspace
from tunelab.workspace.audit import query, verify
from tunelab.workspace.orm import Dataset, DatasetVersion, ModelVersion, Run, RunInput, StageChange
from tunelab.workspace.registry import (
    delete_version,
    list_models,
    promote,
    register,
    resolve_model_ref,
    show,
)

POLICY = {"min_metrics": {"test.accuracy": 0.9}, "max_forgetting": 0.1}
# The bytes the fake runs below read: registration re-hashes a run's inputs against its lineage.
TRAIN_BYTES, TEST_BYTES = b'{"text": "goal", "label": "sport"}\n', b'{"text": "vote", "label": "politics"}\n'
TRAIN_SHA, TEST_SHA = hashlib.sha256(TRAIN_BYTES).hexdigest(), hashlib.sha256(TEST_BYTES).hexdigest()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace.init(tmp_path)
    (tmp_path / "x").write_bytes(TRAIN_BYTES)  # the stored copy of news@v2
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_bytes(TEST_BYTES)
    with workspace.write() as txn:
        dataset = Dataset(name="news", created_at="2026-01-01T00:00:00+00:00", created_by="os:test")
        txn.session.add(dataset)
        txn.session.add(DatasetVersion(dataset=dataset, version=2, sha256=TRAIN_SHA, storage="copy", location="x",
                                       source="data/train.jsonl", kind="file", files=[], bytes=10, rows=96,
                                       created_at="2026-01-01T00:00:00+00:00", created_by="os:test"))
    yield workspace
    with workspace.read() as session:
        assert verify(session).ok, verify(session).problems
    workspace.close()


def make_run(ws: Workspace, run_id: str, *, accuracy: float = 0.95, forgetting: float = 0.05,
             data_check: bool | None = True, pii: int | None = 0, gates_passed: bool | None = True,
             status: str = "succeeded") -> Run:
    """A run folder (config.yaml, eval.json, data.json) and its Run row, as a finished training leaves them."""
    folder = ws.root / "runs" / run_id
    folder.mkdir(parents=True)
    config = validate({"task": "text-classification", "model": {"source": "tiny-random-bert"},
                       "data": {"train": "data/train.jsonl", "test": "data/test.jsonl"},
                       "method": {"name": "lora", "r": 8}, "train": {"seed": 7},
                       "governance": {"promotion": POLICY}})
    text = dump_config(config)
    (folder / "config.yaml").write_text(text)
    (folder / "run.json").write_text(json.dumps({"id": run_id, "status": status}))
    gates = None if gates_passed is None else {"passed": gates_passed, "checks": [
        {"name": "forgetting:general-text", "passed": gates_passed, "value": forgetting, "limit": 0.1,
         "message": f"forgetting on general-text {forgetting:.2f}"}]}
    evaluation = {
        "validation": {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "support": 24},
        "test": {"accuracy": accuracy, "macro_f1": accuracy - 0.02, "support": 24},
        "base": {"kind": "majority-class", "validation": {"accuracy": 0.34}, "test": {"accuracy": 0.33}},
        "gain": {"validation": {"accuracy": accuracy - 0.34}, "test": {"accuracy": accuracy - 0.33}},
        "retention": {"general-text": {"metric": "macro_f1", "before": {"macro_f1": 0.8}, "after": {"macro_f1": 0.7},
                                       "forgetting": forgetting, "limit": 0.1, "passed": forgetting <= 0.1}},
        **({"gates": gates} if gates else {}),
    }
    (folder / "eval.json").write_text(json.dumps({**evaluation, "warnings": ["possible overfitting: watch out"]}))
    (folder / "data.json").write_text(json.dumps({"labels": ["politics", "sport", "tech"],
                                                  "rows": {"train": 96, "test": 24}}))
    with ws.write() as txn:
        version = txn.session.execute(select(DatasetVersion)).scalar_one()
        run = Run(id=run_id, path=str(folder), status=status, task="text-classification",
                  config_sha256=hashlib.sha256(text.encode()).hexdigest(), config_yaml=text, tunelab_version="0.1.0",
                  git_commit="c9dc173", seed=7, started_at="2026-01-02T10:00:00+00:00",
                  ended_at="2026-01-02T10:05:00+00:00", metrics=evaluation, gates=gates,
                  data_check_passed=data_check, pii_count=pii, created_by="os:test",
                  environment={"python": "3.11.7", "platform": "Linux", "cpu_count": 2, "gpus": [],
                               "packages": {"torch": "2.13.0", "transformers": "5.1.0", "peft": "0.21.2"}})
        run.inputs = [RunInput(split="train", path="data/train.jsonl", sha256=TRAIN_SHA, dataset_version=version),
                      RunInput(split="test", path="data/test.jsonl", sha256=TEST_SHA)]
        txn.session.add(run)
    return run


def stage(ws: Workspace, ref: str) -> str:
    with ws.read() as session:
        return resolve_model_ref(session, ref).stage


# ---- register -------------------------------------------------------------------------------------
def test_register_numbers_versions_and_writes_the_card(ws: Workspace) -> None:
    first = make_run(ws, "run-a")
    make_run(ws, "run-b")
    v1 = register(ws, "run-a", "support-bot", note="first try")
    v2 = register(ws, ws.root / "runs" / "run-b", "support-bot")  # a run folder works as well as an id
    assert (v1.version, v1.stage, v2.version, v2.stage) == (1, "candidate", 2, "candidate")
    assert v1.card_path == ".tunelab/artifacts/registry/support-bot/v1/MODEL_CARD.md"
    card = (ws.root / v1.card_path).read_text()
    assert card.startswith("# support-bot v1\n")
    for expected in ("`news@v2`", f"`{TRAIN_SHA[:12]}`", "`data/test.jsonl`", f"`{TEST_SHA[:12]}`", "| train |",
                     "0.9500", "baseline (majority class)", "5.00%", first.config_sha256, "`tiny-random-bert`",
                     "method.r | 8", "torch 2.13.0, transformers 5.1.0, peft 0.21.2", "`politics`",
                     "possible overfitting: watch out", "held-out split", "registered as candidate", "first try"):
        assert expected in card, expected
    with ws.read() as session:
        added = query(session, action="registry.add")
        assert [json.loads(e.details) for e in added] == [
            {"run": "run-a", "version": 1, "stage": "candidate", "note": "first try"},
            {"run": "run-b", "version": 2, "stage": "candidate", "note": None}]


def test_register_refuses_duplicates_unknown_and_unfinished_runs(ws: Workspace) -> None:
    make_run(ws, "run-a")
    make_run(ws, "run-failed", status="failed")
    register(ws, "run-a", "support-bot")
    with pytest.raises(TunelabError, match=r"already registered as support-bot@v1"):
        register(ws, "run-a", "support-bot")
    with pytest.raises(TunelabError, match=r"run 'nope' is not recorded"):
        register(ws, "nope", "support-bot")
    with pytest.raises(TunelabError, match=r"status 'failed'"):
        register(ws, "run-failed", "support-bot")
    with pytest.raises(TunelabError, match=r"model name 'a/b' is not allowed"):
        register(ws, "run-a", "a/b")
    assert register(ws, "run-a", "other-name").version == 1  # another name may hold the same run


# ---- promote --------------------------------------------------------------------------------------
def test_promotion_through_stages_archives_the_previous_production(ws: Workspace) -> None:
    make_run(ws, "run-a")
    make_run(ws, "run-b")
    register(ws, "run-a", "support-bot")
    register(ws, "run-b", "support-bot")
    staged = promote(ws, "support-bot@v1", "staging", reason="soak")
    assert staged.passed and [c["name"] for c in staged.checks] == [
        "min_metric:test.accuracy", "max_forgetting", "gates_passed", "data_check", "pii_clean", "integrity"]
    assert promote(ws, "support-bot@staging", "production").passed
    assert stage(ws, "support-bot@production") == "production"
    with ws.read() as session:
        assert resolve_model_ref(session, "support-bot@production").version == 1
    direct = promote(ws, "support-bot@v2", "production")  # candidate -> production: allowed, gated
    assert direct.passed and direct.archived == ["support-bot@v1"]
    assert stage(ws, "support-bot@v1") == "archived"
    with ws.read() as session:
        assert resolve_model_ref(session, "support-bot@production").version == 2
        assert resolve_model_ref(session, "support-bot@latest").version == 2
        assert resolve_model_ref(session, "support-bot@1").version == 1
        changes = session.execute(select(StageChange).order_by(StageChange.id)).scalars().all()
        assert [(c.from_stage, c.to_stage) for c in changes] == [
            ("", "candidate"), ("", "candidate"), ("candidate", "staging"), ("staging", "production"),
            ("production", "archived"), ("candidate", "production")]
        assert len(query(session, action="registry.promote")) == 4
    card = (ws.root / ".tunelab/artifacts/registry/support-bot/v1/MODEL_CARD.md").read_text()
    assert "| Stage | **archived** |" in card and "replaced by support-bot@v2" in card
    assert [m["production"] for m in list_models(ws)] == [2]


def test_refused_promotion_lists_failed_gates_keeps_stage_and_is_audited(ws: Workspace) -> None:
    make_run(ws, "weak", accuracy=0.8, forgetting=0.2, data_check=None, pii=3)
    register(ws, "weak", "support-bot")
    result = promote(ws, "support-bot@v1", "staging", reason="try anyway")
    assert not result.passed
    assert [c["name"] for c in result.failed] == ["min_metric:test.accuracy", "max_forgetting", "data_check",
                                                  "pii_clean"]
    messages = [c["message"] for c in result.failed]
    assert messages == ["test.accuracy 0.8000 is below the minimum 0.9",
                        "forgetting on general-text 20.0% is above the maximum 10.0%",
                        "data check: none recorded for the run", "PII: 3 findings in the training data"]
    assert stage(ws, "support-bot@v1") == "candidate"
    with ws.read() as session:
        refused = query(session, action="registry.promote.refused")
        assert len(refused) == 1 and json.loads(refused[0].details)["failed"] == messages
        version = resolve_model_ref(session, "support-bot@v1")
        assert [(c.to_stage, c.passed) for c in version.changes] == [("candidate", True), ("staging", False)]
    card = (ws.root / version.card_path).read_text()
    assert "| Stage | **candidate** |" in card and "| candidate \u2192 staging | **refused** |" in card


def test_policy_override_and_unmeasured_requirements(ws: Workspace, tmp_path: Path) -> None:
    make_run(ws, "run-a", gates_passed=None)
    register(ws, "run-a", "bot")
    policy = PromotionPolicy(min_metrics={"test.f1": 0.5}, max_metrics={"test.accuracy": 0.99},
                             require_data_check=False, require_pii_clean=False)
    result = promote(ws, "bot@v1", "staging", policy_override=policy)
    assert [(c["name"], c["passed"]) for c in result.checks] == [
        ("min_metric:test.f1", False), ("max_metric:test.accuracy", True), ("gates_passed", True),
        ("integrity", True)]
    assert "has: validation.accuracy, validation.macro_f1, validation.support, test.accuracy" in \
        result.checks[0]["message"]
    assert result.checks[2]["message"] == "gates: none configured in the run"
    with ws.write() as txn:  # a run without retention sets cannot show it did not forget
        run = txn.session.get(Run, "run-a")
        run.metrics = {key: value for key, value in run.metrics.items() if key != "retention"}
    result = promote(ws, "bot@v1", "staging", policy_override=PromotionPolicy(max_forgetting=0.1))
    assert [c["message"] for c in result.failed] == [
        "forgetting: no retention measurements in the run, but max_forgetting 0.1 is required"]
    assert stage(ws, "bot@v1") == "candidate"


def test_disallowed_moves_and_archiving(ws: Workspace) -> None:
    make_run(ws, "run-a")
    register(ws, "run-a", "bot")
    with pytest.raises(TunelabError, match="cannot move bot@v1 to 'candidate'"):
        promote(ws, "bot@v1", "candidate")
    strict = PromotionPolicy(min_metrics={"test.accuracy": 1.0})
    archived = promote(ws, "bot@v1", "archived", policy_override=strict)
    assert archived.passed and archived.checks == []  # taking a model out of use is never gated
    with pytest.raises(TunelabError, match="already in archived"):
        promote(ws, "bot@v1", "archived")
    assert stage(ws, "bot@v1") == "archived"
    assert promote(ws, "bot@v1", "production").passed  # a rollback from archived is a gated promotion
    with pytest.raises(TunelabError, match="cannot move from production to staging"):
        promote(ws, "bot@v1", "staging")


# ---- refs -----------------------------------------------------------------------------------------
def test_reference_errors_name_what_exists(ws: Workspace) -> None:
    make_run(ws, "run-a")
    register(ws, "run-a", "support-bot")
    register(ws, "run-a", "news-model")
    with ws.read() as session:
        with pytest.raises(TunelabError, match=r"no registered model 'suport-bot' \(known: news-model, "
                                               r"support-bot\).*did you mean 'support-bot'"):
            resolve_model_ref(session, "suport-bot@v1")
        with pytest.raises(TunelabError, match=r"has no version 7 \(versions: v1 candidate\)"):
            resolve_model_ref(session, "support-bot@v7")
        with pytest.raises(TunelabError, match=r"has no version in production"):
            resolve_model_ref(session, "support-bot@production")
        with pytest.raises(TunelabError, match=r"is not a model reference"):
            resolve_model_ref(session, "support-bot")
        with pytest.raises(TunelabError, match=r"'newest' is not a version"):
            resolve_model_ref(session, "support-bot@newest")


# ---- show and delete ------------------------------------------------------------------------------
def test_show_and_delete_never_reuse_a_number(ws: Workspace) -> None:
    for run_id in ("run-a", "run-b", "run-c"):
        make_run(ws, run_id)
    register(ws, "run-a", "bot")
    register(ws, "run-b", "bot")
    promote(ws, "bot@v1", "production")
    assert [v["ref"] for v in show(ws, "bot")["versions"]] == ["bot@v1", "bot@v2"]
    detail = show(ws, "bot@production")
    assert detail["run"] == "run-a" and detail["inputs"][0]["dataset"] == "news@v2"
    assert [h["to"] for h in detail["history"]] == ["candidate", "production"]
    with pytest.raises(TunelabError, match="bot@v1 is in production and cannot be deleted"):
        delete_version(ws, "bot@v1")
    card = ws.root / ".tunelab/artifacts/registry/bot/v2/MODEL_CARD.md"
    assert card.is_file()
    assert delete_version(ws, "bot@v2") == "bot@v2"
    assert not card.exists()
    assert register(ws, "run-c", "bot").version == 3
    with ws.read() as session:
        assert [v.version for v in session.execute(select(ModelVersion)).scalars()] == [1, 3]
        assert len(query(session, action="registry.delete")) == 1


# ---- CLI --------------------------------------------------------------------------------------------
@pytest.fixture
def cli(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tunelab.cli.registry_cmd import registry_app

    monkeypatch.setenv("TUNELAB_WORKSPACE", str(ws.root))
    app = typer.Typer()
    app.add_typer(registry_app, name="registry")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["registry", *args])


def test_cli_promote_refused_exits_3_and_lists_failed_gates(ws: Workspace, cli: Any, tmp_path: Path) -> None:
    make_run(ws, "weak", accuracy=0.8, pii=2)
    make_run(ws, "good")
    assert cli("add", "weak", "--name", "bot").exit_code == 0
    result = cli("promote", "bot@v1", "--to", "staging")
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == ["refused: bot@v1 -> staging",
                                          "  gate failed: test.accuracy 0.8000 is below the minimum 0.9",
                                          "  gate failed: PII: 2 findings in the training data"]
    added = cli("add", "good", "--name", "bot", "--note", "better data")
    assert added.exit_code == 0 and "registered: bot@v2 (candidate) from run good" in added.output
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"min_metrics": {"test.accuracy": 0.9}, "require_data_check": False}))
    result = cli("promote", "bot@latest", "--to", "production", "--policy", str(policy), "--reason", "ship it")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["promoted: bot@v2 candidate -> production",
                                          "  \u2713 test.accuracy 0.9500 >= 0.9",
                                          "  \u2713 the run's evaluation gates passed",
                                          "  \u2713 no PII in the training data",
                                          "  \u2713 artifacts and inputs match lineage"]
    with ws.read() as session:
        details = json.loads(query(session, action="registry.promote")[-1].details)
        assert details["policy"] == "override" and details["reason"] == "ship it"
    listing = cli("list")
    assert listing.exit_code == 0 and "bot" in listing.output and "v2" in listing.output
    out_file = tmp_path / "card.md"
    assert cli("card", "bot@production", "--out", str(out_file)).exit_code == 0
    assert out_file.read_text().startswith("# bot v2\n")
    printed = cli("card", "bot@production")
    assert printed.output == out_file.read_text()
    shown = cli("show", "bot@v2", "--json")
    assert json.loads(shown.output)["stage"] == "production"
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_metric: {test.accuracy: 0.9}\n")
    result = cli("promote", "bot@v1", "--to", "staging", "--policy", str(bad))
    assert isinstance(result.exception, TunelabError) and "valid keys: min_metrics" in str(result.exception)


def test_a_version_shows_the_runs_it_started_from(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """SFT -> DPO -> a second DPO: each run.json names its parent (model.source was a run folder), and
    the version's lineage lists the chain nearest first; a run from a pretrained model has none."""
    for run_id, parent in (("sft-1", None), ("dpo-1", "sft-1"), ("dpo-2", "dpo-1")):
        make_run(ws, run_id)
        record = ws.root / "runs" / run_id / "run.json"
        body = json.loads(record.read_text()) | {"model": {"kind": "run" if parent else "catalog",
                                                           **({"parent_run": parent} if parent else {})}}
        record.write_text(json.dumps(body))
    register(ws, "dpo-2", "support-bot")
    register(ws, "sft-1", "support-bot")
    assert show(ws, "support-bot@v1")["started_from"] == ["dpo-1", "sft-1"]
    assert show(ws, "support-bot@v2")["started_from"] == []
    from tunelab.cli.main import app

    monkeypatch.chdir(ws.root)
    printed = CliRunner().invoke(app, ["registry", "show", "support-bot@v1"]).stdout
    assert "started from: dpo-1 <- sft-1" in printed
