"""/v1/models/{name}/predict, /v1/models/{name}/embeddings and /v1/chat/completions: registered models
answering requests.

A request names a registered model and a version (a stage, `latest` or `vN`; production by default),
and is served by that version's run folder, so what answers is exactly what was registered and promoted.
Loaded models stay in an in-process LRU cache of two (a classifier and a chat model fit together on a
small server), keyed by run folder. One lock guards the cache and loading, so a cold model is loaded
once however many requests ask for it; each loaded model has its own lock and serves one request at a
time: inference is CPU/GPU-bound anyway, and seeded sampling stays reproducible.

Chat follows the OpenAI chat-completions API (non-streaming and server-sent events), so existing
clients work by pointing their base URL at /v1. Generation runs in a worker thread; a streaming
request that the client abandons stops generating at the next token.
"""

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from tunelab.config.schema import Config, GenerationConfig
from tunelab.recipes.generate import Generation
from tunelab.server.auth import Viewer
from tunelab.tasks import TASKS
from tunelab.workspace import Workspace
from tunelab.workspace.registry import resolve_model_ref, run_dir

router = APIRouter(prefix="/v1", tags=["inference"])

CACHE_SIZE = 2
MAX_INPUTS = 256
MAX_TEXT_CHARS = 100_000
MAX_NEW_TOKENS = 4096
VERSION = r"^(v?\d+|latest|candidate|staging|production|archived)$"
T = TypeVar("T")


# ---- resolving and caching ---------------------------------------------------------------------
@dataclass(frozen=True)
class Served:
    """A registered version, resolved to what serving it needs."""

    ref: str  # name@vN
    task: str
    run_path: Path

    @property
    def servable_as(self) -> str | None:
        """How the task answers (`Task.servable_as`): predict, chat, or None (not over this API)."""
        return TASKS.get(self.task).servable_as if self.task in TASKS else None


def served_version(ws: Workspace, ref: str) -> Served:
    """RegistryError (404 when the name or the stage has nothing; the message lists the versions and
    their stages) when `ref` names no version."""
    with ws.read() as session:
        version = resolve_model_ref(session, ref)
        return Served(version.ref, version.run.task, run_dir(ws, version.run))


class ModelCache:
    """Loaded models by key (kind and run folder); past `size`, the least recently used is dropped.
    A request still using a dropped model keeps it alive until it finishes."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = load()
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return value

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)


# ---- predict ----------------------------------------------------------------------------------
@dataclass
class Classifier:
    """A loaded text or token classifier, serving one request at a time."""

    predictor: Any  # tunelab.recipes.predict.Predictor
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_classifier(run_path: Path) -> Classifier:
    # the recipes import torch; the server answers its other routes without it until a model is loaded
    from tunelab.recipes.predict import load_predictor

    return Classifier(load_predictor(run_path))


class PredictRequest(BaseModel):
    inputs: list[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]] = Field(
        min_length=1, max_length=MAX_INPUTS, description="Texts to classify (or to tag, for token classifiers).")
    top_k: int = Field(1, ge=1, le=100, description="Text classifiers: how many labels to return per text.")
    version: str = Field("production", pattern=VERSION, description="A stage, 'latest' or 'vN'.")


@router.post("/models/{name}/predict")
def predict(name: str, body: PredictRequest, request: Request, _who: Viewer) -> dict[str, Any]:
    """Text classifiers: the top_k labels with probabilities per text. Token classifiers: entity spans
    with character offsets and scores. Chat models are served by /v1/chat/completions instead."""
    served = served_version(request.app.state.workspace, f"{name}@{body.version}")
    if served.servable_as == "chat":
        raise HTTPException(422, f"{served.ref} is a {served.task} (chat) model: use POST /v1/chat/completions "
                                 f"with \"model\": \"{served.ref}\"")
    if served.servable_as != "predict":
        kinds = [name for name, cls in TASKS.items() if cls.servable_as == "predict"]
        raise HTTPException(422, f"{served.ref} is a {served.task} model; the API serves {', '.join(kinds)} "
                                 f"here (use `tunelab predict` on the server for others)")
    loaded = request.app.state.model_cache.get(f"predict:{served.run_path}", lambda: load_classifier(served.run_path))
    with loaded.lock:
        predictions = loaded.predictor.predict(body.inputs, top_k=body.top_k)
    return {"model": served.ref, "task": served.task, "predictions": predictions}


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request (`model` is the path's name; a body `model` is accepted and ignored)."""

    input: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | list[
        Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]] = Field(
        description="A text or a list of texts to embed.")
    model: str | None = Field(None, description="Ignored: the model is the path's name and `version`.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes (the OpenAI SDK's default).")
    version: str = Field("production", pattern=VERSION, description="A stage, 'latest' or 'vN'.")


