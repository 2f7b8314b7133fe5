"""The validated config: one pydantic model per YAML section.

The object built here is passed around whole (recipes, tasks, methods, engine); nothing downstream
re-reads the YAML or a dict. Every field has a description so `tunelab config schema` documents it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment, and no
    number may be infinite or NaN (`.inf` is valid YAML and would otherwise pass `gt=0`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    source: str = Field(
        description="Catalog name (see `tunelab models list`), a local Hugging Face model folder, "
        "a hub id already in the local Hugging Face cache, or a .gguf file."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = Field(
        False, description="Allow model code shipped with the checkpoint to run. Off unless you trust it."
    )
    dropout: float | None = Field(
        None, ge=0, lt=1,
        description="Override every dropout probability in the model config (hidden, attention, classifier); "
        "default: the checkpoint's own values.",
    )
    attention: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernel (transformers attn_implementation). auto: eager for bf16 on a CPU "
        "with train.max_length <= 512 (faster there than the CPU flash kernel), else the model's default.",
    )


class ReplayConfig(Section):
    """General data mixed into every epoch of training (replay against catastrophic forgetting)."""

    source: str = Field(
        "general-text", description="'general-text' (packaged text, never the retention set's documents) or a "
        "file/folder of causal-lm rows (text, messages, ...).",
    )
    fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training samples that are replayed general data (0.1: one "
        "replayed sample for every nine task samples).",
    )


class DataConfig(Section):
    train: str = Field(description="Training data: a .jsonl/.json/.csv/.tsv/.parquet file or a folder of them.")
    validation: str | None = Field(None, description="Validation data; split from train when absent.")
    test: str | None = Field(None, description="Test data; split from train when absent.")
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "txt", "conll", "imagefolder"] = Field(
        "auto", description="File format; 'auto' picks it from the file extension (or, for a folder of class "
        "sub-folders holding images, imagefolder). 'txt' reads .txt/.md files as one document each; 'conll' "
        "reads one token per line with blank lines between sentences.",
    )
    records: Literal[
        "auto", "messages", "sharegpt", "alpaca", "prompt-completion", "text", "preference", "chat-preference",
        "openai-preference", "unpaired-preference", "chat-unpaired-preference", "prompt-only", "chat-prompt-only",
    ] = Field(
        "auto",
        description="How causal-lm rows are laid out: messages (OpenAI-style chat), sharegpt (from/value), "
        "alpaca (instruction/input/output), prompt-completion, text (raw text for domain adaptation), or "
        "preference pairs for dpo/orpo/simpo: preference (prompt/chosen/rejected text), chat-preference (a "
        "prompt message list) or openai-preference (OpenAI's DPO JSONL), or single answers labelled desirable or "
        "not for kto: unpaired-preference (prompt/completion/label) or chat-unpaired-preference (a prompt message "
        "list), or prompts alone for grpo: prompt-only or chat-prompt-only (other columns are kept for the "
        "rewards); 'auto' detects it from the columns.",
    )
    tokens_column: str = Field("tokens", description="Token classification: column with the list of words.")
    tags_column: str = Field("tags", description="Token classification: column with one tag per word.")
    entities_column: str = Field(
        "entities", description="Token classification: column with character spans [{start, end, label}] over "
        "`text_column` (the span layout).",
    )
    conll_tag_column: int = Field(
        -1, description="CoNLL files: which whitespace-separated field of a line holds the tag (the token is "
        "field 0; -1 is the last).",
    )
    tag_scheme: Literal["auto", "IO", "BIO", "IOB2", "BIOES", "BILOU"] = Field(
        "auto", description="Token classification: the tag scheme of the data; 'auto' detects it from the tags.",
    )
    invalid_tags: Literal["error", "repair"] = Field(
        "error", description="Token classification: invalid tag sequences (I- without B-, overlapping or "
        "out-of-text spans) stop with the file and line, or are repaired (I- starts an entity; overlaps keep "
        "the first span) and counted.",
    )
    image_column: str = Field(
        "image", description="Image classification: column with an image path (relative to the data file) "
        "or image bytes (CSV/JSONL/parquet layouts).",
    )
    bad_images: Literal["error", "skip"] = Field(
        "error", description="Image classification: corrupt, missing or unreadable images stop with their "
        "path, or are skipped and counted (checked before training, never mid-epoch).",
    )
    bad_rows: Literal["error", "skip"] = Field(
        "error", description="Malformed causal-lm rows (unknown role, empty assistant turn, wrong types): "
        "stop with the file and line, or skip them and report the count.",
    )
    text_column: str = Field("text", description="Column holding the input text.")
    text_pair_column: str | None = Field(
        None, description="Optional second text column (sentence pairs, e.g. question + passage)."
    )
    label_column: str = Field(
        "label", description="Column holding the class label (string or integer); multi-label classification: a "
        "list of labels, or a string of labels joined by multi_label.delimiter; regression: the numeric target.",
    )
    label_columns: list[str] | None = Field(
        None, min_length=1, description="Several target columns instead of label_column: multi-label "
        "classification reads one 0/1 column per label (its name is the label), regression one numeric column per "
        "target.",
    )
    validation_size: float = Field(
        0.1, gt=0, lt=1, description="Fraction of train held out for validation when `validation` is absent."
    )
    test_size: float = Field(0.1, gt=0, lt=1, description="Fraction of train held out for test when `test` is absent.")
    empty_text: Literal["error", "drop"] = Field(
        "error", description="What to do with rows whose text is empty or only whitespace."
    )
    max_rows: int | None = Field(
        None, gt=0, description="Use only the first N rows of the data (files in name order; quick experiments, benchmarks)."
    )
    replay: ReplayConfig | None = Field(
        None, description="Causal LMs: mix general text into training so the model keeps its general ability "
        "(a mitigation of catastrophic forgetting).",
    )

    @model_validator(mode="after")
    def _room_to_train(self) -> "DataConfig":
        if self.validation is None and self.test is None and self.validation_size + self.test_size >= 1:
            raise ValueError(f"data.validation_size {self.validation_size} + data.test_size {self.test_size} hold out "
                             "all of data.train, leaving nothing to train on; keep their sum below 1 (e.g. 0.1 each)")
        return self

    def split_paths(self) -> dict[str, str]:
        """The configured files by split (train, then validation and test where given)."""
        paths = {"train": self.train, "validation": self.validation, "test": self.test}
        return {split: path for split, path in paths.items() if path is not None}


class FullMethod(Section):
    name: Literal["full"] = "full"


class FreezeMethod(Section):
    name: Literal["freeze"] = "freeze"
    layers: int = Field(
        0, ge=0, description="Freeze the first N transformer layers (counted from the input side)."
    )
    embeddings: bool = Field(True, description="Freeze the embedding layer.")
    patterns: list[str] = Field(
        default_factory=list, description="Also freeze every parameter whose name matches one of these regexes."
    )
    train_last: int | None = Field(
        None, ge=0, description="Train only the last N blocks and the head after them, freezing everything "
        "before (0: a linear probe on the frozen backbone). Overrides layers and embeddings.",
    )


class LoraMethod(Section):
    name: Literal["lora"] = "lora"
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["auto", "all-linear"] = Field(
        "auto", description="Module names to adapt; 'auto' uses PEFT's default for the architecture."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    train_embeddings: Literal["auto", "new-tokens", "all", "none"] = Field(
        "auto", description="Causal LMs: train the rows of tokens added by lm.add_tokens (new-tokens), the whole "
        "embedding and lm_head (all), or neither; 'auto' is new-tokens when tokens are added, else none.",
    )
    merge: bool = Field(True, description="Save model/ with the adapter merged in (the adapter is kept beside it).")
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r "
                                                "(higher ranks keep learning).")
    init: Literal["default", "gaussian", "pissa", "pissa-fast", "olora"] = Field(
        "default", description="How the adapter starts. default (PEFT's Kaiming-uniform A) and gaussian (A from "
        "N(0, 1/r)) start B at zero. pissa starts A and B at the top-r singular vectors of each weight, olora at its "
        "QR factors, and both take that part out of the frozen base, so training moves the principal directions; "
        "pissa-fast uses a randomized SVD (16 iterations) for large models. LoRA only; adapter/ is saved converted "
        "to a plain LoRA of rank 2r on the original base.",
    )
    lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: the B matrices train at train.learning_rate times this (the paper uses "
        "16); null trains A and B at one rate.",
    )


class PeftAdapterMethod(Section):
    """What the other PEFT adapters share: where they go and whether model/ is saved merged."""

    target_modules: list[str] | Literal["auto", "all-linear"] = Field(
        "auto", description="Module names to adapt; 'auto' uses PEFT's default for the architecture."
    )
    merge: bool = Field(True, description="Save model/ with the adapter merged in (the adapter is kept beside it).")


class Ia3Method(PeftAdapterMethod):
    """IA3: learned vectors that rescale the keys, values and feed-forward activations (the fewest
    trainable parameters of the adapters)."""

    name: Literal["ia3"] = "ia3"
    feedforward_modules: list[str] | Literal["auto"] = Field(
        "auto", description="Which of target_modules are feed-forward layers (their input is rescaled, not their "
        "output); 'auto' uses PEFT's default.",
    )


class LycorisMethod(PeftAdapterMethod):
    """What LoHa and LoKr (the LyCORIS adapters) share: a rank, a scale and two dropouts."""

    r: int = Field(8, gt=0, description="Rank of the low-rank factors.")
    alpha: int = Field(8, gt=0, description="Scaling numerator (scale = alpha / r).")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout over the rank dimension during training.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of skipping an adapted module in a step.")


class LohaMethod(LycorisMethod):
    """LoHa: the weight update as the Hadamard product of two low-rank products (LyCORIS)."""

    name: Literal["loha"] = "loha"


class LokrMethod(LycorisMethod):
    """LoKr: the weight update as a Kronecker product of a small matrix and a low-rank one (LyCORIS)."""

    name: Literal["lokr"] = "lokr"
    decompose_both: bool = Field(False, description="Decompose the left Kronecker factor into a low-rank product too.")


class VeraMethod(PeftAdapterMethod):
    """VeRA: one pair of frozen random low-rank matrices shared by every adapted layer, with two learned
    scaling vectors per layer (far fewer trainable parameters than LoRA at a higher rank)."""

    name: Literal["vera"] = "vera"
    r: int = Field(256, gt=0, description="Rank of the shared random matrices.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the VeRA input.")
    d_initial: float = Field(0.1, gt=0, description="Starting value of the learned d vector.")


class OftMethod(PeftAdapterMethod):
    """OFT: each adapted weight is multiplied by a learned block-diagonal orthogonal matrix, which keeps
    the angles between its neurons (the pretrained structure) intact."""

    name: Literal["oft"] = "oft"
    block_size: int = Field(32, gt=0, description="Size of each orthogonal block (oft_block_size); it must divide "
                                                  "the adapted layers' input size.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of skipping an adapted module in a step.")


class BoftMethod(PeftAdapterMethod):
    """BOFT: OFT's orthogonal matrix built as a product of sparse butterfly factors, so larger blocks
    cost fewer parameters."""

    name: Literal["boft"] = "boft"
    block_size: int = Field(4, gt=0, description="Size of each orthogonal block (boft_block_size); it must divide "
                                                 "the adapted layers' input size.")
    butterfly_factors: int = Field(1, gt=0, description="How many butterfly factors multiply (boft_n_butterfly_"
                                                        "factor); 1 is OFT's block-diagonal matrix.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Multiplicative dropout on the orthogonal blocks.")


class PromptTuningMethod(Section):
    """Prompt tuning (causal LMs): learned embeddings of `num_virtual_tokens` tokens put before every
    input; the model's own weights do not change, so nothing merges and adapter/ is the result."""

    name: Literal["prompt-tuning"] = "prompt-tuning"
    num_virtual_tokens: int = Field(20, gt=0, description="How many learned tokens precede each input.")
    init_text: str | None = Field(
        None, description="Start the virtual tokens from this text's token embeddings (repeated to length), e.g. "
        "'Answer the customer's question politely:'; null starts them at random.",
    )


