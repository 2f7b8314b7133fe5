"""Shared fixtures: an isolated tunelab cache, offline hubs, and small synthetic text data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

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
