"""Plain text (.txt, .md): each file is ONE row `{"text": <the whole file>}`, for domain adaptation.

A folder of text files therefore loads one document per file. Emptiness and UTF-8 are checked
before loading like every text format (an empty or whitespace-only file is "the file is empty").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.data.formats.base import FORMATS, DataFormat


class TxtFormat(DataFormat):
    name = "txt"
    extensions = (".txt", ".md")
    builder = "text"

    def builder_kwargs(self) -> dict[str, Any]:
        # sample_by="document": the builder reads the file with one f.read() and strips nothing
        # (keep_linebreaks only applies to sample_by="line"). It opens the file in Python text mode,
        # so "\r\n" and lone "\r" line endings become "\n"; the text is otherwise exact.
        # utf-8-sig drops a leading byte-order mark, which is an encoding marker, not text.
        return {"sample_by": "document", "encoding": "utf-8-sig"}

    def locate(self, file: Path, row: int) -> str:
        return "(whole file)"


FORMATS.register("txt")(TxtFormat())
