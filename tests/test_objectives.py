"""The objective axis: objectives chosen in the config with a default per task, computed from the
output the task declares, and equal to the loss transformers computes itself; task capabilities
instead of task names; settings of another task refused; renamed keys still read."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
import yaml

from tunelab.config import config_schema, dump_config, load_config, validate
from tunelab.config.schema import CrossEntropyObjective
from tunelab.errors import ConfigError
from tunelab.objectives import OBJECTIVES, build_objective
from tunelab.tasks import TASKS

SRC = Path(__file__).resolve().parents[1] / "src" / "tunelab"


def minimal(task: str, **sections) -> dict:
    return {"task": task, "model": {"source": "tiny-random-bert"}, "data": {"train": "train.jsonl"}, **sections}


def resolved(raw: dict):
    config = validate(raw)
    TASKS.get(config.task)().validate_config(config)
    return config


@pytest.mark.parametrize("task, objective", [("causal-lm", "sft"), ("text-classification", "cross-entropy"),
                                             ("token-classification", "cross-entropy"),
                                             ("image-classification", "cross-entropy")])
def test_each_task_defaults_to_its_objective_and_writes_it_down(task, objective):
    config = resolved(minimal(task))
    assert config.objective.name == objective
    assert yaml.safe_load(dump_config(config))["objective"]["name"] == objective
    assert "label_smoothing" not in yaml.safe_load(dump_config(config))["train"]  # the deprecated key is gone


def test_an_objective_the_task_cannot_feed_is_refused_with_the_ones_it_can():
    with pytest.raises(ConfigError, match=r"objective 'cross-entropy' needs class-logits.*causal-lm") as err:
        resolved(minimal("causal-lm", objective={"name": "cross-entropy"}))
    assert err.value.fix == "use objective.name: dpo | grpo | kto | orpo | sft | simpo"
    with pytest.raises(ConfigError, match=r"objective.name: 'dpoo' is not a known value"):
        validate(minimal("causal-lm", objective={"name": "dpoo"}))


def test_every_objective_in_the_schema_is_registered():
    schema = config_schema()
    union = schema["properties"]["objective"]["anyOf"][0]
    names = set(union["discriminator"]["mapping"])
    assert names == set(OBJECTIVES.names())


def test_deprecated_label_smoothing_moves_into_the_objective(caplog):
    with caplog.at_level(logging.WARNING, logger="tunelab"):
        config = resolved(minimal("text-classification", train={"label_smoothing": 0.2}))
    assert config.objective == CrossEntropyObjective(label_smoothing=0.2)
    assert config.train.label_smoothing is None
    assert "objective.label_smoothing" in caplog.text
    # 0.0 was the default every earlier config.yaml wrote out: read silently, so reproduce stays quiet
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tunelab"):
        assert resolved(minimal("text-classification", train={"label_smoothing": 0.0})).objective.label_smoothing == 0
    assert not caplog.text
    with pytest.raises(ConfigError, match="train.label_smoothing is for classification tasks"):
        resolved(minimal("causal-lm", train={"label_smoothing": 0.1}))


def test_a_setting_of_another_task_is_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"lm.packing is a causal-lm setting; a text-classification run"):
        resolved(minimal("text-classification", lm={"packing": True}))
    with pytest.raises(ConfigError, match=r"image.augment is a image-classification / image-embedding setting; a token-classification"):
        resolved(minimal("token-classification", image={"augment": {"horizontal_flip": True}}))
    with pytest.raises(ConfigError, match=r"token_classification.stride .* causal-lm run"):
        resolved(minimal("causal-lm", token_classification={"stride": 8}))
    # a config.yaml written by an earlier run lists every section with its defaults: still valid
    config = resolved(minimal("text-classification"))
    again = resolved(yaml.safe_load(dump_config(config)) | {"lm": {"packing": False}})
    assert again.lm.packing is False


def test_the_old_tokens_section_still_works_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tunelab"):
        config = resolved(minimal("token-classification", tokens={"stride": 8}))
    assert config.token_classification.stride == 8
    assert "'tokens' section is now called 'token_classification'" in caplog.text
    with pytest.raises(ConfigError, match="both 'tokens' and 'token_classification'"):
        validate(minimal("token-classification", tokens={"stride": 8}, token_classification={"stride": 4}))


def _hf_parity(task_name: str, auto_class, batch: dict, labels_key: str = "labels"):
    from tunelab.models.tiny import tiny_bert_folder

    torch.manual_seed(0)
    model = auto_class.from_pretrained(tiny_bert_folder(), num_labels=3).eval()
    config = resolved(minimal(task_name))
    objective = build_objective(config, TASKS.get(task_name)())
    with torch.no_grad():
        ours = objective.loss_sum(model, batch) / objective.count_items(batch)
        theirs = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", labels_key)}).loss
    return float(ours), float(theirs)


def test_cross_entropy_equals_transformers_loss_for_sequence_and_token_classifiers():
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 90, (4, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    rows = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}
    ours, theirs = _hf_parity("text-classification", AutoModelForSequenceClassification, rows)
    assert ours == pytest.approx(theirs, rel=1e-6)
    tags = torch.randint(0, 3, (4, 7), generator=gen)
    tags[mask == 0] = -100
    tags[:, 0] = -100  # [CLS] and continuation sub-tokens carry no label
    ours, theirs = _hf_parity("token-classification", AutoModelForTokenClassification,
                              {"input_ids": ids, "attention_mask": mask, "labels": tags})
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_no_task_name_is_compared_outside_tasks_and_config():
    pattern = re.compile(r"""\.task\s*(==|!=|not in|in)\s*[("']|\btask\s*==\s*["']""")
    offenders = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py")
                 if p.relative_to(SRC).parts[0] not in ("tasks", "config")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