class PrefixTuningMethod(Section):
    """Prefix tuning (causal LMs): learned keys and values of `num_virtual_tokens` positions in every
    attention layer; the model's own weights do not change, so nothing merges and adapter/ is the result."""

    name: Literal["prefix-tuning"] = "prefix-tuning"
    num_virtual_tokens: int = Field(20, gt=0, description="How many learned positions each attention layer sees.")
    projection: bool = Field(False, description="Reparameterise the prefix through a two-layer MLP while training "
                                                "(the paper's prefix_projection; more parameters, steadier).")


class DoraMethod(LoraMethod):
    name: Literal["dora"] = "dora"  # type: ignore[assignment]


class QloraMethod(LoraMethod):
    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (saves ~0.4 bit/param).")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Dtype the 4-bit weights are "
                                                           "dequantized to for each matmul.")


MethodConfig = Annotated[
    FullMethod | FreezeMethod | LoraMethod | DoraMethod | QloraMethod | Ia3Method | LohaMethod | LokrMethod
    | VeraMethod | OftMethod | BoftMethod | PromptTuningMethod | PrefixTuningMethod,
    Field(discriminator="name", description="How the model is adapted: full | freeze | lora | dora | qlora | ia3 | "
          "loha | lokr | vera | oft | boft | prompt-tuning | prefix-tuning."),
]


