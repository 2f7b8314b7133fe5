"""Config validation: unknown keys, wrong types, overrides, examples."""

from pathlib import Path

import pytest
import yaml

from tunelab.config import Config, config_schema, dump_config, load_config
from tunelab.errors import ConfigError
from tunelab.methods import METHODS
from tunelab.tasks import TASKS

EXAMPLES = sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.yaml"))
BASE = {"task": "text-classification", "model": {"source": "tiny-random-bert"}, "data": {"train": "t.jsonl"}}


def write(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def error_for(tmp_path: Path, body: dict, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, body), list(overrides))
    return str(info.value)


def test_defaults_fill_every_section(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.method.name == "full"
    assert config.train.learning_rate == 5e-5
    assert config.output.name == "job"  # run names default to the config file's name


def test_unknown_key_names_key_and_closest(tmp_path):
    message = error_for(tmp_path, {**BASE, "train": {"learnin_rate": 1e-4}})
    assert "train.learnin_rate" in message and "train.learning_rate" in message


def test_unknown_method_key_is_checked_per_method(tmp_path):
    message = error_for(tmp_path, {**BASE, "method": {"name": "lora", "rank": 8}})
    assert "method.rank" in message and "method.r" in message
    # `layers` belongs to freeze, not lora
    assert "method.layers" in error_for(tmp_path, {**BASE, "method": {"name": "lora", "layers": 2}})


def test_unknown_key_inside_a_list_item_names_the_item_and_its_keys(tmp_path):
    """A reward is one item of a list of tagged sections: the path keeps its index, drops the tag, and the
    valid keys are that reward's (they were an empty list)."""
    body = {**BASE, "task": "causal-lm", "objective": {"name": "grpo", "rewards": [{"name": "length", "min": 1}]}}
    message = error_for(tmp_path, body)
    assert "unknown key 'objective.rewards.0.min'" in message
    assert "valid keys: name, min_tokens, max_tokens, weight" in message


def test_unknown_method_name_suggests(tmp_path):
    message = error_for(tmp_path, {**BASE, "method": {"name": "lorra"}})
    assert "'lorra'" in message and "'lora'" in message


def test_wrong_type_names_key_path(tmp_path):
    message = error_for(tmp_path, {**BASE, "train": {"batch_size": "many"}})
    assert "train.batch_size" in message and "'many'" in message


def test_missing_required_key(tmp_path):
    assert "missing required key 'data'" in error_for(tmp_path, {"task": "x", "model": {"source": "m"}})


def test_overrides_parse_yaml_values(tmp_path):
    config = load_config(write(tmp_path, BASE), ["train.learning_rate=3e-5", "method.name=lora", "method.r=4",
                                                  "train.adam_betas=[0.8, 0.9]"])
    assert config.train.learning_rate == pytest.approx(3e-5)
    assert config.method.name == "lora" and config.method.r == 4
    assert config.train.adam_betas == (0.8, 0.9)


def test_bad_override_is_rejected(tmp_path):
    assert "section.key=value" in error_for(tmp_path, BASE, ["train.learning_rate"])
    assert "train.nope" in error_for(tmp_path, BASE, ["train.nope=1"])


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: x\nmodel:\n  source: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    config = load_config(write(tmp_path, {**BASE, "method": {"name": "dora", "r": 4}}))
    again = Config.model_validate(yaml.safe_load(dump_config(config)))
    assert again == config


def test_schema_documents_every_section():
    schema = config_schema()
    assert {"task", "model", "data", "method", "train", "eval", "output"} <= set(schema["properties"])
    assert "description" in schema["$defs"]["TrainConfig"]["properties"]["learning_rate"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load(path):
    config = load_config(path)
    task = TASKS.get(config.task)()
    task.validate_config(config)
    assert config.method.name in METHODS


def test_every_method_in_schema_is_registered():
    schema = config_schema()
    mapping = schema["properties"]["method"]["discriminator"]["mapping"]
    names = {schema["$defs"][ref.rsplit("/", 1)[-1]]["properties"]["name"]["const"] for ref in mapping.values()}
    assert names == set(mapping) == set(METHODS.names())
