"""Display strings shared by the HTML report and the compare table: numbers, durations, parameters, methods."""

from __future__ import annotations

import math
from typing import Any

# The parameters that distinguish runs of one method, in the order they are shown.
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "freeze": ("train_last", "layers"),
    "lora": ("r", "alpha"),
    "dora": ("r", "alpha"),
    "qlora": ("r", "alpha", "quant_type"),
    "loha": ("r", "alpha"),
    "lokr": ("r", "alpha"),
    "vera": ("r",),
    "oft": ("block_size",),
}
LOWER_IS_BETTER = {"loss", "perplexity", "rmse", "mae"}
DASH = "\u2013"  # en dash: a value that does not exist


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value: Any, digits: int = 4) -> str:
    """A metric for display: 4 decimals for floats, thousands separators for ints, a dash when absent."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return DASH if value is None else str(value)


def signed(value: Any, digits: int = 4) -> str:
    """A difference for display, always with its sign."""
    return f"{value:+.{digits}f}" if is_number(value) else DASH


def percent(value: Any, digits: int = 1) -> str:
    """A fraction (0.123) as a percentage (12.3%)."""
    return f"{100 * value:.{digits}f}%" if is_number(value) else DASH


def duration(seconds: Any) -> str:
    """Seconds as '12.3 s', '4m 05s' or '2h 03m'."""
    if not is_number(seconds):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def parameters(trainable: Any, total: Any) -> str:
    """'39,267 of 1,000,000 (3.93%)', or what is known of it."""
    if not is_number(trainable):
        return DASH
    if not is_number(total) or not total:
        return f"{trainable:,}"
    return f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


def method(section: dict[str, Any]) -> str:
    """The method's name and the parameters that tell its runs apart, e.g. 'lora r=16 alpha=32'."""
    name = str(section.get("name") or DASH)
    shown = [f"{key}={section[key]}" for key in METHOD_PARAMS.get(name, ()) if section.get(key) is not None]
    if name == "freeze" and section.get("train_last") is not None:
        shown = [s for s in shown if not s.startswith("layers=")]  # train_last overrides layers
    return " ".join([name, *shown])


def better(metric: str, gain: Any) -> bool | None:
    """Whether a change of `gain` in `metric` is an improvement (None when unknown or zero)."""
    if not is_number(gain) or gain == 0:
        return None
    return gain < 0 if metric in LOWER_IS_BETTER else gain > 0
