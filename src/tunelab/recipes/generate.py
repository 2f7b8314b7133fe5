"""`tunelab generate` and `tunelab chat`: inference with a trained causal-lm run.

Prompts are rendered by the task exactly as training rendered them (the run's saved chat template),
and answers stop at the template's end-of-turn token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.schema import Config, GenerationConfig
from tunelab.errors import ConfigError, DataError, RunError
from tunelab.eval.generation import generate, hf_generation_kwargs
from tunelab.runs import RunFolder
from tunelab.runs.folder import atomic_write_text
from tunelab.tasks.causal_lm import CausalLM


@dataclass
class LoadedLM:
    run: RunFolder
    config: Config
    task: CausalLM
    model: Any
    tokenizer: Any

    @property
    def pad_id(self) -> int:
        return self.task.pad_id


def load_lm(run_path: str | Path) -> LoadedLM:
    run = RunFolder.open(run_path)
    config = run.config()
    if config.task != "causal-lm":
        raise RunError(f"{run.path} is a {config.task} run; generate and chat need a causal-lm run",
                       fix="use `tunelab predict` for classifiers")
    task = CausalLM()
    model, tokenizer = task.load_trained(run.path, config)
    return LoadedLM(run, config, task, model, tokenizer)


def settings(config: Config, **overrides: Any) -> GenerationConfig:
    """The run's generation settings with command-line overrides (None = keep), validated."""
    merged = {**config.generation.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return GenerationConfig.model_validate(merged)
    except ValueError as err:
        first = str(err).splitlines()[1] if len(str(err).splitlines()) > 1 else str(err)
        raise ConfigError(f"generation setting: {first}", fix="check the sampling options") from None


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """jsonl rows with a `prompt` string or a `messages` list; one-line errors name the line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist", fix="give a .jsonl file with one {\"prompt\": ...} per line")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: not valid JSON ({err.msg})", fix="one JSON object per line") from None
        ok = isinstance(row, dict) and (isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list))
        if not ok:
            raise DataError(f"{path} line {number}: needs a 'prompt' string or a 'messages' list",
                            fix='e.g. {"prompt": "How do I reset my password?"}')
        rows.append(row)
    if not rows:
        raise DataError(f"{path} has no prompts", fix="add one JSON object per line")
    return rows


def generate_file(lm: LoadedLM, source: Path, target: Path, cfg: GenerationConfig, batch_size: int = 8) -> int:
    """Answer every prompt of `source` into `target` (jsonl: the input row plus `output`)."""
    rows = read_prompts(source)
    prompts = [lm.task.encode_prompt(row, lm.config) for row in rows]
    new_ids = generate(lm.model, prompts, cfg, lm.task.stop_ids(), lm.pad_id, batch_size=batch_size)
    lines = []
    for row, ids in zip(rows, new_ids, strict=True):
        answer = lm.tokenizer.decode(ids, skip_special_tokens=True).strip()
        lines.append(json.dumps({**row, "output": answer}, ensure_ascii=False) + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "".join(lines))
    return len(lines)


def stream_reply(lm: LoadedLM, item: dict[str, Any], cfg: GenerationConfig) -> Iterator[str]:
    """Yield the answer to `item` ({"messages": [...]} or {"prompt": "..."}) piece by piece."""
    import torch
    from transformers import TextIteratorStreamer

    ids = torch.as_tensor([lm.task.encode_prompt(item, lm.config)])
    streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = hf_generation_kwargs(cfg, lm.task.stop_ids(), lm.pad_id)
    torch.manual_seed(cfg.seed)

    def run() -> None:
        with torch.inference_mode():
            lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                              use_cache=True, **kwargs)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
