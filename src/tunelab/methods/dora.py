"""DoRA (weight-decomposed LoRA) through PEFT: LoRA with `use_dora=True`."""

from tunelab.methods.base import METHODS
from tunelab.methods.lora import Lora


@METHODS.register("dora")
class Dora(Lora):
    name = "dora"
    use_dora = True
