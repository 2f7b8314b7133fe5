"""Tag schemes (IO, BIO, BIOES) and conversions between them; BIO is the canonical scheme.

A tag is "O" or "<prefix>-<type>" (the type is everything after the first "-", without spaces):

- IO: I- only. Adjacent entities of one type cannot be told apart, so an I- run is one entity.
- BIO (also called IOB2): B- starts an entity, I- continues it.
- BIOES: B- begins, I- is inside, E- ends an entity of several tokens; S- is a one-token entity.
  BILOU is the same scheme with L- (last) for E- and U- (unit) for S-; both spellings are read.

Everything downstream works on BIO: `to_bio` converts and validates, `bio_to_scheme` converts back
(for seqeval's strict modes), `spans_from_bio` turns BIO tags into character spans.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
import pyarrow.compute as pc

from tunelab.data.records.base import RowError

SCHEMES = ("IO", "BIO", "BIOES")
ALIASES = {"IOB2": "BIO", "BILOU": "BIOES", "IOBES": "BIOES"}  # other names people use
_PREFIXES = {"IO": "I", "BIO": "BI", "BIOES": "BIESLU"}
_ALLOWED = {
    "IO": "O or I-<type>",
    "BIO": "O, B-<type> or I-<type>",
    "BIOES": "O, B-, I-, E- or S-<type>",
    "BILOU": "O, B-, I-, L- or U-<type>",
}
_TAG = re.compile(r"([A-Z])-(\S+)")


class TagRowError(RowError):
    """A malformed token row (data.bad_rows decides); `token` is the 0-based token it concerns."""

    def __init__(self, reason: str, token: int | None = None) -> None:
        super().__init__(reason)
        self.token = token


class InvalidTags(TagRowError):
    """Tags or spans that break the scheme's rules but can be repaired (data.invalid_tags decides)."""


def canonical_scheme(name: str) -> str:
    """IO, BIO or BIOES for a scheme name or alias (case-insensitive); ValueError otherwise."""
    upper = name.upper()
    scheme = ALIASES.get(upper, upper)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {name!r} (use IO, BIO, BIOES or one of {', '.join(ALIASES)})")
    return scheme


def split_tag(tag: str) -> tuple[str, str | None] | None:
    """("O", None) or (prefix letter, type); None when `tag` has neither form."""
    if tag == "O":
        return "O", None
    match = _TAG.fullmatch(tag)
    return (match[1], match[2]) if match else None


def detect_scheme(tags: Iterable[str]) -> str:
    """The scheme a collection of tags is written in, from the prefixes it uses.

    L-/U- means BILOU; E-/S- means BIOES; B- means BIO; only I- means IO. Tags that fit no scheme
    are ignored here (validation reports them); data with only "O" counts as BIO.
    """
    prefixes = {parts[0] for tag in tags if isinstance(tag, str) and (parts := split_tag(tag))}
    if prefixes & {"L", "U"}:
        return "BILOU"
    if prefixes & {"E", "S"}:
        return "BIOES"
    if "B" in prefixes or "I" not in prefixes:
        return "BIO"
    return "IO"


def to_bio(tags: Sequence[str], scheme: str, *, repair: bool = False) -> tuple[list[str], list[InvalidTags]]:
    """`tags` (strings in `scheme`) as BIO, and the problems repaired on the way.

    Raises TagRowError for a tag that is not of the scheme. A sequence error (an I- or E- tag that
    continues no entity of its type; in BIOES, an entity that never ends) raises InvalidTags, or
    with `repair` is fixed and returned: the tag starts a new entity (B-), and an unended BIOES
    entity simply ends (BIO needs no end tag). IO has no sequence errors: an I- run is an entity.
    """
    name = scheme.upper()
    canonical = canonical_scheme(name)
    out: list[str] = []
    repairs: list[InvalidTags] = []
    open_type: str | None = None  # type of the entity the previous tag leaves open
    for i, tag in enumerate(tags):
        prefix, kind = _parse(tag, i, canonical, name)
        if canonical == "IO":
            out.append("O" if kind is None else f"{'I' if open_type == kind else 'B'}-{kind}")
            open_type = kind
            continue
        if prefix in "IEL":
            if open_type != kind:
                repairs.append(_problem(_continuation(tags, i, open_type), i, repair))
            out.append(f"{'I' if open_type == kind else 'B'}-{kind}")
            open_type = kind if prefix == "I" else None
            continue
        if canonical == "BIOES" and open_type is not None:
            repairs.append(_problem(_unended(tags, i, name), i, repair))
        out.append("O" if kind is None else f"B-{kind}")
        open_type = kind if prefix == "B" else None
    if canonical == "BIOES" and open_type is not None:
        repairs.append(_problem(_unended(tags, len(tags), name), len(tags) - 1, repair))
    return out, repairs


