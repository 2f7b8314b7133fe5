"""Hyperparameter sweeps (`tunelab sweep`): a search space or preset, trials run by Optuna or Ray Tune.

space.py      the space file: parse, validate against the config, samples -> dotted overrides
trial.py      one trial, shared by the backends: config -> train recipe -> TrialRecord
optuna_backend.py / ray_backend.py   which values to try and when to stop a trial early
presets.py    built-in sweeps (`layers`: which layers to train) and their recommendation
results.py    trials.jsonl, best.yaml, sweep.json and the plots, from the records alone
"""

from tunelab.sweep.space import Param, SearchSpace, load_space
from tunelab.sweep.trial import COMPLETE, FAIL, PRUNED, TrialRecord

__all__ = ["COMPLETE", "FAIL", "PRUNED", "Param", "SearchSpace", "TrialRecord", "load_space"]
