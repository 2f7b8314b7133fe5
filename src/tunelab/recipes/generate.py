"""`tunelab generate` and `tunelab chat` (and the server's chat completions): inference with a trained
causal-lm run.

Prompts are rendered by the task exactly as training rendered them (the run's saved chat template),
and answers stop at the template's end-of-turn token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config.schema import Config, GenerationConfig
from tunelab.engine.generation import generate, hf_generation_kwargs
from tunelab.errors import ConfigError, DataError, RunError
from tunelab.runs import RunFolder
from tunelab.runs.folder import atomic_write_text
from tunelab.tasks import TASKS

if TYPE_CHECKING:
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
    run = RunFolder.open_finished(run_path)
    config = run.config()
    task_class = TASKS.get(config.task)
    if task_class.servable_as != "chat":
        chat = [name for name, cls in TASKS.items() if cls.servable_as == "chat"]
        raise RunError(f"{run.path} is a {config.task} run; generate and chat need a {' or '.join(chat)} run",
                       fix="use `tunelab predict` for classifiers")
    task: CausalLM = task_class()  # type: ignore[assignment]
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
    generation = Generation(lm, lm.task.encode_prompt(item, lm.config), cfg)
    try:
        yield from generation.pieces()
        generation.wait()
    finally:
        generation.cancelled.set()  # a reader that stops early (Ctrl-C) stops the generation too


class _Cancelled:
    """A stopping criterion: true once the client is gone, so an abandoned stream stops generating."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Generation:
    """One reply generated in a worker thread. Its text arrives piece by piece from `pieces`; token
    counts and the finish reason are known once `wait` returns. Both the streaming and the plain
    response read the same pieces, so their texts agree."""

    def __init__(self, lm: LoadedLM, prompt: list[int], cfg: GenerationConfig,
                 lock: threading.Lock | None = None) -> None:
        from transformers import TextIteratorStreamer

        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self._streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._thread = threading.Thread(target=self._run, args=(lm, prompt, cfg, lock or nullcontext()),
                                        daemon=True, name="tunelab-generate")
        self._thread.start()

    def _run(self, lm: LoadedLM, prompt: list[int], cfg: GenerationConfig, lock: Any) -> None:
        import torch
        from transformers import StoppingCriteriaList

        stop_ids = lm.task.stop_ids()
        finished = False
        try:
            with lock, torch.inference_mode():
                ids = torch.as_tensor([prompt], device=next(lm.model.parameters()).device)
                torch.manual_seed(cfg.seed)
                out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=self._streamer,
                                        stopping_criteria=StoppingCriteriaList([_Cancelled(self.cancelled)]),
                                        use_cache=True, **hf_generation_kwargs(cfg, stop_ids, lm.pad_id))
            finished = True  # generate() has ended the streamer itself
            self.completion_tokens, self.finish_reason = finish(out[0, len(prompt):].tolist(), stop_ids,
                                                                cfg.max_new_tokens)
        except Exception as err:  # noqa: BLE001 - a worker thread: handed to wait() or to the stream
            self.error = err
        finally:
            if not finished:
                self._streamer.end()  # a reader waiting for the next piece would otherwise wait forever

    def pieces(self) -> Iterator[str]:
        return (piece for piece in self._streamer if piece)

    def join(self) -> None:
        self._thread.join()

    def wait(self) -> None:
        """Join the worker; re-raise what stopped it."""
        self.join()
        if self.error is not None:
            raise self.error

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def finish(new_ids: list[int], stop_ids: list[int], limit: int) -> tuple[int, str]:
    """(answer tokens before the stop token, OpenAI finish_reason)."""
    for at, token in enumerate(new_ids):
        if token in stop_ids:
            return at, "stop"
    return len(new_ids), "length" if len(new_ids) >= limit else "stop"