class TrainConfig(Section):
    epochs: int = Field(3, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(
        16, gt=0, description="Global batch per micro-step, across all processes (same results on 1 or N processes)."
    )
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-steps per optimizer step.")
    learning_rate: float = Field(5.0e-5, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up linearly.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps (overrides warmup_ratio).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this global norm; null disables.")
    max_length: int = Field(256, gt=1, description="Truncate inputs to this many tokens.")
    seed: int = Field(0, description="Seed for splits, initialization, shuffling and dropout.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="fp32, bf16 autocast, or auto: bf16 on a GPU with bf16 and on a CPU whose measured bf16 "
        "matmul is >= 1.3x its fp32, for models of 10M parameters and more; fp32 otherwise. The run records the "
        "choice (config.yaml and run.json).",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    group_by_length: bool = Field(
        True, description="Batch rows of similar length together (less padding); order stays random across batches."
    )
    label_smoothing: float | None = Field(
        None, ge=0, lt=1, description="Deprecated: use objective.label_smoothing (the cross-entropy objective); "
        "still read, with a warning, for one release.",
    )
    l2_sp: float = Field(
        0.0, ge=0, description="L2-SP strength: pull pretrained weights back toward their starting values "
        "(adds l2_sp/2 * ||w - w0||^2; new heads are not pulled). Mitigates catastrophic forgetting.",
    )
    layer_lr_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise learning-rate decay: the top block trains at learning_rate, "
        "each block below at this factor times the one above, embeddings lowest; heads at the full rate.",
    )
    log_every: int = Field(10, gt=0, description="Write a metrics.jsonl line every N optimizer steps.")
    checkpoint_every: int | None = Field(
        None, gt=0, description="Write a resumable checkpoint every N optimizer steps; default: at every evaluation."
    )
    keep_checkpoints: int = Field(1, ge=1, description="How many periodic checkpoints to keep (the best is kept apart).")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads; default: torch's choice.")


class FsdpConfig(Section):
    """FSDP2 (torch `fully_shard`, through Accelerate's plugin): parameters, gradients and optimizer state
    sharded across processes, gathered one wrapped block at a time for its forward and backward."""

    reshard_after_forward: bool = Field(
        True, description="Free each block's gathered parameters after its forward (ZeRO-3-like, least memory); "
        "false keeps them until backward (ZeRO-2-like, one all-gather fewer per step).",
    )
    cpu_offload: bool = Field(False, description="Keep sharded parameters and optimizer state in CPU memory "
                                                 "(GPU runs; slower, for models that do not fit otherwise).")
    activation_checkpointing: bool = Field(
        False, description="Recompute each wrapped block's activations in backward (the same trade as "
        "train.gradient_checkpointing, applied per sharded block).",
    )
    wrap: list[str] | None = Field(
        None, description="Module class names sharded as one unit each; default: the model's own transformer "
        "block classes (transformers' _no_split_modules, e.g. LlamaDecoderLayer).",
    )


class DeepSpeedConfig(Section):
    """DeepSpeed ZeRO through Accelerate's plugin; DeepSpeed owns the optimizer step, gradient averaging
    and clipping (train.max_grad_norm becomes its gradient_clipping)."""

    stage: Literal[1, 2, 3] = Field(2, description="ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also "
                                                   "parameters.")
    offload_optimizer: bool = Field(False, description="Optimizer state in CPU memory (ZeRO-Offload).")
    offload_params: bool = Field(False, description="Parameters in CPU memory between uses (stage 3 only).")
    config: str | dict | None = Field(
        None, description="A DeepSpeed config (a JSON file, or a mapping) merged over what tunelab derives; "
        "batch sizes, gradient accumulation, clipping and precision always come from train.*.",
    )


class DistributedConfig(Section):
    """How several processes (launched by `tunelab launch`, `accelerate launch` or torchrun) share the work.
    A single process ignores this section."""

    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="auto and ddp: every process holds the whole model, gradients are averaged "
        "(DistributedDataParallel); fsdp: FSDP2 shards the model (distributed.fsdp); deepspeed: DeepSpeed "
        "ZeRO (distributed.deepspeed).",
    )
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)


