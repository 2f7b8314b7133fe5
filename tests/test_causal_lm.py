"""The causal-lm task on the tiny random Llama: loss masks token by token, template round trips,
packing parity, golden loss curves, pre-flight refusals, base vs tuned evaluation, inference."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import write_jsonl
from tunelab.config import load_config
from tunelab.config.schema import SftObjective
from tunelab.errors import ConfigError, DataError
from tunelab.models import load_tokenizer, resolve_model
from tunelab.models.tiny import tiny_llama_folder
from tunelab.objectives.base import IGNORE
from tunelab.objectives.sft import SFT
from tunelab.tasks.causal_lm import CausalLM
from tunelab.tasks.lm.chat import prompt_ids, render_chat
from tunelab.tasks.lm.packing import best_fit_decreasing, pack_rows
from tunelab.tasks.lm.render import to_labels

COLORS = ["red", "blue", "green", "cyan", "pink", "gray", "gold", "teal"]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi?"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Colour?"},
    {"role": "assistant", "content": "Blué."},  # a two-byte character: two byte tokens
]
# Golden per-step training losses (tiny llama, lora r=4, lr 1e-2, 6 steps, fp32, seed 0); see test below.
GOLDEN_UNPACKED = [5.549598, 5.527295, 5.515411, 5.493351, 5.484950, 5.459157]
GOLDEN_PACKED = [5.547583, 5.530080, 5.519769, 5.493368, 5.482554, 5.458465]


def chat_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.sample(COLORS, 2)
        rows.append({"messages": [
            {"role": "user", "content": f"What color is item {i}?"},
            {"role": "assistant", "content": f"Item {i} is {a}."},
            {"role": "user", "content": "And its twin?"},
            {"role": "assistant", "content": f"The twin is {b}."},
        ]})
    return rows


@pytest.fixture
def lm_config(tmp_path: Path):
    """Write a causal-lm config on synthetic chat data; keyword sections override the defaults."""
    data = write_jsonl(tmp_path / "data" / "chat.jsonl", chat_rows(80, seed=1))

    def make(name: str = "lm", **sections) -> Path:
        body = {
            "task": "causal-lm",
            "model": {"source": "tiny-random-llama"},
            "data": {"train": str(data)},
            "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-2, "max_length": 128, "seed": 0,
                      "log_every": 1},
            "eval": {"generate_samples": 3},
            "generation": {"max_new_tokens": 8},
            "output": {"dir": str(tmp_path / "runs")},
        }
        for section, values in sections.items():
            merge = isinstance(values, dict) and section != "method"  # a method's keys depend on its name
            body[section] = {**body.get(section, {}), **values} if merge else values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return make


def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_folder())


# ---- loss masks ------------------------------------------------------------------------------
def expected_mask(text: str, tokenizer, spans: list[str]) -> list[bool]:
    """Byte-level tokenizer: one token per byte (specials aside), so a char span maps to its bytes."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    chars = np.zeros(len(text), dtype=bool)
    start = 0
    for span in spans:
        at = text.index(span, start)
        chars[at : at + len(span)] = True
        start = at + len(span)
    return [bool(chars[s]) for s, _ in enc["offset_mapping"]]


@pytest.mark.parametrize("train_on", ["assistant", "last-assistant", "all"])
def test_mask_token_by_token_on_a_multi_turn_sample(train_on: str) -> None:
    tokenizer = tiny_tokenizer()
    encoded = render_chat(CONVERSATION, tokenizer, train_on)
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    # The tiny template writes "<|assistant|>\n{answer}</s>\n"; the answer, </s> and newline are trained.
    answers = {"assistant": ["Hello.</s>\n", "Blué.</s>\n"], "last-assistant": ["Blué.</s>\n"], "all": [text]}
    assert encoded.trained == expected_mask(text, tokenizer, answers[train_on])
    trained_text = tokenizer.decode([t for t, k in zip(encoded.input_ids, encoded.trained) if k])
    assert trained_text == "".join(answers[train_on])
    labels = to_labels(encoded)
    assert labels[0] == IGNORE and all((lab == IGNORE) != k for lab, k in zip(labels[1:], encoded.trained[1:]))


def test_prompt_at_inference_is_the_training_prefix() -> None:
    """chat renders the prompt exactly as training rendered the tokens before the last answer."""
    tokenizer = tiny_tokenizer()
    encoded = render_chat(CONVERSATION, tokenizer, "last-assistant")
    prompt = prompt_ids(tokenizer, CONVERSATION[:-1])
    first_trained = encoded.trained.index(True)
    assert encoded.input_ids[:first_trained] == prompt


