"""Token-classification (NER) data: tag schemes and row layouts, normalized to BIO.

`normalize_token_rows` turns a loaded `Table` (CoNLL, tokens/tags rows, or text with character
spans) into rows {"tokens", "tags" (BIO), "offsets", "text", "row"}; the helpers convert between
schemes, list labels and turn predicted BIO tags back into character spans.
"""

from tunelab.data.tags.layouts import (
    LAYOUTS,
    WORD,
    TokenLayout,
    join_tokens,
    split_words,
)
from tunelab.data.tags.normalize import FEATURES, detect_layout, normalize_token_rows
from tunelab.data.tags.schemes import (
    ALIASES,
    SCHEMES,
    InvalidTags,
    TagRowError,
    bio_to_scheme,
    canonical_scheme,
    detect_scheme,
    entities_from_bio,
    labels_from_tags,
    spans_from_bio,
    split_tag,
    to_bio,
)

__all__ = [
    "ALIASES",
    "FEATURES",
    "LAYOUTS",
    "SCHEMES",
    "WORD",
    "InvalidTags",
    "TagRowError",
    "TokenLayout",
    "bio_to_scheme",
    "canonical_scheme",
    "detect_layout",
    "detect_scheme",
    "entities_from_bio",
    "join_tokens",
    "labels_from_tags",
    "normalize_token_rows",
    "spans_from_bio",
    "split_tag",
    "split_words",
    "to_bio",
]