class SftObjective(Section):
    """Supervised fine-tuning of causal LMs: next-token cross-entropy over the trained tokens (lm.train_on),
    normalised by their global count."""

    name: Literal["sft"] = "sft"


class BinaryCrossEntropyObjective(Section):
    """Binary cross-entropy of one logit per label (multi-label classification): one term per row and label."""

    name: Literal["binary-cross-entropy"] = "binary-cross-entropy"
    pos_weight: Literal["none", "balanced"] | dict[str, float] = Field(
        "none", description="Weight of a label's positive examples: none (1), balanced (negatives / positives in "
        "the training data, capped at 100), or a mapping label -> weight (others 1).",
    )


class MseObjective(Section):
    """Mean squared error of the predicted values (regression), on standardized targets when
    regression.standardize is on: one term per row and target."""

    name: Literal["mse"] = "mse"


class HuberObjective(Section):
    """Huber loss of the predicted values (regression): squared below `delta`, linear above, so a few
    outlying targets pull less than under mse."""

    name: Literal["huber"] = "huber"
    delta: float = Field(1.0, gt=0, description="Where the loss turns from squared to linear (in standardized "
                         "units when regression.standardize is on).")


class ContrastiveObjective(Section):
    """In-batch negatives (sentence-transformers' MultipleNegativesRankingLoss): each anchor's positive
    against every other positive of the micro-batch (and every hard negative), one term per anchor."""

    name: Literal["contrastive"] = "contrastive"
    scale: float = Field(20.0, gt=0, description="Cosine similarities are multiplied by this (1 / temperature: "
                         "20 is a temperature of 0.05).")


class TripletObjective(Section):
    """Triplet loss: the anchor closer to its positive than to its negative by `margin`, one term per row."""

    name: Literal["triplet"] = "triplet"
    distance: Literal["euclidean", "cosine"] = Field("euclidean", description="Distance between embeddings.")
    margin: float = Field(5.0, gt=0, description="Required gap between the negative's and the positive's distance "
                          "(5 suits euclidean distance of unnormalized embeddings; about 0.5 suits cosine).")


class CosineSimilarityObjective(Section):
    """Scored pairs: the squared error between the pair's cosine similarity and its score, one term per row."""

    name: Literal["cosine-similarity"] = "cosine-similarity"


class CrossEntropyObjective(Section):
    """Cross-entropy of a classification head over its classes: one term per row (text and image
    classification) or per labelled token (token classification)."""

    name: Literal["cross-entropy"] = "cross-entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing (0: none).")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class's rows by N / (classes x its training count), as "
        "scikit-learn's 'balanced', so rare classes weigh as much as common ones (the mean weight over the "
        "training rows stays 1); validation loss stays unweighted.",
    )


