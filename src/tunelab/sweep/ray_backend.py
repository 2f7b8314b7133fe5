"""Ray Tune backend: trials run in parallel on a Ray cluster (a local instance by default).

Sampling is the same Optuna TPE (or grid) over the same define-by-run space, through Ray's
`OptunaSearch`; a median-stopping scheduler plays the pruner on the intermediate validation values
each trial reports. Each trial is a function trainable calling `run_trial` inside a Ray worker, so
records, run folders and outputs are exactly those of the Optuna backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError
from tunelab.runs import RunFolder, now_iso
from tunelab.sweep.optuna_backend import OnTrial, make_sampler
from tunelab.sweep.trial import FAIL, PRUNED, SweepSetup, TrialRecord, find_run, run_trial, trial_name

log = logging.getLogger(__name__)

# Workers do not inherit the driver's environment on a remote cluster (nor, on a running local one,
# what the driver set after it started); these decide where the cache is and that nothing is downloaded.
PROPAGATED_ENV = ("TUNELAB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM")
RECORD_KEY = "tunelab_record"


class TrialFailed(Exception):
    """Raised in a worker for a failed trial so Ray (and its OptunaSearch) count it as an error; the
    message is the trial's one-line reason."""


def runtime_env() -> dict[str, Any]:
    """Ray runtime_env that carries the tunelab environment variables to every worker."""
    return {"env_vars": {k: os.environ[k] for k in PROPAGATED_ENV if k in os.environ}}