def test_named_template_adds_its_tokens_and_ends_turns_with_them(lm_config) -> None:
    config = load_config(lm_config(lm={"template": "chatml"}))
    task = CausalLM()
    task.validate_config(config)
    resolved = resolve_model(config.model)
    tokenizer = load_tokenizer(resolved, config.model)
    before = len(tokenizer)
    encoded, info, _ = task.encode_splits(config, tokenizer, resolved)
    assert info["template"] == {"name": "chatml", "end_of_turn": "<|im_end|>",
                                "added_tokens": ["<|im_start|>", "<|im_end|>"]}
    assert len(tokenizer) == before + 2
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    row = encoded["train"][0]
    assert row["input_ids"].count(end) == 4  # every turn ends with it, as a single token
    assert row["labels"].count(end) == 2  # trained after the two answers, not after the user turns
    assert task.added_token_ids() == tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])


def test_prompt_completion_trains_completion_and_eos(tmp_path: Path, lm_config) -> None:
    data = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Q{i}: 2+2=", "completion": " 4"} for i in range(20)])
    config = load_config(lm_config(data={"train": str(data)}))
    task = CausalLM()
    task.validate_config(config)
    resolved = resolve_model(config.model)
    tokenizer = load_tokenizer(resolved, config.model)
    encoded, info, _ = task.encode_splits(config, tokenizer, resolved)
    row = encoded["train"][0]
    trained = [t for t in row["labels"] if t != IGNORE]
    assert tokenizer.decode(trained) == " 4</s>"
    assert "template" not in info  # plain text, no chat template


def test_raw_text_is_chunked_into_max_length_blocks(tmp_path: Path, lm_config) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x" * 150)
    (folder / "b.md").write_text("# title\n\nshort")
    config = load_config(lm_config(data={"train": str(folder), "validation": str(folder), "test": str(folder)},
                                   train={"max_length": 64}))
    task = CausalLM()
    resolved = resolve_model(config.model)
    tokenizer = load_tokenizer(resolved, config.model)
    encoded, info, _ = task.encode_splits(config, tokenizer, resolved)
    # a.txt: <s> + 150 bytes + </s> = 152 tokens -> 64 + 64 + 24; b.md: 1 + 14 + 1 = 16 tokens.
    assert sorted(encoded["train"]["length"]) == [16, 24, 64, 64]
    assert info["stats"]["train"]["trained_fraction"] > 0.97  # only each block's first token is not a target


# ---- packing ---------------------------------------------------------------------------------
def test_best_fit_decreasing_fills_bins_without_overflow() -> None:
    lengths = [7, 5, 4, 3, 3, 2, 1, 9]
    bins = best_fit_decreasing(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # total 34 -> at least 4 bins of 10; BFD reaches it
    assert bins[0] == [7, 6]  # 9 first, then the 1 that fits it best


def test_packed_rows_give_the_same_per_sample_losses_as_unpacked() -> None:
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder(), dtype=torch.float32).eval()
    task = CausalLM()
    task.tokenizer, task.pad_id = tokenizer, tokenizer.pad_token_id
    task._install_selector(model)
    samples = [render_chat(r["messages"], tokenizer, "assistant") for r in chat_rows(5, seed=3)]
    rows = {"input_ids": [s.input_ids for s in samples], "labels": [to_labels(s) for s in samples]}

    alone = []
    for ids, labels in zip(rows["input_ids"], rows["labels"]):
        with torch.no_grad():
            out = task.eval_step(model, task.collate({"input_ids": [ids], "labels": [labels]}))
        alone.append(float(out["loss_sum"][0]))

    packed = pack_rows(rows, capacity=300)
    assert len(packed["input_ids"]) < len(samples)  # several samples share a row
    batch = task.collate({"input_ids": packed["input_ids"], "labels": packed["labels"],
                          "position_ids": packed["position_ids"]})
    with torch.no_grad():
        hidden_mask = batch["targets"] != IGNORE
        task._select = hidden_mask
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        task._select = None
    losses = torch.nn.functional.cross_entropy(logits, batch["targets"][hidden_mask], reduction="none")
    # Split the per-token losses back into samples: each sample's targets are contiguous in its row.
    order = [i for b in best_fit_decreasing([len(x) for x in rows["input_ids"]], 300) for i in b]
    per_sample, at = {}, 0
    for i in order:
        n = sum(1 for t in rows["labels"][i][1:] if t != IGNORE)
        per_sample[i] = float(losses[at : at + n].sum())
        at += n
    assert at == len(losses)
    for i, value in enumerate(alone):
        assert per_sample[i] == pytest.approx(value, rel=1e-5, abs=1e-5)