class DpoObjective(Section):
    """Direct preference optimisation on (prompt, chosen, rejected) pairs: the policy's log-probability
    margin of chosen over rejected, measured against the starting model's (the reference), pushed up.
    The reference log-probabilities are computed once before training, so no second model is held."""

    name: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0, description="Strength of the pull toward the reference (higher: stay closer).")
    loss: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid: DPO's logistic loss; ipo: IPO's squared loss on per-token log-ratios "
        "(target margin 1/(2 beta)), which does not keep pushing pairs that are already separated.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed fraction of flipped preference labels (conservative DPO; "
        "sigmoid loss only).",
    )


class OrpoObjective(Section):
    """ORPO, reference-free: the chosen answer's next-token loss plus beta times an odds-ratio term that
    favours chosen over rejected (both on per-token mean log-probabilities)."""

    name: Literal["orpo"] = "orpo"
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term against the chosen answer's loss.")


class SimpoObjective(Section):
    """SimPO, reference-free: the reward of an answer is beta times its per-token mean log-probability;
    chosen must beat rejected by the margin gamma."""

    name: Literal["simpo"] = "simpo"
    beta: float = Field(2.0, gt=0, description="Reward scale.")
    gamma: float = Field(0.5, ge=0, description="Target reward margin of chosen over rejected.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed fraction of flipped labels.")


class KtoObjective(Section):
    """KTO on answers labelled desirable or not (no pairs needed): each answer's log-ratio to the
    starting model, measured against a batch estimate of the policy's KL from it, pushed up for
    desirable answers and down for undesirable ones. The reference is scored once before training."""

    name: Literal["kto"] = "kto"
    beta: float = Field(0.1, gt=0, description="Strength of the pull toward the reference (higher: stay closer).")
    desirable_weight: float = Field(
        1.0, gt=0, description="Loss weight of desirable answers; with unbalanced labels, weight the rarer side "
        "so weight x count is about even (KTO's paper: within 1 to 4/3).",
    )
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of undesirable answers.")


class ExactMatchReward(Section):
    """1 when the answer (or the part `extract` captures) equals the row's `column`, else 0."""

    name: Literal["exact_match"] = "exact_match"
    column: str = Field("answer", description="The data column holding the correct answer.")
    extract: str | None = Field(
        None, description="A regular expression whose first group is the answer inside the completion (e.g. "
        "'Answer: (.+)'); default: the whole completion. No match scores 0.",
    )
    ignore_case: bool = Field(True, description="Compare case-insensitively (whitespace is always trimmed).")
    weight: float = Field(1.0, description="Weight of this reward in the sum.")

    @field_validator("extract")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _check_regex(value)


class RegexReward(Section):
    """1 when the completion matches `pattern` (a format check: tags present, a number last), else 0."""

    name: Literal["regex"] = "regex"
    pattern: str = Field(description="Python regular expression, searched in the completion.")
    full_match: bool = Field(False, description="The whole completion must match, not just a part of it.")
    weight: float = Field(1.0, description="Weight of this reward in the sum.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _check_regex(value)  # type: ignore[return-value]


class JsonSchemaReward(Section):
    """1 when the completion is JSON valid against `schema`, 0.5 when it is JSON that is not, else 0."""

    name: Literal["json_schema"] = "json_schema"
    schema_: dict | str = Field(
        alias="schema", description="A JSON Schema, inline or as the path of a .json file.",
    )
    weight: float = Field(1.0, description="Weight of this reward in the sum.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, populate_by_name=True)


class LengthReward(Section):
    """1 for a completion of min_tokens..max_tokens tokens, falling linearly to 0 one band-width outside."""

    name: Literal["length"] = "length"
    min_tokens: int = Field(0, ge=0, description="Shortest length that scores 1.")
    max_tokens: int = Field(gt=0, description="Longest length that scores 1.")
    weight: float = Field(1.0, description="Weight of this reward in the sum.")

    @model_validator(mode="after")
    def _band(self) -> LengthReward:
        if self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens})")
        return self


class FunctionReward(Section):
    """Your own Python reward, `fn(prompts, completions, **columns) -> list[float]` as TRL calls it. It runs
    with your permissions, so it needs `objective.allow_code: true`; its file's hash is in the lineage."""

    name: Literal["function"] = "function"
    path: str = Field(description="'file.py:function_name', relative to where tunelab runs.")
    weight: float = Field(1.0, description="Weight of this reward in the sum.")

    @field_validator("path")
    @classmethod
    def _file_and_name(cls, value: str) -> str:
        file, _, function = value.rpartition(":")
        if not file.endswith(".py") or not function.isidentifier():
            raise ValueError(f"{value!r} is not 'file.py:function_name'")
        return value


RewardConfig = Annotated[
    ExactMatchReward | RegexReward | JsonSchemaReward | LengthReward | FunctionReward,
    Field(discriminator="name"),
]


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"{value!r} is not a valid regular expression ({err})") from None
    return value


