#!/usr/bin/env python3
"""Trains a tiny DeepSeek-V3 checkpoint on fixed English text, for the quantization quality report.

The random-weight presets cannot show whether a weight format keeps a model's quality (their
logits amplify any weight change ~30-50x; docs/perf/quantization.md). This script produces a
small *trained* checkpoint of the "tiny" preset's shape (MLA with q/kv LoRA, 1 dense + 3 MoE
layers of 16 routed experts, 4 per token, one shared expert, noaux_tc sigmoid routing, the tiny
byte-level BPE tokenizer of 1024 tokens) that `r2serve generate --model DIR` and
`r2_quant_quality_bench --model DIR` load:

  1. `r2serve make-tiny-model --preset tiny --seed SEED --out DIR/base` gives config.json,
     generation_config.json, the tokenizer files and the (random) MTP module,
  2. transformers' DeepseekV3ForCausalLM is built from that config (float32, eager attention,
     weights initialized by transformers with torch.manual_seed(SEED)) and trained with AdamW on
     next-token prediction over the text below,
  3. the main model's weights are written in bf16 in the checkpoint's layout (the fused
     transformers expert tensors split back into per-expert gate/up/down_proj); the MTP layer
     (model.layers.4.*, not part of transformers' model and not trained) is copied unchanged.

Training text: every regular file of /usr/share/common-licenses (Debian's copies of the GPL,
LGPL, GFDL, Apache, MPL, Artistic, BSD and CC0 texts; fixed, unrelated to this repository)
in sorted name order, joined by blank lines; the last 5% of the tokens are held out for the
validation loss. Batches are random windows drawn with a seeded generator; with the same torch
build and thread count the run is deterministic.

    /work/peers/venv-loadgen/bin/python tests/golden/train_tiny.py \\
        --r2serve build/<dir>/server/r2serve --out /tmp/tiny-trained

Needs torch, transformers >= 5 (fused expert parameters) and safetensors. About 6-8 minutes on two
CPU threads with the defaults.

`--preset small` trains the "small" preset's shape instead (hidden 1024, 12 layers of which one
dense, 64 routed experts of 6 active, vocabulary 32768: 0.39 B parameters in the main model) on
the same text with the same tokenizer (the tiny BPE: the first ~1.2k of the 32768 ids; the rest
are never seen), with its own budget (120 steps of 4 x 129 tokens, lr 1.5e-3, fused AdamW, the
held-out loss every 20 steps, recorded in training.json as heldout_curve): about 20-35 minutes on
two shared threads. Its base checkpoint is sharded; the trained one is one model.safetensors.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

TEXT_DIR = "/usr/share/common-licenses"
# Held-out English text that is not in the training set (the quality bench's perplexity text).
PROBE = (
    "Rivers carve valleys over millions of years, carrying sediment from the mountains to the "
    "sea. Where the current slows, sand and silt settle, building deltas that shift with every "
    "flood.")


# Per-preset defaults of the training budget. "tiny" is the original run (unchanged: the same
# flags give the same bytes); "small" trains the small preset's shape (0.42 B parameters, vocab
# 32768 of which the tiny BPE tokenizer uses the first ~1.2k ids) in about half an hour on two
# threads.
PRESETS = {
    "tiny": {"steps": 150, "batch": 8, "seq_len": 128, "lr": 3e-3, "eval_every": 0},
    "small": {"steps": 120, "batch": 4, "seq_len": 128, "lr": 1.5e-3, "eval_every": 20},
}


def training_text():
    names = sorted(n for n in os.listdir(TEXT_DIR)
                   if os.path.isfile(os.path.join(TEXT_DIR, n))
                   and not os.path.islink(os.path.join(TEXT_DIR, n)))
    if not names:
        sys.exit(f"{TEXT_DIR}: no text files")
    parts = []
    for n in names:
        with open(os.path.join(TEXT_DIR, n), encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
    return names, "\n\n".join(parts)


def split_experts(name, tensor, out):
    """transformers' fused [E, 2I, H] gate_up_proj / [E, H, I] down_proj -> per-expert weights."""
    prefix = name[:-len("gate_up_proj")] if name.endswith("gate_up_proj") else \
        name[:-len("down_proj")]
    for e in range(tensor.shape[0]):
        if name.endswith("gate_up_proj"):
            gate, up = tensor[e].chunk(2, dim=0)
            out[f"{prefix}{e}.gate_proj.weight"] = gate
            out[f"{prefix}{e}.up_proj.weight"] = up
        else:
            out[f"{prefix}{e}.down_proj.weight"] = tensor[e]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--r2serve", required=True, help="path to the r2serve binary")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="make-tiny-model preset whose shape is trained (default tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seq-len", type=int, default=None, help="default: the preset's")
    parser.add_argument("--lr", type=float, default=None, help="default: the preset's")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="held-out loss every N steps (0: only at the start and end)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.steps, args.batch, args.seq_len) < 1 or args.eval_every < 0:
        sys.exit("--steps, --batch and --seq-len must be positive, --eval-every >= 0")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    base = os.path.join(args.out, "base")
    if os.path.exists(base):
        shutil.rmtree(base)
    subprocess.run([os.path.abspath(args.r2serve), "make-tiny-model", "--preset", args.preset,
                    "--seed", str(args.seed), "--out", base], check=True,
                   stdout=subprocess.DEVNULL)

    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    names, text = training_text()
    ids = torch.tensor(tok.encode(text, add_special_tokens=False).ids, dtype=torch.int64)
    n_val = len(ids) // 20
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]
    print(f"text: {len(names)} files of {TEXT_DIR}, {len(text)} chars, {len(ids)} tokens "
          f"({len(train_ids)} train, {len(val_ids)} held out)", flush=True)

    config = DeepseekV3Config.from_pretrained(base)
    config._attn_implementation = "eager"
    model = DeepseekV3ForCausalLM(config).float().train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters (main model, without MTP)", flush=True)

    # The fused AdamW (one kernel over all parameters) is 2-5x faster on the small preset's 0.4 B
    # parameters; tiny keeps the original optimizer so that its checkpoint stays the same.
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if args.preset != "tiny" else {}))
    warmup = max(1, args.steps // 15)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(args.seed)
    bos = config.bos_token_id

    def batch(source, n):
        starts = torch.randint(0, len(source) - args.seq_len, (n,), generator=gen)
        rows = torch.stack([source[s:s + args.seq_len] for s in starts])
        return torch.cat([torch.full((n, 1), bos, dtype=torch.int64), rows], dim=1)

    val_gen_state = torch.Generator().manual_seed(args.seed + 1)
    val_starts = torch.randint(0, len(val_ids) - args.seq_len, (16,), generator=val_gen_state)
    val_batch = torch.cat([torch.full((16, 1), bos, dtype=torch.int64),
                           torch.stack([val_ids[s:s + args.seq_len] for s in val_starts])], 1)

    @torch.no_grad()
    def val_loss():
        model.eval()
        loss = model(val_batch, labels=val_batch).loss.item()
        model.train()
        return loss

    start = time.time()
    curve = []
    val_curve = []
    v0 = val_loss()
    print(f"step 0: held-out loss {v0:.3f} (uniform ln V = {math.log(config.vocab_size):.3f})",
          flush=True)
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x = batch(train_ids, args.batch)
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.append(loss.item())
        if step % 25 == 0 or step == args.steps - 1 or (args.preset != "tiny" and step < 3):
            print(f"step {step + 1}: train loss {loss.item():.3f} lr {lr_at(step):.2e} "
                  f"({time.time() - start:.0f} s)", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            val_curve.append([step + 1, val_loss()])
            print(f"step {step + 1}: held-out loss {val_curve[-1][1]:.3f}", flush=True)
    v1 = val_loss()
    model.eval()
    with torch.no_grad():
        probe = torch.tensor([[bos] + tok.encode(PROBE, add_special_tokens=False).ids])
        probe_loss = model(probe, labels=probe).loss.item()
    first, last = curve[:10], curve[-10:]
    print(f"train loss: first {len(first)} steps {sum(first) / len(first):.3f}, last "
          f"{len(last)} steps {sum(last) / len(last):.3f}; held-out loss {v0:.3f} -> {v1:.3f} "
          f"(ppl {math.exp(v0):.1f} -> {math.exp(v1):.1f}); probe sentence ppl "
          f"{math.exp(probe_loss):.1f}; {time.time() - start:.0f} s", flush=True)

    # Write the checkpoint: trained main model + the base checkpoint's MTP layer, all bf16.
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().float()
        if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            split_experts(name, value, tensors)
        else:
            tensors[name] = value
    # The base checkpoint is one model.safetensors (tiny) or shards (small); the trained one is
    # always written as one model.safetensors.
    shards = sorted(n for n in os.listdir(base) if n.endswith(".safetensors"))
    base_keys = set()
    mtp = f"model.layers.{config.num_hidden_layers}."
    for shard in shards:
        with safe_open(os.path.join(base, shard), framework="pt") as f:
            base_keys |= set(f.keys())
            for key in f.keys():
                if key.startswith(mtp):
                    tensors[key] = f.get_tensor(key).float()
    missing = base_keys - set(tensors)
    extra = set(tensors) - base_keys
    if missing or extra:
        sys.exit(f"layout mismatch with {base}: missing={sorted(missing)[:5]} "
                 f"extra={sorted(extra)[:5]}")
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    for name in os.listdir(base):
        if not name.endswith(".safetensors") and name != "model.safetensors.index.json":
            shutil.copy(os.path.join(base, name), os.path.join(args.out, name))
    shutil.rmtree(base)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"seed": args.seed, "steps": args.steps, "batch": args.batch,
                   "seq_len": args.seq_len, "lr": args.lr, "threads": args.threads,
                   "text": [os.path.join(TEXT_DIR, n) for n in names],
                   "train_loss_first10": sum(first) / len(first),
                   "train_loss_last10": sum(last) / len(last),
                   "heldout_loss_start": v0, "heldout_loss_end": v1,
                   "train_curve": curve,
                   **({"preset": args.preset, "eval_every": args.eval_every,
                       "heldout_curve": [[0, v0]] + val_curve + [[args.steps, v1]],
                       "train_seconds": round(time.time() - start)}
                      if args.preset != "tiny" else {})}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