def start_ray(address: str | None) -> bool:
    """Connect to `address`, or start a local instance on every CPU; True when this call started it
    (and so should shut it down). An already initialized Ray (a notebook, a test) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    local = {} if address else {"num_cpus": os.cpu_count()}
    ray.init(address=address, runtime_env=runtime_env(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, **local)
    return True


def ray_trial_name(trial: Any) -> str:
    """trial-000, trial-001, ... in the order the searcher created the trials: Ray's experiment tag starts
    with that 1-based counter. (A stateful namer would not work: Ray deep-copies it for every trial.)"""
    counter = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return trial_name(int(counter) - 1) if counter.isdigit() else f"trial-{trial.trial_id}"


def trial_number(name: str) -> int:
    found = re.match(r"trial-(\d+)", name)
    if not found:
        raise ValueError(f"{name!r} is not a tunelab trial name")
    return int(found.group(1))


@dataclass(frozen=True)
class TrialResources:
    """What each trial asks Ray for: CPUs (its torch threads) and GPUs (Ray sets CUDA_VISIBLE_DEVICES
    per trial); `storage` is where Tune keeps its experiment state (a shared path or s3:// URI on a
    cluster; default: the sweep folder)."""

    cpus: int = 1
    gpus: float = 0.0
    storage: str | None = None


def check_cluster(resources: TrialResources) -> None:
    """A trial asking for more than any machine of the cluster has would wait forever: refuse it now."""
    import ray

    have = ray.cluster_resources()
    for name, wanted, flag in (("GPU", resources.gpus, "--trial-gpus"), ("CPU", resources.cpus, "--trial-cpus")):
        if wanted > have.get(name, 0.0):
            raise ConfigError(f"{flag} {wanted:g}: the Ray cluster has {have.get(name, 0.0):g} {name}(s), so no "
                              "trial could ever start", fix=f"lower {flag}, or connect --ray-address to a cluster "
                              f"with {name}s")


def run_ray(setup: SweepSetup, n_trials: int, *, seed: int | None = None, enqueue: list[dict[str, Any]] | None = None,
            address: str | None = None, on_trial: OnTrial | None = None,
            resources: TrialResources | None = None) -> list[TrialRecord]:
    """Run `n_trials` trials on Ray (1 CPU each unless `resources` says more) and return their records in
    trial order."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule
    from ray.tune.search.optuna import OptunaSearch

    resources = resources or TrialResources()
    # As many torch threads as the trial's CPUs: not a thread per core in every trial.
    setup = replace(setup, trial_overrides=[*setup.trial_overrides, f"train.num_threads={resources.cpus}"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune's new console output ignores verbose=0; the classic one honours it (our own lines show progress).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = start_ray(address)
    try:
        check_cluster(resources)
        objective = {"metric": setup.metric, "mode": "max" if setup.greater_is_better else "min"}
        searcher = OptunaSearch(space=setup.space.suggest, sampler=make_sampler(seed),
                                points_to_evaluate=list(enqueue) if enqueue else None, **objective)
        # Same policy as the Optuna backend: median stopping for a search, every point of a preset grid runs.
        scheduler = FIFOScheduler() if setup.space.grid else MedianStoppingRule(
            time_attr="training_iteration", grace_period=1, min_samples_required=2, **objective)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(ray_trial, setup=setup),
                                {"cpu": resources.cpus, "gpu": resources.gpus}),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n_trials,
                                        trial_name_creator=ray_trial_name, trial_dirname_creator=ray_trial_name),
            run_config=tune.RunConfig(name="ray", storage_path=resources.storage or str(setup.sweep_dir), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        with warnings.catch_warnings(), _quiet("ray.tune"):
            # OptunaSearch re-reports Tune's iteration counter to its study; Optuna warns about each repeat.
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            results = tuner.fit()
        records = sorted((_record(setup, result) for result in results), key=lambda r: r.number)
    finally:
        if started:
            ray.shutdown()
    for record in records:
        if on_trial:
            on_trial(record)
    return records


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence a logger for a while: Tune logs a failed trial's whole traceback, and each failure is
    already one line of ours (the traceback stays in the trial's Ray folder)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def ray_trial(config: dict[str, Any], setup: SweepSetup) -> None:
    """The function trainable, run in a Ray worker: one `run_trial`, intermediate values reported to Tune."""
    from ray import tune

    if os.path.isdir(setup.cwd):  # Tune starts trials in their own folder; the config's relative paths need ours
        os.chdir(setup.cwd)
    number = trial_number(tune.get_context().get_trial_name())

    def on_evaluation(step: int, value: float) -> None:
        tune.report({setup.metric: value, "step": step})  # the scheduler may stop this trial here

    sampled = {key: value for key, value in config.items() if key in setup.space.keys}
    record = run_trial(setup, number, sampled, on_evaluation)
    if record.state == FAIL:
        raise TrialFailed(record.error)
    # The last report carries the objective (what OptunaSearch records) and the whole record for the driver.
    tune.report({setup.metric: record.value, RECORD_KEY: json.dumps(record.to_dict())})


def _record(setup: SweepSetup, result: Any) -> TrialRecord:
    """A trial's record from its Ray result: the one the worker sent, or rebuilt for stopped/failed trials."""
    metrics = result.metrics or {}
    if isinstance(metrics.get(RECORD_KEY), str):
        return TrialRecord.from_dict(json.loads(metrics[RECORD_KEY]))
    number = trial_number(Path(result.path).name)
    params = {k: v for k, v in (result.config or {}).items() if k in setup.space.keys}
    record = TrialRecord(number=number, state=PRUNED, params=params, run=find_run(setup.trials_dir, number),
                         seconds=metrics.get("time_total_s"))
    if result.error is not None:
        record.state, record.error = FAIL, worker_error_line(result.error)
    elif record.run:  # stopped by the scheduler: the worker was killed before the recipe could mark it
        RunFolder.open(record.run).update(status="pruned", ended=now_iso())
    if metrics.get("step") is not None and metrics.get(setup.metric) is not None:
        record.intermediate = [[metrics["step"], metrics[setup.metric]]]
    return record


def worker_error_line(error: BaseException, raised: type[BaseException] = TrialFailed) -> str:
    """The worker's own one-line reason (the message of the `raised` it raised) out of Ray's wrapping of
    its exception (a traceback); sweeps' trials and `tunelab launch --backend ray` workers."""
    lines = str(error).strip().splitlines()
    named = [line for line in lines if f"{raised.__name__}: " in line]
    if named:
        return named[-1].split(f"{raised.__name__}: ", 1)[1].strip()
    return lines[-1].strip() if lines else type(error).__name__