class GrpoObjective(Section):
    """GRPO, RL with verifiable rewards: for each prompt the model samples `num_generations` answers, the
    rewards score them, and each answer's advantage is its reward against its group's mean (and spread).
    The policy-gradient loss is PPO's clipped one; `beta` adds a KL penalty to the starting model."""

    name: Literal["grpo"] = "grpo"
    rewards: list[RewardConfig] = Field(
        min_length=1, description="Reward functions, summed with their weights: exact_match, regex, json_schema, "
        "length, function.",
    )
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (a group). train.batch_size "
                                 "counts prompts, so a step trains on batch_size x num_generations answers.")
    max_new_tokens: int = Field(64, gt=0, description="Longest sampled answer.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the answers.")
    beta: float = Field(0.0, ge=0, description="KL penalty to the starting model (0: none, as TRL's default). "
                        "With LoRA/DoRA the reference is the model with its adapter off; with full fine-tuning a "
                        "frozen copy of the weights (one more model in memory).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio (lower side).")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clip range; default: epsilon (DAPO uses "
                                       "0.28).")
    num_iterations: int = Field(1, ge=1, description="Optimizer steps on each batch of sampled answers (the "
                                "clip bounds how far later steps move from the sampling policy).")
    scale_rewards: Literal["group", "none"] = Field(
        "group", description="group: advantages are divided by the group's standard deviation; none: only "
        "centred (Dr. GRPO).",
    )
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = Field(
        "dapo", description="How token losses are averaged: dapo: over every answer token of the step; grpo: "
        "within each answer, then over answers; dr_grpo: over answers x max_new_tokens.",
    )
    eval_temperature: float = Field(0.0, ge=0, description="Validation answers: 0 is greedy (one answer per "
                                    "prompt, comparable between base and tuned).")
    allow_code: bool = Field(False, description="Allow `function` rewards, which run your Python file.")

    def files(self) -> list[tuple[str, str]]:
        """(config key, path) of every file a reward reads: a function's code, a JSON schema's file —
        what confinement checks, lineage hashes and the base-score cache keys on."""
        found = []
        for i, reward in enumerate(self.rewards):
            if isinstance(reward, FunctionReward):
                found.append((f"objective.rewards[{i}].path", reward.path.rpartition(":")[0]))
            elif isinstance(reward, JsonSchemaReward) and isinstance(reward.schema_, str):
                found.append((f"objective.rewards[{i}].schema", reward.schema_))
        return found

    @model_validator(mode="after")
    def _code_needs_consent(self) -> GrpoObjective:
        if any(r.name == "function" for r in self.rewards) and not self.allow_code:
            raise ValueError("a 'function' reward runs your Python code: set objective.allow_code: true to allow it")
        return self


# Objectives are registered in tunelab.objectives (OBJECTIVES) and their settings listed here, so the
# whole config validates and exports a JSON schema without importing torch (as methods do).
ObjectiveConfig = Annotated[
    SftObjective | CrossEntropyObjective | BinaryCrossEntropyObjective | MseObjective | HuberObjective
    | ContrastiveObjective | TripletObjective | CosineSimilarityObjective
    | DpoObjective | OrpoObjective | SimpoObjective | KtoObjective | GrpoObjective,
    Field(discriminator="name", description="What training optimises: sft | cross-entropy | binary-cross-entropy | "
          "mse | huber | contrastive | triplet | cosine-similarity | dpo | orpo | simpo | kto | grpo."),
]


class RetentionSet(Section):
    """A held-out set that measures general (or earlier) ability before and after fine-tuning."""

    source: str = Field(
        description="'general-text' (causal LMs: packaged general English text not used in training) or a "
        "file/folder: causal-lm rows (text, messages, ...) or, for classifiers, a previous task's held-out set.",
    )
    name: str | None = Field(None, description="Name in reports; default: the source's name.")
    head: str | None = Field(
        None, description="Classifiers: the model folder whose classification head scores this set (the "
        "previous task's model); default: model.source.",
    )
    metric: str | None = Field(
        None, description="Metric whose change is the forgetting; default: perplexity for causal LMs, the "
        "head's task default (macro_f1) for classifiers.",
    )
    max_rows: int | None = Field(
        None, gt=0, description="Use at most this many rows; default: 64 documents of general-text (each "
        "scored on its first train.max_length tokens), every row of a file.",
    )
    max_forgetting: float | None = Field(None, ge=0, description="Gate for this set; default: eval.max_forgetting.")
    label_column: str | None = Field(
        None, description="Classifiers: the column holding this set's class labels; default: data.label_column "
        "('label' for multi-label and regression runs, whose own targets are not one class).",
    )