def _parse(tag: Any, i: int, canonical: str, name: str) -> tuple[str, str | None]:
    parts = split_tag(tag) if isinstance(tag, str) else None
    if parts is None or (parts[0] != "O" and parts[0] not in _PREFIXES[canonical]):
        shown = name if name in _ALLOWED else canonical
        article = "an" if shown[0] in "AEIOU" else "a"
        raise TagRowError(f"token {i + 1} {tag!r} is not {article} {shown} tag (use {_ALLOWED[shown]})", i)
    return parts


def _problem(reason: str, token: int, repair: bool) -> InvalidTags:
    problem = InvalidTags(reason, token)
    if not repair:
        raise problem
    return problem


def _continuation(tags: Sequence[str], i: int, open_type: str | None) -> str:
    """Why tags[i] (an I-/E-/L- tag) continues no entity of its type."""
    tag = tags[i]
    rule = f"an {tag[0]}- tag must continue an entity"
    if i == 0:
        return f"token 1 {tag!r} starts the sentence ({rule})"
    prev = tags[i - 1]
    if prev == "O":
        return f"token {i + 1} {tag!r} follows 'O' ({rule})"
    if open_type is None:
        return f"token {i + 1} {tag!r} follows {prev!r}, which ends its entity ({rule})"
    return f"token {i + 1} {tag!r} follows {prev!r} ({rule} of its own type)"


def _unended(tags: Sequence[str], i: int, name: str) -> str:
    """Why the BIOES entity open before tags[i] (or before the end, i == len) is invalid."""
    end, single = ("L", "U") if name == "BILOU" else ("E", "S")
    rule = f"in {name if name == 'BILOU' else 'BIOES'} an entity ends with {end}- or is one {single}- token"
    prev = tags[i - 1]
    if i == len(tags):
        return f"the sentence ends inside an entity: token {i} {prev!r} ({rule})"
    return f"token {i + 1} {tags[i]!r} follows {prev!r}, an entity that never ended ({rule})"


# --------------------------------------------------------------------------- from BIO


def entities_from_bio(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first token, last token) of every entity in BIO `tags`.

    Lenient like seqeval's default mode, because model predictions are not always valid: an I- tag
    that continues no entity of its type starts one.
    """
    entities: list[tuple[str, int, int]] = []
    open_type: str | None = None
    for i, tag in enumerate(tags):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if kind is not None and tag[0] == "I" and kind == open_type:
            entities[-1] = (kind, entities[-1][1], i)
        elif kind is not None:
            entities.append((kind, i, i))
        open_type = kind
    return entities


def bio_to_scheme(tags: Sequence[str], scheme: str) -> list[str]:
    """BIO `tags` rewritten in `scheme` (IO, BIO/IOB2, BIOES/IOBES or BILOU), e.g. for seqeval."""
    name = scheme.upper()
    canonical = canonical_scheme(name)
    out = ["O"] * len(tags)
    begin, inside, end, single = ("B", "I", "L", "U") if name == "BILOU" else ("B", "I", "E", "S")
    for kind, first, last in entities_from_bio(tags):
        for i in range(first, last + 1):
            if canonical == "IO":
                prefix = "I"
            elif canonical == "BIO":
                prefix = begin if i == first else inside
            elif first == last:
                prefix = single
            else:
                prefix = begin if i == first else end if i == last else inside
            out[i] = f"{prefix}-{kind}"
    return out


def spans_from_bio(tags: Sequence[str], offsets: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """Character spans [{"start", "end", "label"}] of the entities in BIO `tags`.

    `offsets[i]` is [start, end) of token i in the text; a span runs from its first token's start
    to its last token's end, so text between its tokens (spaces, hyphens) is inside it.
    """
    if len(tags) != len(offsets):
        raise ValueError(f"{len(tags)} tags but {len(offsets)} offsets")
    return [{"start": int(offsets[first][0]), "end": int(offsets[last][1]), "label": kind}
            for kind, first, last in entities_from_bio(tags)]


def labels_from_tags(data: datasets.Dataset | Iterable[datasets.Dataset]) -> list[str]:
    """The BIO label list of normalized dataset(s): "O", then B- and I- of every type, by type.

    Both B- and I- of a type are listed even if one never occurs, so a label seen only in
    validation or predicted by the model always has an id.
    """
    parts = [data] if isinstance(data, datasets.Dataset) else list(data)
    kinds: set[str] = set()
    for part in parts:
        table = part.select_columns(["tags"]).with_format("arrow")[:]  # honours select/filter
        values = pc.unique(table.column(0).combine_chunks().flatten()).to_pylist()
        kinds.update(tag[2:] for tag in values if tag and tag != "O")
    return ["O"] + [f"{prefix}-{kind}" for kind in sorted(kinds) for prefix in "BI"]