def test_packing_isolation_check_rejects_cross_sample_attention(monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from tunelab.errors import TrainingError
    from tunelab.tasks.causal_lm import check_packing_isolation

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder(), dtype=torch.float32)
    check_packing_isolation(model)  # transformers builds the block-diagonal mask: passes
    monkeypatch.setattr("transformers.masking_utils.find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(TrainingError, match="attend to each other"):
        check_packing_isolation(model)


# ---- training --------------------------------------------------------------------------------
@pytest.mark.parametrize(("packing", "golden"), [(False, GOLDEN_UNPACKED), (True, GOLDEN_PACKED)])
def test_golden_loss_curve(lm_config, packing: bool, golden: list[float]) -> None:
    from tunelab.recipes.train import train

    config = load_config(lm_config(lm={"packing": packing}, eval={"base": False, "generate_samples": 0}))
    outcome = train(config)
    lines = [json.loads(x) for x in (outcome.run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x and "split" not in x]
    assert losses == pytest.approx(golden, abs=2e-5), losses


def test_run_reports_base_vs_tuned_and_saves_generations(lm_config) -> None:
    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(train={"max_steps": 12})))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["base"]["validation"]["loss"] > results["validation"]["loss"]
    assert results["gain"]["validation"]["loss"] == pytest.approx(
        results["validation"]["loss"] - results["base"]["validation"]["loss"])
    assert set(results["generation"]) == {"exact_match", "rouge_l", "samples"}
    rows = [json.loads(x) for x in (outcome.run.path / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"prompt", "reference", "base", "tuned"} <= set(r) for r in rows)
    assert rows[0]["prompt"][-1]["role"] == "user"
    assert (outcome.run.path / "model" / "chat_template.jinja").is_file()


def test_added_tokens_train_only_their_embedding_rows(lm_config) -> None:
    from safetensors.torch import load_file

    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(lm={"template": "chatml"}, eval={"base": False, "generate_samples": 0})))
    tokenizer = tiny_tokenizer()
    tuned = load_file(outcome.run.path / "model" / "model.safetensors")["model.embed_tokens.weight"]
    base = load_file(tiny_llama_folder() / "model.safetensors")["model.embed_tokens.weight"]
    assert tuned.shape[0] == base.shape[0] + 2
    assert torch.equal(tuned[: len(tokenizer)], base)  # old rows untouched (LoRA + trainable new rows)
    run = json.loads((outcome.run.path / "run.json").read_text())
    assert run["trainable_params"] > 0
    generation = json.loads((outcome.run.path / "model" / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == len(tokenizer) + 1  # <|im_end|> stops generation


# ---- pre-flight refusals ---------------------------------------------------------------------
def test_no_trainable_token_is_refused(lm_config) -> None:
    from tunelab.recipes.train import train

    config = load_config(lm_config(train={"max_length": 8}))
    with pytest.raises(DataError, match="no token is trained"):
        train(config)
    assert not Path(config.output.dir).exists()


def test_end_of_turn_never_trained_is_refused(tmp_path: Path, lm_config) -> None:
    from tunelab.recipes.train import train

    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(DataError, match="end-of-turn token '</s>' is never trained"):
        train(load_config(lm_config(lm={"template": str(template)})))


def test_missing_template_is_refused(tmp_path: Path, lm_config) -> None:
    from tunelab.recipes.train import train

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_llama_folder(), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match="has no chat template"):
        train(load_config(lm_config(model={"source": str(folder)})))


def test_qlora_is_refused_on_cpu(lm_config) -> None:
    from tunelab.recipes.train import train

    config = load_config(lm_config(method={"name": "qlora"}))
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        train(config)
    assert not Path(config.output.dir).exists()


# ---- inference -------------------------------------------------------------------------------
def test_generate_file_and_chat_prompts_match_training(tmp_path: Path, lm_config) -> None:
    from tunelab.recipes.generate import generate_file, load_lm, settings, stream_reply
    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(eval={"base": False, "generate_samples": 0})))
    lm = load_lm(outcome.run.path)
    conversation = chat_rows(1, seed=9)[0]["messages"]
    trained = render_chat(conversation, lm.tokenizer, "last-assistant")
    prompt = lm.task.encode_prompt({"messages": conversation[:-1]}, lm.config)
    assert trained.input_ids[: trained.trained.index(True)] == prompt

    source = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What color is item 3?"},
                                                      {"messages": conversation[:-1]}])
    target = tmp_path / "out.jsonl"
    cfg = settings(lm.config, max_new_tokens=5)
    assert generate_file(lm, source, target, cfg) == 2
    rows = [json.loads(x) for x in target.read_text().splitlines()]
    assert [r.get("prompt") for r in rows] == ["What color is item 3?", None]
    assert all(isinstance(r["output"], str) for r in rows)
    streamed = "".join(stream_reply(lm, {"messages": conversation[:-1]}, cfg)).strip()
    assert streamed == rows[1]["output"]  # greedy: streaming and batch generation agree


