#!/usr/bin/env python3
"""Hugging Face tokenizers vs r2serve's tokenizer on the same text, in one run, one thread.

    TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 /work/goldenvenv/bin/python \\
        tests/bench/tokenizer_hf_bench.py build/h3/tests/r2_tokenizer_bench

The C++ benchmark binary writes its corpus (a deterministic English-like text, ~512 KB) with
--dump_corpus; this script times Hugging Face on exactly those bytes:
  long    encode(text) of the whole text as one string
  lines   encode(line) for each non-empty line, one call per line
  batch   encode_batch(lines) (sequential: TOKENIZERS_PARALLELISM=false)
  decode  decode(ids of the whole text)
then runs the C++ benchmarks and prints both with their ratio. Rates use process CPU time (the
build machines are shared, so wall time is noisy); wall-clock rates are printed too.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import Tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKENIZERS = {
    "deepseek_v3": REPO.parent / "shared/models/deepseek-v3-tokenizer/tokenizer.json",
    "gpt2_style": REPO / "tests/golden/fixtures/tokenizer/gpt2_style.json",
}


def timed(fn, min_seconds=2.0):
    """Best-of-runs CPU and wall seconds per call."""
    best_cpu = best_wall = float("inf")
    spent = 0.0
    result = None
    while spent < min_seconds:
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        c1, w1 = time.process_time(), time.perf_counter()
        best_cpu, best_wall = min(best_cpu, c1 - c0), min(best_wall, w1 - w0)
        spent += w1 - w0
    return best_cpu, best_wall, result


def hf_rows(name, path, text, lines):
    tok = Tokenizer.from_file(str(path))
    nbytes = len(text.encode("utf-8"))
    line_bytes = sum(len(line.encode("utf-8")) for line in lines)
    rows = {}
    cpu, wall, enc = timed(lambda: tok.encode(text, add_special_tokens=False))
    ids = enc.ids
    rows["EncodeLongText"] = (cpu, wall, nbytes, len(ids))
    cpu, wall, encs = timed(lambda: [tok.encode(line, add_special_tokens=False) for line in lines])
    rows["EncodeLines"] = (cpu, wall, line_bytes, sum(len(e.ids) for e in encs))
    cpu, wall, encs = timed(lambda: tok.encode_batch(lines, add_special_tokens=False))
    rows["EncodeBatch"] = (cpu, wall, line_bytes, sum(len(e.ids) for e in encs))
    cpu, wall, _ = timed(lambda: tok.decode(ids, skip_special_tokens=False))
    rows["Decode"] = (cpu, wall, nbytes, len(ids))
    return rows


def cpp_rows(binary):
    out = subprocess.run([binary, "--benchmark_format=json", "--benchmark_min_time=2",
                          "--benchmark_filter=Encode|Decode|Stream"],
                         check=True, capture_output=True, text=True).stdout
    rows = {}
    for b in json.loads(out)["benchmarks"]:
        kind, name = b["name"].split("/")[:2]
        scale = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[b["time_unit"]]
        mb_per_s = b["MB/s"]
        seconds_cpu = b["cpu_time"] * scale
        rows[(name, kind)] = (seconds_cpu, b["real_time"] * scale,
                              mb_per_s * seconds_cpu * 1e6, b["tokens"])
    return rows


def fmt(row):
    cpu, wall, nbytes, tokens = row
    return (f"{nbytes / cpu / 1e6:8.2f} MB/s {tokens / cpu / 1e6:7.3f} Mtok/s "
            f"(wall {nbytes / wall / 1e6:7.2f} MB/s)")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "build/h3/tests/r2_tokenizer_bench")
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        subprocess.run([binary, f"--dump_corpus={f.name}"], check=True)
        text = Path(f.name).read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line]
    print(f"corpus: {len(text.encode())} bytes, {len(lines)} lines")
    cpp = cpp_rows(binary)
    for name, path in TOKENIZERS.items():
        if not path.exists():
            print(f"{name}: {path} absent, skipped")
            continue
        hf = hf_rows(name, path, text, lines)
        print(f"\n{name}")
        for kind in ["EncodeLongText", "EncodeLines", "EncodeBatch", "Decode", "StreamDetokenize"]:
            ours = cpp.get((name, kind if kind != "EncodeBatch" else "EncodeLines"))
            theirs = hf.get(kind)
            line = f"  {kind:17}"
            line += f" r2: {fmt(ours)}" if ours else " r2: -"
            if theirs:
                line += f" | HF: {fmt(theirs)}"
                if ours:
                    line += f" | r2/HF {(ours[2] / ours[0]) / (theirs[2] / theirs[0]):6.1f}x"
                    if ours[3] != theirs[3]:
                        line += f" TOKEN COUNT DIFFERS ({ours[3]} vs {theirs[3]})"
            print(line)


if __name__ == "__main__":
    main()