@router.post("/models/{name}/embeddings")
def embeddings(name: str, body: EmbeddingsRequest, request: Request, _who: Viewer) -> dict[str, Any]:
    """Embedding models: one vector per input, in the shape of OpenAI's embeddings API."""
    import base64

    import numpy as np

    texts = [body.input] if isinstance(body.input, str) else body.input
    if not 1 <= len(texts) <= MAX_INPUTS:
        raise HTTPException(422, f"input: give 1 to {MAX_INPUTS} texts")
    served = served_version(request.app.state.workspace, f"{name}@{body.version}")
    if not hasattr(TASKS.get(served.task), "embed"):
        raise HTTPException(422, f"{served.ref} is a {served.task} model; embeddings come from embedding models "
                                 "(task: embedding)")
    loaded = request.app.state.model_cache.get(f"predict:{served.run_path}", lambda: load_classifier(served.run_path))
    predictor = loaded.predictor
    with loaded.lock:
        vectors = predictor.task.embed(predictor.model, predictor.tokenizer, texts, predictor.config.train.max_length)
        tokens = sum(len(ids) for ids in predictor.tokenizer(texts, truncation=True,
                                                             max_length=predictor.config.train.max_length)["input_ids"])
    def encoded(vector: Any) -> Any:
        if body.encoding_format == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return [float(v) for v in vector]

    data = [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": served.ref,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# ---- chat completions ---------------------------------------------------------------------------
class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | list[dict[str, Any]]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat-completions request; fields this server does not use (user, penalties...) are ignored."""

    model: str = Field(max_length=300, description="NAME (its production version) or NAME@vN / NAME@<stage>.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="Newer name of max_tokens.")
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; unset: the run's generation settings.")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    stop: str | list[str] | None = Field(None, description="Not supported: answers end at the template's end of turn.")
    stream: bool = False
    stream_options: StreamOptions | None = None


@dataclass
class ChatModel:
    lm: Any  # tunelab.recipes.generate.LoadedLM
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_chat_model(run_path: Path) -> ChatModel:
    # torch and transformers load with the first chat model, not with the server
    from tunelab.recipes.generate import load_lm

    return ChatModel(load_lm(run_path))


@router.post("/chat/completions", response_model=None)
def chat_completions(body: ChatRequest, request: Request, _who: Viewer) -> Response:
    """OpenAI-compatible chat completion by a registered causal-lm model: a `chat.completion` object, or
    with `stream: true` server-sent `chat.completion.chunk` events ending with `data: [DONE]`."""
    if body.stop:
        raise HTTPException(422, "'stop' is not supported: answers end at the model's end-of-turn token")
    ref = body.model if "@" in body.model else f"{body.model}@production"
    served = served_version(request.app.state.workspace, ref)
    if served.servable_as != "chat":
        name = served.ref.partition("@")[0]
        raise HTTPException(422, f"{served.ref} is a {served.task} model, not a chat model: use POST "
                                 f"/v1/models/{name}/predict")
    chat = request.app.state.model_cache.get(f"chat:{served.run_path}", lambda: load_chat_model(served.run_path))
    cfg = generation_settings(chat.lm.config, body)
    prompt = encode_prompt(chat.lm, [_message(m) for m in body.messages])
    generation = Generation(chat.lm, prompt, cfg, lock=chat.lock)
    head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": served.ref}
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_events(generation, head, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    text = "".join(generation.pieces())
    generation.wait()
    return JSONResponse(completion(head, text, generation))


def _message(message: ChatMessage) -> dict[str, str]:
    """{role, content} as the chat template takes it: text parts joined, `developer` read as `system`."""
    content = message.content
    if isinstance(content, list):
        if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in content):
            raise HTTPException(422, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")
        content = "".join(part["text"] for part in content)
    return {"role": "system" if message.role == "developer" else message.role, "content": content}


def generation_settings(config: Config, body: ChatRequest) -> GenerationConfig:
    """The run's generation settings with the request's: temperature 0 is greedy decoding, a positive
    temperature samples, no temperature keeps the run's choice. ConfigError (422) when invalid."""
    # as above: the generate recipe imports torch
    from tunelab.recipes.generate import settings

    overrides: dict[str, Any] = {"max_new_tokens": body.max_completion_tokens or body.max_tokens,
                                 "top_p": body.top_p, "seed": body.seed}
    if body.temperature is not None:
        overrides["do_sample"] = body.temperature > 0
        if body.temperature > 0:
            overrides["temperature"] = body.temperature
    return settings(config, **overrides)


def encode_prompt(lm: Any, messages: list[dict[str, str]]) -> list[int]:
    """Prompt token ids, rendered as the run was trained; 422 for a conversation it cannot render.

    A run trained on conversations renders them with its saved chat template. A run trained on
    prompt/completion text has no template: it takes a single user message as its prompt."""
    from jinja2 import TemplateError

    if messages[-1]["role"] != "user":
        raise HTTPException(422, "the conversation must end with a user message")
    if lm.task.template is None:
        if len(messages) != 1:
            raise HTTPException(422, "this model was trained on prompt/completion text, not conversations: send a "
                                     "single user message holding the prompt")
        item: dict[str, Any] = {"prompt": messages[0]["content"]}
    else:
        item = {"messages": messages}
    try:
        return lm.task.encode_prompt(item, lm.config)
    except TemplateError as err:
        raise HTTPException(422, f"the model's chat template refused the conversation: {err}") from None


def completion(head: dict[str, Any], text: str, generation: Generation) -> dict[str, Any]:
    return {**head, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": generation.finish_reason}],
            "usage": generation.usage()}


def chunk(head: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None,
          with_usage: bool = False) -> dict[str, Any]:
    body = {**head, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    return body | ({"usage": None} if with_usage else {})


async def _events(generation: Generation, head: dict[str, Any], with_usage: bool) -> AsyncIterator[str]:
    """The OpenAI stream: a role chunk, one chunk per piece of text, a chunk with the finish reason,
    the usage chunk when asked for (stream_options.include_usage), then [DONE]. The worker blocks on
    the streamer in a thread, never on the event loop."""
    try:
        yield _sse(chunk(head, {"role": "assistant", "content": ""}, with_usage=with_usage))
        pieces = generation.pieces()
        while (piece := await run_in_threadpool(next, pieces, None)) is not None:
            yield _sse(chunk(head, {"content": piece}, with_usage=with_usage))
        await run_in_threadpool(generation.join)
        if generation.error is not None:
            yield _sse({"error": {"message": f"generation failed: {generation.error}", "type": "server_error"}})
        else:
            yield _sse(chunk(head, {}, generation.finish_reason, with_usage=with_usage))
            if with_usage:
                yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": generation.usage()})
        yield "data: [DONE]\n\n"
    finally:
        generation.cancelled.set()  # the client left (or the stream ended): stop at the next token


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
