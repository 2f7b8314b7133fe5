"""The server's data and inference API: dataset uploads (safe names, size limit), data checks over HTTP,
predictions from registered classifiers and taggers, and OpenAI-compatible chat completions."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import synthetic_rows, write_jsonl
from tests.test_causal_lm import chat_rows
from tests.test_token_classification import ner_rows
from tunelab.config import load_config
from tunelab.recipes.train import train
from tunelab.server.app import create_app
from tunelab.workspace import Workspace, registry
from tunelab.workspace.audit import query
from tunelab.workspace.tokens import create_token

BOUNDARY = "tunelab-test-boundary"
PERMISSIVE = {"promotion": {"require_data_check": False, "require_pii_clean": False, "require_gates_passed": False}}


@pytest.fixture
def database_url():
    """SQLite only: the store is tested on both backends in test_workspace.py."""
    return


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tokens(ws: Workspace) -> dict[str, str]:
    return {role: create_token(ws, f"{role}-token", role) for role in ("viewer", "engineer", "admin")}


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, so a test controls the exact filename bytes sent."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def api(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, str], Workspace]]:
    tokens = _tokens(workspace)
    with TestClient(create_app(workspace.root, run_jobs=False)) as client:
        yield client, tokens, workspace


def _leftovers(ws: Workspace) -> list[Path]:
    uploads = ws.artifacts / "uploads"
    return list(uploads.iterdir()) if uploads.exists() else []


# ---- uploads -----------------------------------------------------------------------------------
def test_upload_round_trip_versions_and_unchanged_bytes(api) -> None:
    client, tokens, ws = api
    first = _jsonl(synthetic_rows(12, seed=1))
    made = client.post("/v1/datasets/news", files={"file": ("train.jsonl", first)}, data={"note": "first cut"},
                       headers=_auth(tokens["engineer"]))
    assert made.status_code == 201, made.text
    version = made.json()
    assert version["ref"] == "news@v1" and not version["unchanged"]
    assert version["sha256"] == hashlib.sha256(first).hexdigest() and version["bytes"] == len(first)
    assert version["rows"] == 12 and version["note"] == "first cut" and version["storage"] == "copy"
    assert version["created_by"] == "token:engineer-token"
    assert (ws.root / version["location"]).read_bytes() == first and version["location"].endswith("/train.jsonl")

    again = client.post("/v1/datasets/news", files={"file": ("renamed.jsonl", first)}, data={"note": "same bytes"},
                        headers=_auth(tokens["engineer"]))
    assert again.status_code == 200 and again.json()["unchanged"] and again.json()["ref"] == "news@v1"
    assert again.json()["note"] == "first cut"  # the existing version, untouched

    second = _jsonl(synthetic_rows(6, seed=2))
    newer = client.post("/v1/datasets/news", files={"file": ("folder/train.jsonl", second)},
                        headers=_auth(tokens["admin"]))
    assert newer.status_code == 201 and newer.json()["ref"] == "news@v2" and newer.json()["note"] is None
    assert newer.json()["files"][0]["path"] == "train.jsonl"  # folders in a relative name are dropped
    listed = client.get("/v1/datasets", params={"name": "news"}, headers=_auth(tokens["viewer"])).json()
    assert [v["ref"] for v in listed] == ["news@v1", "news@v2"]

    assert client.post("/v1/datasets/news", files={"file": ("x.jsonl", b"{}\n")},
                       headers=_auth(tokens["viewer"])).status_code == 403
    assert client.post("/v1/datasets/news", files={"file": ("x.jsonl", b"{}\n")}).status_code == 401
    with ws.read() as session:
        added = [(e.object_id, e.actor) for e in query(session, action="data.add")]
    assert added == [("news@v1", "token:engineer-token"), ("news@v2", "token:admin-token")]
    assert _leftovers(ws) == []


@pytest.mark.parametrize("filename", ["../../etc/passwd", "a/../../b.jsonl", "../escape.jsonl", "/tmp/abs.jsonl",
                                      "..\\..\\win.jsonl", ".hidden.jsonl", "run.sh", "a%2F..%2Fb.jsonl", ""])
def test_unsafe_file_names_are_refused_and_nothing_is_written(api, filename: str, tmp_path: Path) -> None:
    client, tokens, ws = api
    body, headers = _multipart([("file", filename, b'{"text": "x"}\n')])
    refused = client.post("/v1/datasets/news", content=body, headers=headers | _auth(tokens["engineer"]))
    assert refused.status_code == 422, refused.text
    assert "name" in refused.json()["detail"]
    assert client.get("/v1/datasets", headers=_auth(tokens["viewer"])).json() == []
    assert _leftovers(ws) == []
    # where each name would land if joined to the upload folder: all inside the workspace (tmp_path)
    written = [p for p in tmp_path.rglob("*") if p.name in ("passwd", "b.jsonl", "escape.jsonl", "win.jsonl")]
    assert not written and not Path("/tmp/abs.jsonl").exists()


def test_malformed_uploads_are_refused(api) -> None:
    client, tokens, ws = api
    engineer = _auth(tokens["engineer"])
    assert client.post("/v1/datasets/news", json={"file": "x"}, headers=engineer).status_code == 415
    for parts in ([("file", "a.jsonl", b"{}\n"), ("file", "b.jsonl", b"{}\n")],  # two files
                  [("file", "a.jsonl", b"{}\n"), ("notes", None, b"typo")],  # unknown field
                  [("note", None, b"no file")],  # no file
                  [("file", "a.jsonl", b"")]):  # empty file
        body, headers = _multipart(parts)
        assert client.post("/v1/datasets/news", content=body, headers=headers | engineer).status_code == 422
    body, headers = _multipart([("file", "a.jsonl", b"{}\n")])
    truncated = client.post("/v1/datasets/news", content=body[:-12], headers=headers | engineer)
    assert truncated.status_code == 422 and "ended early" in truncated.json()["detail"]
    bad_name = client.post("/v1/datasets/-bad", content=body, headers=headers | engineer)
    assert bad_name.status_code == 422 and "dataset name" in bad_name.json()["detail"]
    assert client.get("/v1/datasets", headers=_auth(tokens["viewer"])).json() == []
    assert _leftovers(ws) == []


def test_oversized_uploads_are_refused_with_413(api) -> None:
    client, tokens, ws = api
    client.app.state.max_upload_bytes = 1000
    engineer = _auth(tokens["engineer"])
    small = client.post("/v1/datasets/news", files={"file": ("ok.jsonl", b"x" * 900)}, headers=engineer)
    assert small.status_code == 201, small.text
    declared = client.post("/v1/datasets/news", files={"file": ("big.jsonl", b"x" * 200_000)}, headers=engineer)
    assert declared.status_code == 413 and "upload (200" in declared.json()["detail"]  # from Content-Length
    just_over = client.post("/v1/datasets/news", files={"file": ("big.jsonl", b"x" * 1001)}, headers=engineer)
    assert just_over.status_code == 413 and "file is larger" in just_over.json()["detail"]  # counted while read
    body, headers = _multipart([("file", "big.jsonl", b"x" * 2000)])

    def chunked() -> Iterator[bytes]:  # no Content-Length: the streamed count must stop it
        yield body

    streamed = client.post("/v1/datasets/news", content=chunked(), headers=headers | engineer)
    assert streamed.status_code == 413 and "limit of 1000 bytes" in streamed.json()["detail"]
    assert [v["ref"] for v in client.get("/v1/datasets", headers=engineer).json()] == ["news@v1"]
    assert _leftovers(ws) == []


# ---- data checks ---------------------------------------------------------------------------------
def test_data_check_of_an_uploaded_version(api) -> None:
    client, tokens, ws = api
    engineer, viewer = _auth(tokens["engineer"]), _auth(tokens["viewer"])
    client.post("/v1/datasets/topics", files={"file": ("topics.jsonl", _jsonl(synthetic_rows(30, seed=4)))},
                headers=engineer)
    assert client.get("/v1/datasets/topics@v1/check", headers=viewer).status_code == 404
    assert client.post("/v1/datasets/topics@v1/check", headers=viewer).status_code == 403
    checked = client.post("/v1/datasets/topics@v1/check", headers=engineer)
    assert checked.status_code == 200, checked.text
    result = checked.json()
    assert result["ref"] == "topics@v1" and result["passed"] and result["report"]["passed"]
    assert result["created_by"] == "token:engineer-token" and (ws.root / result["report_path"]).is_file()
    stored = client.get("/v1/datasets/topics/check", headers=viewer).json()  # NAME means its latest version
    assert stored["report_sha256"] == result["report_sha256"] and stored["report"] == result["report"]

    broken = b'{"text": "fine", "label": "a"}\n{not json\n'
    client.post("/v1/datasets/topics", files={"file": ("broken.jsonl", broken)}, headers=engineer)
    failed = client.post("/v1/datasets/topics@v2/check", headers=engineer).json()
    assert failed["ref"] == "topics@v2" and not failed["passed"] and failed["summary"]["errors"]
    assert client.post("/v1/datasets/nothing@v1/check", headers=engineer).status_code == 422


# ---- inference ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """One workspace with a production classifier (`topics`), tagger (`tagger`) and chat model
    (`support-bot`), a candidate-only classifier (`fresh`), and a client; trained once for the module."""
    root = tmp_path_factory.mktemp("served")
    cwd = Path.cwd()
    os.chdir(root)  # training records its runs in the workspace found from the working directory
    try:
        ws = Workspace.init(root)
        runs = {name: train(load_config(_config(root, name, task))).run.id
                for name, task in (("topics", "text-classification"), ("tagger", "token-classification"),
                                   ("support-bot", "causal-lm"), ("faq", "embedding"))}
        for name, run_id in runs.items():
            registry.register(ws, run_id, name)
            assert registry.promote(ws, f"{name}@v1", "production").passed
        registry.register(ws, runs["topics"], "fresh")
        tokens = _tokens(ws)
        ws.close()
    finally:
        os.chdir(cwd)
    with TestClient(create_app(root, run_jobs=False)) as client:
        yield client, tokens


def _config(root: Path, name: str, task: str) -> Path:
    # eval.base off: the tagger's base model scores a NaN loss, which the workspace cannot record (the
    # run would stay "running" and could not be registered).
    common = {"task": task, "method": {"name": "full"}, "output": {"dir": str(root / "runs")},
              "governance": PERMISSIVE, "eval": {"base": False, "retention": "none"},
              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_length": 64, "seed": 0}}
    if task == "text-classification":
        body = {**common, "model": {"source": "tiny-random-bert"},
                "data": {"train": str(write_jsonl(root / "topics.jsonl", synthetic_rows(48, seed=1)))}}
    elif task == "embedding":
        pairs = [{"anchor": r["text"], "positive": f"about {r['label']}"} for r in synthetic_rows(48, seed=1)]
        body = {**common, "model": {"source": "tiny-random-bert"},
                "data": {"train": str(write_jsonl(root / "pairs.jsonl", pairs))}}
    elif task == "token-classification":
        body = {**common, "model": {"source": "tiny-random-bert"},
                "data": {"train": str(write_jsonl(root / "ner.jsonl", ner_rows(48, seed=1)))}}
    else:
        body = {**common, "model": {"source": "tiny-random-llama"}, "method": {"name": "lora", "r": 4},
                "data": {"train": str(write_jsonl(root / "chat.jsonl", chat_rows(24, seed=1)))},
                "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "max_length": 128, "seed": 0},
                "eval": {"base": False, "retention": "none", "generate_samples": 0}, "generation": {"max_new_tokens": 6}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_predict_with_a_registered_classifier_and_tagger(served) -> None:
    client, tokens = served
    viewer = _auth(tokens["viewer"])
    answer = client.post("/v1/models/topics/predict", json={"inputs": ["goal match team", "vote tax law"],
                                                            "top_k": 2}, headers=viewer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "topics@v1" and body["task"] == "text-classification"
    assert [p["text"] for p in body["predictions"]] == ["goal match team", "vote tax law"]
    for prediction in body["predictions"]:
        scores = [label["score"] for label in prediction["labels"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert {label["label"] for label in prediction["labels"]} <= {"sport", "tech", "politics"}
    latest = client.post("/v1/models/topics/predict", json={"inputs": ["chip"], "version": "latest"}, headers=viewer)
    assert latest.json()["model"] == "topics@v1" and len(latest.json()["predictions"][0]["labels"]) == 1

    tagged = client.post("/v1/models/tagger/predict", json={"inputs": ["patient was given aspirin"]}, headers=viewer)
    assert tagged.status_code == 200 and tagged.json()["task"] == "token-classification"
    assert tagged.json()["predictions"][0]["text"] == "patient was given aspirin"
    assert isinstance(tagged.json()["predictions"][0]["entities"], list)
    assert len(client.app.state.model_cache.keys()) == 2


def test_predict_refusals(served) -> None:
    client, tokens = served
    viewer = _auth(tokens["viewer"])
    unknown = client.post("/v1/models/nobody/predict", json={"inputs": ["x"]}, headers=viewer)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    no_production = client.post("/v1/models/fresh/predict", json={"inputs": ["x"]}, headers=viewer)
    assert no_production.status_code == 404 and "v1 candidate" in no_production.json()["detail"]
    assert client.post("/v1/models/fresh/predict", json={"inputs": ["x"], "version": "candidate"},
                       headers=viewer).status_code == 200
    assert client.post("/v1/models/topics/predict", json={"inputs": ["x"], "version": "v9"},
                       headers=viewer).status_code == 404
    lm = client.post("/v1/models/support-bot/predict", json={"inputs": ["hi"]}, headers=viewer)
    assert lm.status_code == 422 and "/v1/chat/completions" in lm.json()["detail"]
    assert client.post("/v1/models/topics/predict", json={"inputs": []}, headers=viewer).status_code == 422
    assert client.post("/v1/models/topics/predict", json={"inputs": ["x"]}).status_code == 401


def test_embeddings_in_openai_shape_equal_the_runs_own(served) -> None:
    import base64

    import numpy as np

    from tunelab.recipes.predict import load_predictor

    client, tokens = served
    viewer = _auth(tokens["viewer"])
    answer = client.post("/v1/models/faq/embeddings", json={"input": ["goal match", "vote tax"]}, headers=viewer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list" and body["model"] == "faq@v1" and body["usage"]["prompt_tokens"] > 0
    assert [d["index"] for d in body["data"]] == [0, 1] and all(d["object"] == "embedding" for d in body["data"])
    run = client.app.state.workspace.root / "runs"
    own = load_predictor(next(p for p in run.iterdir() if p.name.startswith("faq"))).predict(["goal match"])
    assert np.allclose(body["data"][0]["embedding"], own[0]["embedding"], atol=1e-6)
    packed = client.post("/v1/models/faq/embeddings", json={"input": "goal match", "encoding_format": "base64"},
                         headers=viewer).json()["data"][0]["embedding"]
    assert np.allclose(np.frombuffer(base64.b64decode(packed), dtype="<f4"), own[0]["embedding"], atol=1e-6)
    refused = client.post("/v1/models/topics/embeddings", json={"input": "x"}, headers=viewer)
    assert refused.status_code == 422 and "task: embedding" in refused.json()["detail"]
    assert client.post("/v1/models/faq/embeddings", json={"input": []}, headers=viewer).status_code == 422
    assert client.post("/v1/models/faq/embeddings", json={"input": "x"}).status_code == 401


def test_chat_completions_plain_and_streamed_agree(served) -> None:
    client, tokens = served
    viewer = _auth(tokens["viewer"])
    request = {"model": "support-bot", "messages": [{"role": "user", "content": "What color is item 3?"}],
               "temperature": 0, "max_tokens": 6}
    plain = client.post("/v1/chat/completions", json=request, headers=viewer)
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["object"] == "chat.completion" and body["model"] == "support-bot@v1"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    streamed = {**request, "model": "support-bot@v1", "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=streamed, headers=viewer) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "support-bot@v1" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == choice["message"]["content"]  # greedy: the stream and the plain answer agree

    sampled = {**request, "temperature": 0.9, "seed": 3, "max_tokens": 5}  # seeded sampling agrees too
    once = client.post("/v1/chat/completions", json=sampled, headers=viewer).json()["choices"][0]["message"]
    with client.stream("POST", "/v1/chat/completions", json={**sampled, "stream": True}, headers=viewer) as response:
        pieces = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                  if line.startswith("data: {")]
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in pieces) == once["content"]


def test_chat_completions_refusals(served) -> None:
    client, tokens = served
    viewer = _auth(tokens["viewer"])
    hello = [{"role": "user", "content": "hi"}]
    classifier = client.post("/v1/chat/completions", json={"model": "topics", "messages": hello}, headers=viewer)
    assert classifier.status_code == 422 and "/v1/models/topics/predict" in classifier.json()["detail"]
    assert client.post("/v1/chat/completions", json={"model": "nobody", "messages": hello},
                       headers=viewer).status_code == 404
    ends_with_answer = [*hello, {"role": "assistant", "content": "hello"}]
    assert client.post("/v1/chat/completions", json={"model": "support-bot", "messages": ends_with_answer},
                       headers=viewer).status_code == 422
    assert client.post("/v1/chat/completions", json={"model": "support-bot", "messages": hello, "n": 2},
                       headers=viewer).status_code == 422
    assert client.post("/v1/chat/completions", json={"model": "support-bot", "messages": hello}).status_code == 401


# ---- input hardening ---------------------------------------------------------------------------
def test_out_of_range_ids_and_oversized_fields_are_short_422s(api) -> None:
    client, tokens, _ws = api
    auth = _auth(tokens["engineer"])
    assert client.get("/v1/jobs/99999999999999999999999", headers=auth).status_code == 422
    assert client.get("/v1/jobs/0", headers=auth).status_code == 422
    assert client.get("/v1/jobs/12345", headers=auth).status_code == 404
    huge = "x" * 5_000_000
    answer = client.post("/v1/jobs", json={"config": huge}, headers=auth)
    assert answer.status_code == 422
    assert len(answer.content) < 2_000 and "5,000,002 characters" in answer.text  # repr adds the quotes


def test_a_runs_diagnosis_over_the_api(served) -> None:
    from tunelab.diagnose import diagnose

    client, tokens = served
    runs = client.get("/v1/runs", headers=_auth(tokens["viewer"])).json()
    run_id = next(r["id"] for r in runs if r["task"] == "text-classification")
    assert client.get(f"/v1/runs/{run_id}/diagnosis").status_code == 401
    response = client.get(f"/v1/runs/{run_id}/diagnosis", headers=_auth(tokens["viewer"]))
    assert response.status_code == 200
    body = response.json()
    folder = Path(client.get(f"/v1/runs/{run_id}", headers=_auth(tokens["viewer"])).json()["path"])
    assert body["run"] == run_id and body == json.loads((folder / "diagnosis.json").read_text())
    assert body == diagnose(folder) and body["status"] == "succeeded"
