"""One logger tree ("tunelab"), rank-aware: only the main process logs below WARNING."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

LOGGER = logging.getLogger("tunelab")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def setup_console(quiet: bool = False, debug: bool = False) -> None:
    """Console logging through Rich; third-party chatter (transformers, datasets) is kept quiet."""
    from rich.logging import RichHandler

    LOGGER.handlers.clear()
    level = logging.DEBUG if debug else logging.WARNING if quiet or not is_main_process() else logging.INFO
    handler = RichHandler(show_path=debug, show_time=False, markup=False, rich_tracebacks=debug)
    handler.setLevel(level)
    handler.addFilter(lambda record: getattr(record, "console", True))  # file-only records
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.propagate = False
    quiet_third_party(debug)


QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def quiet_third_party(debug: bool = False) -> None:
    """Through the environment variables transformers and datasets read when imported, so commands
    that never import them (the workspace ones) do not pay for importing them; modules already
    imported are set directly."""
    import sys

    if debug:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)


def add_file_log(path: Path) -> logging.Handler:
    """Log everything (DEBUG and up) of the main process to the run's train.log."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.DEBUG if is_main_process() else logging.CRITICAL + 1)
    if LOGGER.getEffectiveLevel() > logging.INFO:  # library use without setup_console
        LOGGER.setLevel(logging.INFO)
    LOGGER.addHandler(handler)
    return handler