class EvalConfig(Section):
    metric: str | None = Field(
        None, description="Validation metric that picks the best checkpoint; default: the task's "
        "(macro_f1 for classifiers, loss for causal LMs).",
    )
    every_steps: int | None = Field(None, gt=0, description="Evaluate every N optimizer steps; default: every epoch.")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement."
    )
    batch_size: int | None = Field(None, gt=0, description="Evaluation batch size; default: 2 x train.batch_size.")
    load_best: bool = Field(True, description="Test and save the best validation checkpoint rather than the last.")
    base: bool = Field(
        True, description="Also evaluate the starting model the same way, so eval.json shows base vs tuned."
    )
    retention: list[RetentionSet] | Literal["auto", "none"] = Field(
        "auto", description="Retention sets scored before and after training; the change is the forgetting. "
        "'auto': general-text for causal LMs, none for classifiers.",
    )
    max_forgetting: float | None = Field(
        None, ge=0, description="Gate: the run fails its gate when any retention set lost more than this "
        "fraction of its metric (0.1: perplexity up or accuracy/F1 down by more than 10%, relative).",
    )
    score_train_rows: int = Field(
        500, ge=0, description="Classifiers: score up to this many training rows (a seeded sample) at every "
        "evaluation and after training, as evaluation does: eval.json's train_sample metrics (the "
        "train/validation gap) and suspects_train.jsonl, the rows whose label stayed least probable over "
        "training (label-noise candidates, read by `tunelab diagnose`). Costs one more evaluation pass of that "
        "many rows each time; 0 skips it.",
    )
    generate_samples: int = Field(
        32, ge=0, description="Causal LMs: held-out prompts to answer with generation settings, scored by exact "
        "match and ROUGE-L against the reference answer (0 skips generation).",
    )
    generate_max_new_tokens: int | Literal["auto"] = Field(
        "auto", description="Token budget of those evaluation answers. auto: generation.max_new_tokens, capped at "
        "twice the longest reference answer plus 16 tokens (an answer past that scores no better; a base model "
        "that never stops would otherwise run to the full budget on every prompt).",
    )


class LanguageModelConfig(Section):
    """Settings of the causal-lm task: how conversations become tokens, and which tokens are trained."""

    template: str = Field(
        "auto", description="Chat template: 'auto' (the model's own), a named one (chatml, llama-3, alpaca) "
        "or a .jinja file. The template used is saved with the model and used by `tunelab chat`.",
    )
    train_on: Literal["assistant", "last-assistant", "all"] = Field(
        "assistant", description="Which tokens carry loss: every assistant turn (with its end-of-turn token), "
        "only the last assistant turn, or every token.",
    )
    system_prompt: str | None = Field(
        None, description="System message added to conversations that have none (training and chat)."
    )
    packing: bool = Field(
        False, description="Pack several samples per row up to train.max_length (best-fit decreasing), with "
        "per-sample positions and no attention across samples.",
    )
    add_tokens: list[str] = Field(
        default_factory=list, description="Special tokens to add to the tokenizer (embeddings are resized)."
    )


class TokenClassificationConfig(Section):
    """Settings of the token-classification task: how word labels meet sub-word tokens."""

    label_all_subtokens: bool = Field(
        False, description="Train every sub-token of a word on its label (false: only the first sub-token)."
    )
    stride: int | None = Field(
        None, ge=0, description="Texts longer than train.max_length are split into windows overlapping by this "
        "many tokens; predictions are merged back (each token scored by the window where it is most central). "
        "Default: 32, or half a window when train.max_length is too short for 32.",
    )


class MultiLabelConfig(Section):
    """Settings of the multi-label classification task: how labels are read and how scores become labels."""

    delimiter: str = Field(",", min_length=1, description="Separator of labels written in one string "
                           "(\"E11.9,I10\"); list columns need none.")
    allow_empty: bool = Field(True, description="Whether a row may have no label at all (false: such a row stops "
                              "with its file and line).")
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability above which a label is predicted, before "
                             "tuning.")
    tune_threshold: Literal["none", "global", "per_label"] = Field(
        "per_label", description="After training, choose the threshold that maximises F1 on validation: one for "
        "every label (global: micro F1) or one per label; saved with the model and used on test and in predict.",
    )


class RegressionConfig(Section):
    """Settings of the regression task."""

    standardize: bool = Field(True, description="Train on targets scaled to mean 0 and standard deviation 1 (from "
                              "the training data); predictions are scaled back. The scale is saved with the model.")


class EmbeddingConfig(Section):
    """Settings of the embedding task: which columns pair up, and how token vectors become one embedding."""

    anchor_column: str = Field("anchor", description="Column of the query / anchor text.")
    positive_column: str = Field("positive", description="Column of the matching text (the answer, the document).")
    negative_column: str | None = Field(None, description="Optional column of a hard negative (a text that must "
                                        "not match); the triplet objective needs it.")
    score_column: str | None = Field(
        None, description="Column of a similarity score in [0, 1] per pair (the cosine-similarity objective); "
        "scored pairs are evaluated by Spearman correlation.",
    )
    corpus: str | None = Field(
        None, description="Text embeddings: a file of further documents (column corpus_column) ranked with the "
        "held-out answers at every evaluation, so validation and test search the real collection, not only the "
        "answers of their own pairs.",
    )
    corpus_column: str = Field("text", description="The column of embedding.corpus holding each document.")
    pooling: Literal["auto", "mean", "cls", "max"] = Field(
        "auto", description="Token vectors -> one embedding; auto: the model's sentence-transformers pooling "
        "(1_Pooling/config.json), else mean over the non-padding tokens.",
    )
    normalize: Literal["auto"] | bool = Field(
        "auto", description="Scale embeddings to unit length; auto: as the model's sentence-transformers modules "
        "say (a Normalize module), else no.",
    )