# ---- export ----------------------------------------------------------------------------------
def test_export_merged_adapter_and_gguf_from_a_run(tmp_path: Path, lm_config) -> None:
    from transformers import AutoModelForCausalLM

    from tunelab.errors import ExportError
    from tunelab.recipes.export import export_run
    from tunelab.recipes.train import train

    run = train(load_config(lm_config(eval={"base": False, "generate_samples": 0}))).run.path
    merged = export_run(run, "merged")
    adapter = export_run(run, "adapter")
    gguf = export_run(run, "gguf", dtype="f32")
    assert (Path(merged["path"]) / "model.safetensors").is_file()
    assert (Path(adapter["path"]) / "adapter_config.json").is_file()
    with pytest.raises(ExportError, match="already exists"):
        export_run(run, "merged")

    ids = torch.tensor([[1, 60, 61, 62, 63, 64]])
    reference = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    path = Path(gguf["path"])
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=str(path)).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, reference(ids).logits, atol=1e-5)


def test_gguf_export_of_a_classifier_is_refused_without_a_file(make_config) -> None:
    from tunelab.errors import ExportError
    from tunelab.recipes.export import export_run
    from tunelab.recipes.train import train

    run = train(load_config(make_config(train={"max_steps": 1}))).run.path
    with pytest.raises(ExportError, match="BertForSequenceClassification"):
        export_run(run, "gguf")
    assert not any((run / "exports").glob("*.gguf"))
    assert not any(p.name.startswith(".") for p in (run / "exports").iterdir())


def test_eval_command_scores_new_conversations_with_the_saved_template(tmp_path: Path, lm_config) -> None:
    from tunelab.recipes.evaluate import evaluate_run
    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(lm={"template": "chatml"}, eval={"base": False, "generate_samples": 0})))
    held_out = write_jsonl(tmp_path / "new.jsonl", chat_rows(10, seed=5))
    metrics, written = evaluate_run(outcome.run.path, held_out)
    assert written.is_file() and metrics["tokens"] > 0
    assert metrics["loss"] == pytest.approx(np.log(metrics["perplexity"]))
    with pytest.raises(DataError, match="unlike the run's training data"):
        evaluate_run(outcome.run.path, write_jsonl(tmp_path / "raw.jsonl", [{"text": "plain words"}] * 3))


