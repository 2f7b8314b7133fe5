"""Row layouts of token-classification data, each registered in LAYOUTS.

Every layout turns one raw row into the canonical row

    {"tokens": [str], "tags": [BIO str], "offsets": [[start, end]], "text": str}

where `offsets[i]` is the character span of token i in `text`:

- "conll": a CoNLL file (see tunelab.data.formats.conll); the tag is field `data.conll_tag_column`.
- "tokens": `{tokens: [...], tags: [...]}` (data.tokens_column, data.tags_column).
- "spans": `{text: "...", entities: [{start, end, label}]}` (data.text_column, data.entities_column),
  character offsets with `end` exclusive, like Python slices.

The token layouts have no text of their own: `text` is the tokens joined by single spaces. The span
layout splits `text` into words with WORD (runs of letters/digits/underscore, or one punctuation
character; Unicode-aware) and tags the words each span covers. A span whose edge falls inside a
word takes in the whole word (counted as "widened"): BIO can only tag whole words.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

from tunelab.choices import Choices
from tunelab.config.schema import DataConfig
from tunelab.data.records.base import describe
from tunelab.data.tags.schemes import InvalidTags, TagRowError, to_bio

WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Converted:
    """One canonical row plus what was repaired (and how many spans were widened) to get it."""

    row: dict[str, Any]
    repairs: list[InvalidTags] = field(default_factory=list)
    widened: int = 0


class TokenLayout:
    """One row layout: the columns it reads, and how a row becomes the canonical row."""

    name: str = ""
    tagged: bool = True  # rows carry tags in a scheme (False: spans, tagged BIO by us)

    def columns(self, cfg: DataConfig) -> list[str]:
        raise NotImplementedError

    def raw_tags(self, row: dict[str, Any], cfg: DataConfig) -> list[Any]:
        """The row's tags as written (for scheme detection); only for tagged layouts."""
        raise NotImplementedError

    def convert(self, row: dict[str, Any], cfg: DataConfig, scheme: str, *, repair: bool) -> Converted:
        """The canonical row; TagRowError (or InvalidTags unless `repair`) when the row is malformed."""
        raise NotImplementedError


LAYOUTS: Choices[TokenLayout] = Choices("token layout")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of every word of `text`, as the span layout splits it."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def join_tokens(tokens: list[str]) -> tuple[str, list[list[int]]]:
    """The tokens joined by single spaces, and each token's [start, end) in that text."""
    offsets, position = [], 0
    for token in tokens:
        offsets.append([position, position + len(token)])
        position += len(token) + 1
    return " ".join(tokens), offsets


def _string_list(row: dict[str, Any], column: str, item: str) -> list[str]:
    """`row[column]` as a non-empty list of strings; TagRowError naming the first bad item."""
    values = row.get(column)
    if values is None:
        raise TagRowError(f"{column!r} is missing")
    if not isinstance(values, list):
        raise TagRowError(f"{column!r} is {describe(values)}, not a list")
    if not values:
        raise TagRowError(f"{column!r} is an empty list")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TagRowError(f"{item} {i + 1} is {describe(value)}, not text", i)
    return values


def _tagged_row(tokens: list[str], tags: list[str], scheme: str, repair: bool) -> Converted:
    if len(tokens) != len(tags):
        raise TagRowError(f"{len(tokens)} tokens but {len(tags)} tags")
    bio, repairs = to_bio(tags, scheme, repair=repair)
    text, offsets = join_tokens(tokens)
    return Converted({"tokens": tokens, "tags": bio, "offsets": offsets, "text": text}, repairs)


class ConllLayout(TokenLayout):
    """Rows of the conll format: {"tokens", "fields"}; the tag is fields[data.conll_tag_column]."""

    name = "conll"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["fields"]

    def raw_tags(self, row: dict[str, Any], cfg: DataConfig) -> list[Any]:
        return row["fields"][cfg.conll_tag_column]

    def convert(self, row: dict[str, Any], cfg: DataConfig, scheme: str, *, repair: bool) -> Converted:
        # The normalizer checked that the tag column exists in every file (and is not the token).
        fields = row["fields"]
        return _tagged_row(fields[0], fields[cfg.conll_tag_column], scheme, repair)


class TokensLayout(TokenLayout):
    """JSON-like rows with a list of words and a list of tags."""

    name = "tokens"

    def columns(self, cfg: DataConfig) -> list[str]:
        return [cfg.tokens_column, cfg.tags_column]

    def raw_tags(self, row: dict[str, Any], cfg: DataConfig) -> list[Any]:
        tags = row.get(cfg.tags_column)
        return tags if isinstance(tags, list) else []

    def convert(self, row: dict[str, Any], cfg: DataConfig, scheme: str, *, repair: bool) -> Converted:
        tokens = _string_list(row, cfg.tokens_column, "token")
        for i, token in enumerate(tokens):
            if not token.strip():
                # A blank word gives the model no sub-word to carry its tag.
                raise TagRowError(f"token {i + 1} is {'empty' if not token else 'only whitespace'}", i)
        tags = _string_list(row, cfg.tags_column, "tag")
        return _tagged_row(tokens, tags, scheme, repair)


