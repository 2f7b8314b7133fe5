"""`tunelab sweep`: search spaces, Optuna trials with pruning, the layers preset, Ray Tune, and the outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from tunelab.config import load_config
from tunelab.errors import ConfigError
from tunelab.recipes.sweep import sweep
from tunelab.sweep.space import load_space, parse_param, yaml_value

ROOT = Path(__file__).resolve().parent.parent
LR = "train.learning_rate"
WARMUP = "train.warmup_ratio"


@pytest.fixture
def job(make_config):
    """The tiny config, evaluated every 4 steps (6 evaluations) so the pruner has intermediate values."""
    def make(name: str = "job", **sections) -> Path:
        train = {"num_threads": 1, **sections.pop("train", {})}
        evaluation = {"metric": "loss", "every_steps": 4, **sections.pop("eval", {})}
        return make_config(name, train=train, eval=evaluation, **sections)

    return make


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space))
    return path


def read_trials(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "trials.jsonl").read_text().splitlines()]


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `tunelab ARGS` in this process; returns (exit code, stdout, stderr). The tunelab logger is
    restored afterwards, since the CLI reconfigures it for the whole process."""
    from tunelab.cli.main import main

    logger = logging.getLogger("tunelab")
    saved = (list(logger.handlers), logger.level, logger.propagate)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["tunelab", *args])
        monkeypatch.setenv("COLUMNS", "200")
        code = 0
        try:
            main()
        except SystemExit as exit_info:
            code = exit_info.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run
    logger.handlers[:], logger.level, logger.propagate = saved


# ---- the space file ------------------------------------------------------------------------------


def test_space_specs_parse_and_values_round_trip_through_overrides():
    assert yaml.safe_load(yaml_value(1e-05)) == 1e-05  # PyYAML reads '1e-05' as a string; we never write that
    assert yaml.safe_load(yaml_value({"name": "lora", "r": 8})) == {"name": "lora", "r": 8}
    shorthand = parse_param("train.batch_size", [8, 16], "space.yaml")
    assert shorthand.kind == "categorical" and shorthand.labels == (8, 16)
    method = parse_param("method", {"type": "categorical", "choices": [{"name": "full"}, {"name": "lora", "r": 4}]},
                         "space.yaml")
    assert method.labels == ("{name: full}", "{name: lora, r: 4}")  # what Optuna stores: scalars only
    assert method.overrides("{name: lora, r: 4}") == ["method={name: lora, r: 4}"]


@pytest.mark.parametrize("spec, expected", [
    ({"type": "float", "high": 1.0}, "missing 'low'"),
    ({"type": "categorical", "choices": []}, "non-empty 'choices'"),
    ({"type": "int", "low": 1, "high": 8, "stepp": 2}, "did you mean 'step'?"),
    ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
    ({"type": "flot", "low": 0.0, "high": 1.0}, "did you mean 'float'?"),
])
def test_bad_specs_name_the_file_and_key(spec, expected):
    with pytest.raises(ConfigError) as err:
        parse_param("train.warmup_ratio", spec, "space.yaml")
    assert str(err.value).startswith("space.yaml: train.warmup_ratio: ") and expected in str(err.value)


def test_example_space_fits_its_config():
    from tunelab.sweep.space import check_space

    space = load_space(ROOT / "examples" / "spaces" / "news-topics.yaml")
    check_space(space, ROOT / "examples" / "news-topics.yaml", [])
    assert LR in space.keys


