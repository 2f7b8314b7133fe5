#!/usr/bin/env bash
# The GPU path, checked on a CUDA machine in under 10 minutes (docs/scaling.md, "The GPU path"):
#   1. bf16 LoRA SFT of SmolLM2-135M with packing on SDPA (the run's own numerical check that packed
#      samples do not attend across each other: tasks/causal_lm.py), then the same job in HF Trainer + PEFT;
#   2. QLoRA (bitsandbytes 4-bit base);
#   3. FSDP2 on one GPU (`tunelab launch -n 1`, distributed.strategy fsdp);
#   4. a DPO step on headline pairs.
# Prints tokens/s, MFU and peak GPU memory of each tunelab run (run.json), and the HF Trainer + PEFT
# figures of benchmarks/bench_causal_lm.py --variant headlines --bf16 on the same GPU.
#
#   bash scripts/gpu-check.sh            # from a checkout set up with TUNELAB_TORCH="" bash scripts/setup.sh
#                                        # on the GPU machine (its own CUDA torch), plus bitsandbytes and trl
# Not yet run on a GPU: no GPU was lent to the session that wrote it (docs/journal.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d /tmp/tunelab-gpu-check-XXXX)
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine')"
REPO=$(pwd)
cd "$WORK"
"$PY" -m tunelab --quiet data example chatterbot-en --out data/chatterbot >/dev/null
"$PY" -m tunelab --quiet data example bbc-headline-pairs --out data/headline-pairs >/dev/null
base=(train.precision=bf16 train.max_steps=30 eval.base=false eval.generate_samples=0 eval.retention=none
      output.dir=runs)
report() {  # tokens/s over the steps, MFU and peak GPU memory of the newest run named $1
  "$PY" - runs "$1" <<'PY'
import json, sys, pathlib
run = max(p for p in pathlib.Path(sys.argv[1]).iterdir() if p.name.startswith(sys.argv[2] + "-"))
record, lines = json.loads((run / "run.json").read_text()), (run / "metrics.jsonl").read_text().splitlines()
steps = [json.loads(l) for l in lines if '"split"' not in l]
tps = sum(s["tokens_per_s"] for s in steps[1:]) / max(len(steps) - 1, 1)
t = record["throughput"]
print(f"{sys.argv[2]:<12} tokens/s {tps:9.0f}   MFU {t.get('mfu', 0):.3f}   peak GPU MB {t.get('peak_gpu_mb')}")
PY
}
chat="$REPO/examples/support-chat.yaml"   # LoRA r16, packing on, ChatML, SmolLM2-135M-Instruct
"$PY" -m tunelab --quiet train "$chat" "${base[@]}" model.attention=sdpa output.name=lora-packed >/dev/null
report lora-packed
"$PY" -m tunelab --quiet train "$chat" "${base[@]}" method.name=qlora lm.packing=false output.name=qlora >/dev/null
report qlora
"$PY" -m tunelab --quiet launch -n 1 train "$chat" "${base[@]}" distributed.strategy=fsdp output.name=fsdp >/dev/null
report fsdp
"$PY" -m tunelab --quiet train "$REPO/examples/headline-dpo.yaml" "${base[@]}" train.max_steps=5 output.name=dpo \
  >/dev/null
report dpo
cd "$REPO"
"$PY" benchmarks/bench_causal_lm.py --variant headlines --bf16