def test_freeze_method_trains_only_the_top_layer_of_a_causal_lm(lm_config) -> None:
    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(method={"name": "freeze", "layers": 1},
                                          eval={"base": False, "generate_samples": 0})))
    record = json.loads((outcome.run.path / "run.json").read_text())
    assert 0 < record["trainable_params"] < record["total_params"]
    from safetensors.torch import load_file

    tuned = load_file(outcome.run.path / "model" / "model.safetensors")
    base = load_file(tiny_llama_folder() / "model.safetensors")
    assert torch.equal(tuned["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(tuned["model.layers.1.mlp.up_proj.weight"], base["model.layers.1.mlp.up_proj.weight"])


def test_masked_loss_matches_transformers_own_loss() -> None:
    """Our summed loss over trained tokens / their count equals the mean loss transformers computes
    from the same labels (its own shift and ignore_index), on an unpacked padded batch."""
    ours, theirs = sft_and_transformers_loss(lambda model: model)
    assert ours == pytest.approx(theirs, rel=1e-6)


def sft_and_transformers_loss(wrap) -> tuple[float, float]:
    """(our SFT loss, the loss the model computes itself from HF labels) on an unpacked padded chat
    batch of the tiny Llama, after `wrap` (e.g. a PEFT wrapper) is applied to it."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder(), dtype=torch.float32).eval()
    task = CausalLM()
    task.tokenizer, task.pad_id = tokenizer, tokenizer.pad_token_id
    task._install_selector(model)
    model = wrap(model).eval()
    samples = [render_chat(r["messages"], tokenizer, "assistant") for r in chat_rows(4, seed=4)]
    batch = task.collate({"input_ids": [s.input_ids for s in samples], "labels": [to_labels(s) for s in samples]})
    with torch.no_grad():
        sft = SFT(task, SftObjective())
        ours = sft.loss_sum(model, batch) / sft.count_items(batch)
        labels = torch.full_like(batch["input_ids"], IGNORE)
        labels[:, 1:] = batch["targets"][:, :-1]
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    return float(ours), float(theirs)


@pytest.mark.parametrize("method", [{"name": "ia3"}, {"name": "loha", "r": 4, "alpha": 4},
                                    {"name": "lokr", "r": 4, "alpha": 4}, {"name": "vera", "r": 16},
                                    {"name": "oft", "block_size": 4},
                                    {"name": "boft", "block_size": 4, "butterfly_factors": 2}], ids=lambda m: m["name"])
def test_adapter_methods_tune_a_causal_lm(lm_config, method):
    """The PEFT adapters beyond LoRA on a causal LM: the loss falls, and the merged model's logits equal
    the base with the saved adapter loaded by PeftModel."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(f"lm-{method['name']}", method=method, train={"max_steps": 6},
                                          eval={"base": False, "generate_samples": 0})))
    run = outcome.run.path
    steps = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "split" not in line]
    assert steps[-1] < steps[0]
    merged = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_folder()), run / "adapter")
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted.eval()(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("peft_config", ["prompt", "prefix"])
def test_prompt_learning_loss_matches_peft_with_transformers_labels(peft_config) -> None:
    """With virtual tokens in front (prompt tuning) or in the attention cache (prefix tuning), our
    masked loss equals the loss the PEFT model computes from the same labels (it pads them for the
    virtual tokens itself): the trained positions are shifted correctly."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    torch.manual_seed(0)  # the virtual tokens' random init
    spec = (PromptTuningConfig if peft_config == "prompt" else PrefixTuningConfig)(task_type="CAUSAL_LM",
                                                                                    num_virtual_tokens=5)
    ours, theirs = sft_and_transformers_loss(lambda model: get_peft_model(model, spec))
    assert ours == pytest.approx(theirs, rel=1e-5)


@pytest.mark.parametrize("method, trainable", [
    ({"name": "prompt-tuning", "num_virtual_tokens": 6, "init_text": "Answer the question:"}, 6 * 32),
    ({"name": "prefix-tuning", "num_virtual_tokens": 6}, None),
], ids=["prompt", "prefix"])
def test_prompt_and_prefix_tuning_train_a_causal_lm_and_answer(lm_config, method, trainable):
    """The loss falls, only the virtual tokens train, adapter/ is the result (nothing merges), the base
    is scored with the virtual tokens off, and the held-out prompts are answered through them."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.recipes.train import train

    outcome = train(load_config(lm_config(method["name"], method=method, train={"max_steps": 6,
                                                                                "learning_rate": 3e-2})))
    run = outcome.run.path
    steps = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "split" not in line]
    assert steps[-1] < steps[0]
    record = json.loads((run / "run.json").read_text())
    if trainable is not None:  # prompt tuning: one embedding row (hidden size 32) per virtual token
        assert record["trainable_params"] == trainable
    assert record["trainable_params"] < 0.05 * record["total_params"]
    assert not (run / "model").exists() and (run / "adapter" / "adapter_config.json").is_file()
    results = json.loads((run / "eval.json").read_text())
    assert results["base"]["validation"]["loss"] != pytest.approx(results["validation"]["loss"])
    assert results["generation"]["samples"] == 3
    answers = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert len(answers) == 3 and all(isinstance(a["tuned"], str) for a in answers)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_folder()), run / "adapter")
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        tuned = loaded.eval()(input_ids=ids).logits[0, -1]
        with loaded.disable_adapter():
            base = loaded(input_ids=ids).logits[0, -1]
    assert (tuned - base).abs().max() > 1e-2  # the saved virtual tokens change what the model predicts
    from tunelab.errors import ExportError
    from tunelab.recipes.export import export_run

    with pytest.raises(ExportError, match="cannot merge"):
        export_run(run, "merged")


def test_prompt_learning_refuses_packing_and_other_tasks(lm_config, make_config):
    from tunelab.recipes.train import train

    with pytest.raises(ConfigError, match="lm.packing: false"):
        train(load_config(lm_config("packed", method={"name": "prompt-tuning"}, lm={"packing": True})))
    with pytest.raises(ConfigError, match="method prefix-tuning adapts causal LMs"):
        train(load_config(make_config(method={"name": "prefix-tuning"})))