@pytest.mark.parametrize("space, expected", [
    ({"train.learnin_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2}},
     "space.yaml: unknown key 'train.learnin_rate' (did you mean 'train.learning_rate'?)"),
    ({LR: {"type": "float", "low": 1.0e-2, "high": 1.0e-4}},
     "space.yaml: train.learning_rate: low (0.01) must be below high (0.0001)"),
])
def test_space_errors_are_one_line_before_any_sweep_folder(job, tmp_path, cli, space, expected):
    space_file = write_space(tmp_path / "space.yaml", space)
    out = tmp_path / "sweep"
    code, _, err = cli("sweep", str(job()), "--space", str(space_file), "--trials", "2", "--out", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and lines[0].endswith(expected) and str(tmp_path) in lines[0]
    assert not out.exists()


# ---- Optuna ----------------------------------------------------------------------------------------


def test_optuna_sweep_prunes_a_bad_trial_and_writes_the_outputs(job, tmp_path):
    config = job()
    space = write_space(tmp_path / "space.yaml", {LR: {"type": "float", "low": 1.0e-4, "high": 10.0, "log": True},
                                                  WARMUP: {"type": "float", "low": 0.0, "high": 0.3}})
    # Two sensible trials first (the median pruner's startup trials), then an absurd learning rate whose
    # validation loss at the first evaluation is far above their median: pruned there, deterministically.
    enqueue = [{LR: 1e-3, WARMUP: 0.0}, {LR: 3e-3, WARMUP: 0.1}, {LR: 5.0, WARMUP: 0.0}]
    outcome = sweep(config, space=space, trials=3, out=tmp_path / "sweep", enqueue=enqueue)

    rows = read_trials(outcome.sweep_dir)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = rows[2]
    assert len(pruned["intermediate"]) == 1 and pruned["trainable_params"] is None
    assert json.loads((Path(pruned["run"]) / "run.json").read_text())["status"] == "pruned"
    assert all(Path(r["run"]).parent == outcome.sweep_dir / "trials" for r in rows)
    assert Path(rows[0]["run"]).name.startswith("trial-000-")

    best = min(rows[:2], key=lambda r: r["value"])  # loss: lower is better
    summary = json.loads((outcome.sweep_dir / "sweep.json").read_text())
    assert summary["direction"] == "minimize" and summary["best"]["number"] == best["number"]
    assert summary["counts"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0}
    resolved = load_config(outcome.sweep_dir / "best.yaml")
    assert resolved.train.learning_rate == best["params"][LR] and resolved.train.warmup_ratio == best["params"][WARMUP]
    original = load_config(config)
    assert resolved.output == original.output  # trains into the config's own runs folder again
    assert (outcome.sweep_dir / "importance.png").stat().st_size > 0
    assert set(summary["importance"]) == {LR, WARMUP}
    assert (outcome.sweep_dir / "study.db").is_file()
    # Same data, tokenizer and max_length: the second trial reads the tokenized splits from the cache.
    hits = json.loads((Path(rows[1]["run"]) / "data.json").read_text())["cache_hits"]
    assert hits and all(hits.values())


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(job, tmp_path):
    config = job(method={"name": "freeze"})
    space = write_space(tmp_path / "space.yaml", {"method.train_last": {"type": "int", "low": 0, "high": 5}})
    outcome = sweep(config, space=space, trials=2, out=tmp_path / "sweep",
                    enqueue=[{"method.train_last": 5}, {"method.train_last": 1}])
    failed, done = read_trials(outcome.sweep_dir)
    assert failed["state"] == "FAIL" and failed["error"].startswith("method.train_last is 5 but the model has 2 blocks")
    assert "\n" not in failed["error"]
    assert done["state"] == "COMPLETE" and outcome.summary["best"]["number"] == 1
    assert "one parameter" in outcome.summary["importance_note"]


# ---- the layers preset -----------------------------------------------------------------------------


def test_layers_preset_runs_the_grid_and_recommends(job, tmp_path, cli):
    out = tmp_path / "sweep"
    code, printed, err = cli("sweep", str(job()), "--preset", "layers", "--out", str(out), "--tolerance", "0.05")
    assert code == 0, err
    rows = read_trials(out)
    labels = [r["params"]["method"] for r in rows]
    # tiny-random-bert has 2 blocks: head only, last 1, last 2, then LoRA ranks at 10x the learning
    # rate; every point runs, in order
    lr = load_config(job()).train.learning_rate
    lora = [f"lora r{r} (lr {10 * lr:.0e})" for r in (4, 8, 16)]
    assert labels == ["last 0", "last 1", "last 2", *lora]
    assert all(r["state"] == "COMPLETE" for r in rows)
    rates = [load_config(Path(r["run"]) / "config.yaml").train.learning_rate for r in rows]
    assert rates == pytest.approx([lr] * 3 + [10 * lr] * 3)
    params = {r["params"]["method"]: r["trainable_params"] for r in rows}
    assert params["last 0"] < params["last 1"] < params["last 2"] and params[lora[0]] < params[lora[2]]
    assert (out / "layers.png").stat().st_size > 0

    summary = json.loads((out / "sweep.json").read_text())
    rec, best = summary["recommendation"], summary["best"]
    assert summary["preset"] == "layers" and summary["blocks"] == 2
    assert rec["trainable_params"] <= params[best["params"]["method"]]
    assert abs(rec["value"] - best["value"]) <= 0.05 and rec["best"]["number"] == best["number"]
    assert "recommended: " + rec["label"] in printed and "best.yaml" in printed
    method = load_config(out / "best.yaml").method
    assert best["params"]["method"].startswith(
        f"last {method.train_last}" if method.name == "freeze" else f"lora r{method.r} ")


# ---- Ray Tune --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_sweep_runs_trials_in_workers(job, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from tunelab.sweep.ray_backend import runtime_env

    # Relative data paths and the default sweep folder: workers start elsewhere and must still find both.
    monkeypatch.chdir(tmp_path)
    config = job("rayjob", train={"num_threads": 2}, data={split: f"data/{split}.jsonl" for split in ("train", "validation", "test")})
    space = write_space(tmp_path / "space.yaml", {LR: {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
                                                  WARMUP: {"type": "float", "low": 0.0, "high": 0.3}})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env())
    try:
        outcome = sweep(config, space=space, trials=2, backend="ray", ray_storage=str(tmp_path / "ray-store"))
        # a trial asking for a GPU the cluster lacks would wait forever: refused before any trial
        with pytest.raises(ConfigError, match=r"--trial-gpus 1: the Ray cluster has 0 GPU\(s\)"):
            sweep(config, space=space, trials=1, backend="ray", trial_gpus=1)
    finally:
        ray.shutdown()

    assert outcome.sweep_dir.parent == tmp_path / "sweeps" and outcome.sweep_dir.name.startswith("rayjob-")
    rows = read_trials(outcome.sweep_dir)
    assert [r["number"] for r in rows] == [0, 1]
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows) and rows[0]["state"] == "COMPLETE"
    assert all(Path(r["run"]).parent == outcome.sweep_dir / "trials" for r in rows)
    assert (tmp_path / "ray-store" / "ray").is_dir()  # Ray's experiment state where --ray-storage said
    summary = json.loads((outcome.sweep_dir / "sweep.json").read_text())
    assert summary["backend"] == "ray"
    resolved = load_config(outcome.sweep_dir / "best.yaml")
    assert resolved.train.learning_rate == summary["best"]["params"][LR]
    assert resolved.train.num_threads == 2  # the config's own value: Ray trials ran with 1 thread each
