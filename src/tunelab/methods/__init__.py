"""Methods: how a model is adapted (full, freeze, lora, dora, qlora, ia3, loha, lokr, vera, oft, boft,
prompt-tuning, prefix-tuning). One module each, registered in METHODS; the PEFT adapters share
methods/peft_method.py."""

from tunelab.methods import (  # noqa: F401  (registration)
    dora,
    freeze,
    full,
    ia3,
    loha,
    lokr,
    lora,
    oft,
    prompt_learning,
    qlora,
    vera,
)
from tunelab.methods.base import METHODS, Method, count_parameters

__all__ = ["METHODS", "Method", "count_parameters"]