class AugmentConfig(Section):
    """Training-time image augmentation (evaluation always uses resize + center crop)."""

    random_resized_crop: bool = Field(False, description="Random crop of 8-100% area, resized to the input size.")
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="Area range of the random resized crop.")
    horizontal_flip: bool = Field(False, description="Flip left-right with probability 0.5.")
    color_jitter: float = Field(0.0, ge=0, le=1, description="Brightness/contrast/saturation jitter strength.")


class ImageConfig(Section):
    """Settings of the image-classification task; sizes and normalization come from the model."""

    size: int | None = Field(
        None, gt=0, description="Input size in pixels; default: the model's pretrained configuration."
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class GenerationConfig(Section):
    """Sampling settings for evaluation generations, `tunelab generate` and `tunelab chat`."""

    max_new_tokens: int = Field(128, gt=0, description="Tokens to generate at most per answer.")
    do_sample: bool = Field(False, description="Sample (true) or decode greedily (false).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass (with do_sample).")
    top_k: int = Field(50, ge=0, description="Sample among the k most likely tokens (0: no limit).")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalty for repeating tokens (1.0: none).")
    seed: int = Field(0, description="Seed for sampling.")


class PromotionPolicy(Section):
    """What a registered model must show before `tunelab registry promote` moves it past candidate."""

    min_metrics: dict[str, float] = Field(
        default_factory=dict, description="Lower bounds on eval.json metrics, as 'split.metric': value, "
        "e.g. {test.accuracy: 0.9}.",
    )
    max_metrics: dict[str, float] = Field(
        default_factory=dict, description="Upper bounds on eval.json metrics, e.g. {test.loss: 1.2}.",
    )
    max_forgetting: float | None = Field(
        None, ge=0, description="Largest forgetting allowed on any retention set (0.1 = 10% relative loss).",
    )
    require_gates_passed: bool = Field(True, description="The run's own evaluation gates must have passed.")
    require_data_check: bool = Field(True, description="The run's data check must have passed (no errors).")
    require_pii_clean: bool = Field(
        True, description="The data the run trained on must have no PII findings (redacted data counts as clean).",
    )
    staging_role: Literal["engineer", "admin"] = Field(
        "engineer", description="Server: the token role that may promote to staging (and archive).",
    )
    production_role: Literal["engineer", "admin"] = Field(
        "admin", description="Server: the token role that may promote to production.",
    )


PiiEntity = Literal["email", "phone", "credit_card", "iban", "national_id", "ip_address"]


class GovernanceConfig(Section):
    pii: Literal["block", "redact", "warn", "off"] = Field(
        "warn", description="PII found in the training data: block refuses to train and lists the rows and "
        "fields; redact trains on a new, redacted dataset version (needs a workspace); warn records it; off "
        "skips the scan.",
    )
    pii_entities: list[PiiEntity] = Field(
        default_factory=lambda: ["email", "phone", "credit_card", "iban", "national_id", "ip_address"],
        description="Which kinds of PII the scan looks for.",
    )
    on_data_check_errors: Literal["block", "warn"] = Field(
        "block", description="The data check found errors (a split with no rows, empty rows, labels never seen "
        "in train, rows of train also in another split, missing columns): block refuses to train and names the "
        "first; warn records them and trains anyway.",
    )
    presidio: bool = Field(
        False, description="Also scan with Microsoft Presidio (names, locations; needs the 'presidio' extra).",
    )
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="Estimated Jaccard similarity (MinHash over word 3-grams) above which two "
        "rows count as near duplicates.",
    )
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ +=-]{0,99}")


class OutputConfig(Section):
    dir: str = Field("runs", description="Folder that holds run folders.")
    name: str | None = Field(
        None, description="Run name prefix (a plain name: letters, digits, '.', '_', '-', '+', '=' and spaces, no "
        "folders); default: the config file's name.",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # The name becomes a folder under output.dir: a separator or '..' would put the run elsewhere.
        if value is not None and (not RUN_NAME.fullmatch(value) or ".." in value):
            raise ValueError(f"{value[:80]!r} is not a plain name (no '/', '\\', '..' or leading '.'); "
                             "use letters, digits, '.', '_' and '-'")
        return value


class Config(Section):
    """A whole tunelab job."""

    task: str = Field(description="Task to train, e.g. text-classification (see `tunelab tasks`).")
    model: ModelConfig
    data: DataConfig
    method: MethodConfig = Field(default_factory=FullMethod)
    objective: ObjectiveConfig | None = Field(
        None, description="What training optimises; default: the task's (sft for causal-lm, cross-entropy for "
        "classifiers and token classification, binary-cross-entropy for multi-label, mse for regression), written "
        "into the run's config.yaml.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    lm: LanguageModelConfig = Field(default_factory=LanguageModelConfig)
    token_classification: TokenClassificationConfig = Field(default_factory=TokenClassificationConfig)
    multi_label: MultiLabelConfig = Field(default_factory=MultiLabelConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _warmup_consistent(self) -> "Config":
        if self.train.max_steps is not None and self.train.warmup_steps is not None:
            if self.train.warmup_steps > self.train.max_steps:
                raise ValueError("train.warmup_steps is larger than train.max_steps")
        return self
