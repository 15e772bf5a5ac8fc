#!/usr/bin/env python3
"""Reference logits for the tiny checkpoints, from Hugging Face transformers.

The engine is checked against an independent implementation: transformers' DeepseekV3ForCausalLM
(CPU, float32, eager attention) for the main model, and a small torch reference of the MTP module
(spec section 4), which transformers does not implement. This script

  1. writes each preset checkpoint with `r2serve make-tiny-model --preset P --seed S`,
  2. loads it into transformers (FP8 weights dequantized here: fp8(w) * scale_inv[i/128][j/128]),
  3. for several random prompts records the logits of a full prefill, of a greedy step-by-step
     decode through transformers' KV cache, and of the MTP module,
  4. writes tests/golden/fixtures/model/<preset>.safetensors (read by tests/unit/model/golden_test.cc).

Rerun (after changing make-tiny-model or a preset; needs torch, transformers 4.57, safetensors):

    python3 -m venv /tmp/golden && /tmp/golden/bin/pip install torch 'transformers==4.57.*' safetensors numpy
    cmake --preset release && cmake --build build/release --target r2serve
    /tmp/golden/bin/python tests/golden/gen_model_goldens.py --r2serve build/release/server/r2serve

Tensors per prompt i (vocab V, prompt length n, m decode steps):
  p{i}.ids            I64 [n]      prompt token ids
  p{i}.prefill_logits F32 [n, V]   logits at every prompt position (one prefill)
  p{i}.decode_ids     I64 [m]      greedy continuation; decode_ids[0] = argmax(prefill_logits[-1])
  p{i}.decode_logits  F32 [m, V]   logits after feeding decode_ids[j] through the cache
  p{i}.mtp_logits     F32 [n-1, V] MTP logits at positions 0..n-2, fed (h_j, ids[j+1])
Metadata: preset, seed, transformers and torch versions.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3DecoderLayer,
    DeepseekV3RMSNorm,
)

PRESETS = ["tiny", "tiny-noqlora", "tiny-fp8"]
PROMPT_LENGTHS = [16, 23, 19]
DECODE_STEPS = 8
# A greedy step whose top two logits are closer than this (relative to the largest logit) is
# ambiguous under float rounding; such prompts are redrawn so "greedy tokens match" is meaningful.
MIN_TOP2_MARGIN = 1e-3


def load_state_dict(model_dir):
    """All tensors of the checkpoint as float32, FP8 weights dequantized with their block scales."""
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    raw = {}
    for name in files:
        with safe_open(os.path.join(model_dir, name), framework="pt") as f:
            for key in f.keys():
                raw[key] = f.get_tensor(key)
    with open(os.path.join(model_dir, "config.json")) as f:
        block = json.load(f).get("quantization_config", {}).get("weight_block_size", [128, 128])
    state = {}
    for key, tensor in raw.items():
        if key.endswith("_scale_inv"):
            continue
        if tensor.dtype == torch.float8_e4m3fn:
            scale = raw[key + "_scale_inv"].float()
            rows, cols = tensor.shape
            full = scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
            state[key] = tensor.float() * full[:rows, :cols]
        else:
            state[key] = tensor.float()
    return state


def build_model(model_dir, state):
    config = DeepseekV3Config.from_pretrained(model_dir)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(config).float().eval()
    n_main = config.num_hidden_layers
    main_state = {k: v for k, v in state.items() if not is_mtp_key(k, n_main)}
    missing, unexpected = model.load_state_dict(main_state, strict=False)
    if missing or unexpected:
        sys.exit(f"{model_dir}: state dict mismatch: missing={missing} unexpected={unexpected}")
    return config, model


def is_mtp_key(key, n_main):
    parts = key.split(".")
    return len(parts) > 2 and parts[1] == "layers" and int(parts[2]) >= n_main


class MtpReference(torch.nn.Module):
    """Spec section 4.2, depth 1: logits_{i+2} = head(norm(block(eh_proj [enorm(emb t_{i+1}); hnorm(h_i)])))."""

    def __init__(self, config, state, layer_idx):
        super().__init__()
        d = config.hidden_size
        prefix = f"model.layers.{layer_idx}."
        self.enorm = DeepseekV3RMSNorm(d, config.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(d, config.rms_norm_eps)
        self.eh_proj = torch.nn.Linear(2 * d, d, bias=False)
        self.head_norm = DeepseekV3RMSNorm(d, config.rms_norm_eps)
        self.block = DeepseekV3DecoderLayer(config, layer_idx)
        own = {
            "enorm.weight": state[prefix + "enorm.weight"],
            "hnorm.weight": state[prefix + "hnorm.weight"],
            "eh_proj.weight": state[prefix + "eh_proj.weight"],
            "head_norm.weight": state[prefix + "shared_head.norm.weight"],
        }
        for key, value in state.items():
            rest = key[len(prefix):]
            if key.startswith(prefix) and rest.split(".")[0] in (
                    "self_attn", "mlp", "input_layernorm", "post_attention_layernorm"):
                own["block." + rest] = value
        self.load_state_dict(own, strict=True)
        # The MTP copies of the embedding and head are optional duplicates of the main ones.
        self.embed = state.get(prefix + "embed_tokens.weight", state["model.embed_tokens.weight"])
        self.head = state.get(prefix + "shared_head.head.weight", state["lm_head.weight"])

    def forward(self, hidden, next_ids, rotary):
        e = self.enorm(self.embed[next_ids])
        g = self.hnorm(hidden)
        u = self.eh_proj(torch.cat([e, g], dim=-1))
        n = u.shape[1]
        positions = torch.arange(n).unsqueeze(0)
        cos, sin = rotary(u, positions)
        mask = torch.full((n, n), float("-inf")).triu(1).view(1, 1, n, n)
        out = self.block(u, attention_mask=mask, position_ids=positions,
                         position_embeddings=(cos, sin))
        if isinstance(out, tuple):
            out = out[0]
        return self.head_norm(out) @ self.head.T


def top2_margin(logits):
    top = torch.topk(logits, 2).values
    return float((top[0] - top[1]) / logits.abs().max())


@torch.no_grad()
def record_prompt(model, mtp, ids):
    input_ids = torch.tensor([ids])
    out = model(input_ids, use_cache=True, output_hidden_states=False)
    prefill = out.logits[0]
    hidden = model.model(input_ids).last_hidden_state  # after model.norm
    margins = [top2_margin(prefill[-1])]
    cache = out.past_key_values
    decode_ids, decode_logits = [], []
    next_id = int(prefill[-1].argmax())
    for step in range(DECODE_STEPS):
        decode_ids.append(next_id)
        pos = len(ids) + step
        step_out = model(torch.tensor([[next_id]]), past_key_values=cache, use_cache=True,
                         cache_position=torch.tensor([pos]))
        cache = step_out.past_key_values
        logits = step_out.logits[0, -1]
        decode_logits.append(logits)
        margins.append(top2_margin(logits))
        next_id = int(logits.argmax())
    mtp_logits = mtp(hidden[:, :-1], input_ids[:, 1:], model.model.rotary_emb)[0]
    return {
        "ids": torch.tensor(ids, dtype=torch.int64),
        "prefill_logits": prefill.contiguous(),
        "decode_ids": torch.tensor(decode_ids, dtype=torch.int64),
        "decode_logits": torch.stack(decode_logits).contiguous(),
        "mtp_logits": mtp_logits.contiguous(),
    }, min(margins)


def make_fixture(r2serve, preset, seed, out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, preset)
        subprocess.run([r2serve, "make-tiny-model", "--preset", preset, "--seed", str(seed),
                        "--out", model_dir], check=True, stdout=subprocess.DEVNULL)
        state = load_state_dict(model_dir)
        config, model = build_model(model_dir, state)
        mtp_layers = json.load(open(os.path.join(model_dir, "config.json"))).get(
            "num_nextn_predict_layers", 0)
        if mtp_layers < 1:
            sys.exit(f"preset {preset} has no MTP layer; the fixture needs one")
        mtp = MtpReference(config, state, config.num_hidden_layers).float().eval()
        rng = np.random.default_rng(1234 + PRESETS.index(preset))
        tensors = {}
        for i, n in enumerate(PROMPT_LENGTHS):
            for attempt in range(20):
                ids = [int(x) for x in rng.integers(2, config.vocab_size, size=n)]
                record, margin = record_prompt(model, mtp, ids)
                if margin >= MIN_TOP2_MARGIN:
                    break
            else:
                sys.exit(f"{preset}: no prompt of length {n} with a clear greedy margin")
            for key, value in record.items():
                tensors[f"p{i}.{key}"] = value
            top1 = torch.softmax(record["prefill_logits"][-1], -1).max().item()
            print(f"{preset} p{i}: n={n} min top-2 margin {margin:.2e} "
                  f"top-1 prob {top1:.3f} (uniform {1 / config.vocab_size:.4f})")
    path = os.path.join(out_dir, f"{preset}.safetensors")
    save_file(tensors, path, metadata={
        "preset": preset, "seed": str(seed), "transformers": transformers.__version__,
        "torch": torch.__version__})
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--r2serve", required=True, help="path to the r2serve binary")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "fixtures", "model"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    for preset in args.presets.split(","):
        make_fixture(os.path.abspath(args.r2serve), preset, args.seed, args.out)


if __name__ == "__main__":
    main()