@dataclass
class _Span:
    number: int  # 1-based position in the row's entity list, as reasons show it
    start: int
    end: int
    label: str

    def __str__(self) -> str:
        return f"entity {self.number} [{self.start}, {self.end}) {self.label!r}"


def _offset(entity: dict[str, Any], key: str, number: int) -> int:
    value = entity.get(key)
    # Arrow reads a column of JSON numbers as floats when any of them has a fraction.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        what = "missing" if value is None else f"{describe(value)}, not a character offset"
        raise TagRowError(f"entity {number} {key!r} is {what}")
    return value


def _spans(row: dict[str, Any], cfg: DataConfig) -> list[_Span]:
    entities = row.get(cfg.entities_column)
    if entities is None:
        raise TagRowError(f"{cfg.entities_column!r} is missing (write [] for a text without entities)")
    if not isinstance(entities, list):
        raise TagRowError(f"{cfg.entities_column!r} is {describe(entities)}, not a list of spans")
    spans = []
    for number, entity in enumerate(entities, 1):
        if not isinstance(entity, dict):
            raise TagRowError(f"entity {number} is {describe(entity)}, not an object with start, end and label")
        label = entity.get("label")
        if not isinstance(label, str) or not label or any(c.isspace() for c in label):
            shown = "missing" if label is None else f"{label!r}" if isinstance(label, str) else describe(label)
            raise TagRowError(f"entity {number} 'label' is {shown} (a label is text without spaces)")
        spans.append(_Span(number, _offset(entity, "start", number), _offset(entity, "end", number), label))
    return spans


class SpansLayout(TokenLayout):
    """Rows of text with character spans; words come from WORD, tags are BIO from the spans."""

    name = "spans"
    tagged = False

    def columns(self, cfg: DataConfig) -> list[str]:
        return [cfg.text_column, cfg.entities_column]

    def convert(self, row: dict[str, Any], cfg: DataConfig, scheme: str, *, repair: bool) -> Converted:
        text = row.get(cfg.text_column)
        if not isinstance(text, str):
            raise TagRowError(f"{cfg.text_column!r} is {describe(text)}, not text")
        words = split_words(text)
        if not words:
            raise TagRowError(f"{cfg.text_column!r} has no words")
        spans = _spans(row, cfg)
        starts, ends = [start for _, start, _ in words], [end for _, _, end in words]
        tags = ["O"] * len(words)
        owner: list[_Span | None] = [None] * len(words)  # which kept span tags each word
        repairs: list[InvalidTags] = []
        widened = 0
        for span in spans:
            try:
                first, last = self._place(span, text, words, starts, ends, owner)
            except InvalidTags as problem:
                if not repair:
                    raise
                repairs.append(problem)  # the span is dropped
                continue
            widened += words[first][1] < span.start or words[last][2] > span.end
            for i in range(first, last + 1):
                tags[i] = f"{'B' if i == first else 'I'}-{span.label}"
                owner[i] = span
        canonical = {"tokens": [w for w, _, _ in words], "tags": tags,
                     "offsets": [[start, end] for _, start, end in words], "text": text}
        return Converted(canonical, repairs, widened)

    @staticmethod
    def _place(
        span: _Span, text: str, words: list[tuple[str, int, int]], starts: list[int], ends: list[int],
        owner: list[_Span | None],
    ) -> tuple[int, int]:
        """The first and last word `span` covers; InvalidTags when it is off the text or overlaps."""
        if span.start >= span.end:
            raise InvalidTags(f"{span} is empty or reversed (start must be below end)")
        if span.start < 0 or span.end > len(text):
            raise InvalidTags(f"{span} is outside the text ({len(text)} characters)")
        # Words are sorted and disjoint: the first ending after the span's start to the last
        # starting before its end.
        first, last = bisect.bisect_right(ends, span.start), bisect.bisect_left(starts, span.end) - 1
        if first > last:
            raise InvalidTags(f"{span} covers no word (only spaces)")
        for i in range(first, last + 1):
            if (other := owner[i]) is not None:
                if span.start < other.end and other.start < span.end:
                    raise InvalidTags(f"{span} overlaps {other}")
                raise InvalidTags(f"{span} shares the word {words[i][0]!r} with {other}")
        return first, last


LAYOUTS.register("conll")(ConllLayout())
LAYOUTS.register("tokens")(TokensLayout())
LAYOUTS.register("spans")(SpansLayout())
