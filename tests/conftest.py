"""Shared fixtures: an isolated tunelab cache, offline hubs, and small synthetic text data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tunelab.server.runner import free_port  # noqa: F401  (the server tests import it from here)

WORDS = {
    "sport": ["goal", "match", "team", "coach", "league", "score", "striker", "cup"],
    "tech": ["chip", "software", "phone", "data", "cloud", "robot", "laptop", "code"],
    "politics": ["vote", "minister", "party", "election", "law", "senate", "policy", "tax"],
}
FILLER = ["the", "a", "today", "new", "big", "after", "said", "with"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One tunelab cache per test session (tiny models are built once), and no network."""
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("tunelab-cache")
    mp.setenv("TUNELAB_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    yield
    mp.undo()


def synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(WORDS)[i % len(WORDS)]
        words = rng.choices(WORDS[label], k=rng.randint(2, 6)) + rng.choices(FILLER, k=rng.randint(1, 6))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(path: Path, body: dict, sections: dict) -> Path:
    """Write `body`, each of `sections` merged into its section, as YAML at `path`."""
    for section, values in sections.items():
        body[section] = {**body.get(section, {}), **values}
    path.write_text(yaml.safe_dump(body))
    return path


def train_losses(run) -> list[float]:
    """The loss of each logged training step of a run (validation lines carry no learning rate)."""
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "lr" in r]


@pytest.fixture
def text_data(tmp_path: Path) -> dict[str, Path]:
    """Train/validation/test jsonl files for a 3-topic problem a tiny model can learn."""
    return {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", synthetic_rows(96, seed=1)),
        "validation": write_jsonl(tmp_path / "data" / "validation.jsonl", synthetic_rows(24, seed=2)),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", synthetic_rows(24, seed=3)),
    }


@pytest.fixture
def make_config(tmp_path: Path, text_data: dict[str, Path]):
    """Build a tiny-model config dict, write it, return its path; keyword sections override defaults."""

    def make(name: str = "tiny", **sections) -> Path:
        body = {
            "task": "text-classification",
            "model": {"source": "tiny-random-bert"},
            "data": {k: str(v) for k, v in text_data.items()},
            "method": {"name": "full"},
            "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 64, "seed": 0,
                      "log_every": 1},
            "eval": {"metric": "macro_f1"},
            "output": {"dir": str(tmp_path / "runs")},
        }
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(body.get(section), dict):
                body[section] = {**body[section], **values}
            else:
                body[section] = values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return make


# ---- workspace database backends --------------------------------------------------------------
# SQLite always; PostgreSQL when TUNELAB_TEST_POSTGRES_URL names a server (CI starts one with
# scripts/postgres.sh and sets TUNELAB_REQUIRE_POSTGRES=1, which turns a missing server into a failure).
@pytest.fixture
def postgres_url():
    """The URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    import os
    import secrets

    import sqlalchemy as sa

    url = os.environ.get("TUNELAB_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("TUNELAB_REQUIRE_POSTGRES") == "1":
            pytest.fail("TUNELAB_REQUIRE_POSTGRES=1 but TUNELAB_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server (set TUNELAB_TEST_POSTGRES_URL; CI does)")
    name = f"tunelab_{secrets.token_hex(6)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest):
    """None (the default SQLite file) or the URL of a fresh, empty PostgreSQL database."""
    yield None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def workspace(tmp_path: Path, database_url, monkeypatch: pytest.MonkeyPatch):
    """A workspace in tmp_path on each backend; the cwd is its root, as after `tunelab init`."""
    from tunelab.workspace import Workspace

    monkeypatch.chdir(tmp_path)
    if database_url:
        monkeypatch.setenv("TUNELAB_DATABASE_URL", database_url)
    ws = Workspace.init(tmp_path, database_url=database_url)
    yield ws
    ws.close()


# ---- a real `tunelab serve` process -------------------------------------------------------------


def start_server(root: Path, port: int):
    """`tunelab serve` on the workspace at `root` in its own process group, waited for until it answers;
    its stderr goes to root/serve-<port>.log."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    env = {**os.environ, "TUNELAB_WORKSPACE": str(root)}
    log = root / f"serve-{port}.log"
    with open(log, "ab") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", "--port", str(port)], cwd=root,
                                   env=env, stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not start")


def stop_server(process, sig=None) -> None:
    import os
    import signal
    import subprocess

    try:
        os.killpg(process.pid, sig or signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
