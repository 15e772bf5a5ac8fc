#!/usr/bin/env bash
# r2serve bench, `vllm bench serve` and guidellm at the same load against one `r2serve serve` on
# the tiny model, and their key metrics side by side (docs/perf/serving.md records a run).
#
#   tests/bench/loadgen_peers.sh                 # concurrency 8, 200 requests, in 128 / out 64
#   R2SERVE_BIN=build/plot/server/r2serve ROUNDS=2 tests/bench/loadgen_peers.sh
#
# Environment (defaults in brackets):
#   R2SERVE_BIN   the binary [build/release/server/r2serve]
#   PEERS_VENV    the peers' venv, created on first use; must be outside the repository
#                 [<repo>/../peers/venv-loadgen]
#   OUT           where results go [a new temp dir]
#   CONCURRENCY [8] NUM_PROMPTS [200] INPUT_LEN [128] OUTPUT_LEN [64] SEED [0] ROUNDS [1]
#   SERVER_ARGS   extra `r2serve serve` flags [--enable_prefix_caching=false: every tool reuses its
#                 prompts across rounds and vllm's warm-up requests are its first measured prompts,
#                 so with prefix caching the tools would measure different prefill work]
#
# The peers are never vendored or committed. Installing them needs PyPI:
#   guidellm 0.8.1 with its dependencies (it pulls torch from PyPI, CUDA libraries included:
#   about 6 GB).
#   vllm 0.33.0 WITHOUT its dependencies plus the few pure-client ones `vllm bench serve`
#   imports: the full install pins torch 2.14 and adds cuDNN, FlashInfer and CUTLASS (another
#   ~10 GB) that the client-side benchmark never uses. It warns "Failed to import from vllm._C"
#   and runs.
# Both peers get the tiny model's own tokenizer (tokenizer.json in Hugging Face's format), the
# one the server uses, so client and server count the same tokens. vllm bench serve gets neither
# --model nor --tokenizer: it discovers both from GET /v1/models (`id` and `root`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${R2SERVE_BIN:-$ROOT/build/release/server/r2serve}
VENV=${PEERS_VENV:-$(dirname "$ROOT")/peers/venv-loadgen}
OUT=${OUT:-$(mktemp -d /tmp/loadgen_peers.XXXXXX)}
CONCURRENCY=${CONCURRENCY:-8}
NUM_PROMPTS=${NUM_PROMPTS:-200}
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-64}
SEED=${SEED:-0}
ROUNDS=${ROUNDS:-1}
SERVER_ARGS=${SERVER_ARGS:---enable_prefix_caching=false}
WARMUP=$((CONCURRENCY * 2))

[ -x "$BIN" ] || { echo "loadgen_peers: no r2serve binary at $BIN (set R2SERVE_BIN)" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$(dirname "$VENV")"
VENV=$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")
case "$VENV/" in
  "$ROOT"/*) echo "loadgen_peers: PEERS_VENV must be outside the repository ($VENV)" >&2; exit 1 ;;
esac
mkdir -p "$OUT"

# ---- the peers ----------------------------------------------------------------------------------
VLLM_CLIENT_DEPS=(
  aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 apache-tvm-ffi==0.1.15.post2
  attrs==26.1.0 blake3==1.0.11 cachetools==8.0.2 cbor2==6.3.0 charset-normalizer==3.5.3
  cloudpickle==3.1.3 distro==1.9.0 einops==0.8.2 fastapi==0.165.0 frozenlist==1.8.0
  importlib_metadata==10.2.0 jiter==0.19.0 llguidance==1.9.1 msgspec==0.22.0 multidict==6.9.1
  openai==3.57.0 openai-harmony==0.0.8 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
  opentelemetry-semantic-conventions==0.66b2 orjson==3.13.0 partial-json-parser==0.2.1.1.post7
  pillow==13.0.0 prometheus_client==0.26.0 propcache==0.5.4 psutil==7.2.2 py-cpuinfo==9.0.0
  pybase64==1.5.1 pyzmq==27.3.0 requests==2.34.2 setproctitle==1.3.8 starlette==1.10.0
  urllib3==2.8.0 uvicorn==0.54.0 watchfiles==1.3.0 xgrammar==0.2.9 yarl==1.25.1
)
if [ ! -x "$VENV/bin/guidellm" ]; then
  echo "loadgen_peers: installing guidellm into $VENV"
  python3 -m venv "$VENV"
  PIP_NO_CACHE_DIR=1 "$VENV/bin/pip" install -q guidellm==0.8.1
fi
if [ ! -x "$VENV/bin/vllm" ]; then
  echo "loadgen_peers: installing vllm (client side only, --no-deps) into $VENV"
  PIP_NO_CACHE_DIR=1 "$VENV/bin/pip" install -q --no-deps vllm==0.33.0 "${VLLM_CLIENT_DEPS[@]}"
fi

# ---- the server ---------------------------------------------------------------------------------
MODEL="$OUT/tiny"
[ -f "$MODEL/config.json" ] || "$BIN" make-tiny-model --preset tiny --out "$MODEL" > /dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
"$BIN" serve --model "$MODEL" --served-model-name tiny --port "$PORT" --max-num-seqs 64 \
  --kv-cache-memory 256M $SERVER_ARGS > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -sf "$URL/health" > /dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.2
done
curl -sf "$URL/health" > /dev/null || { echo "loadgen_peers: server not ready" >&2; exit 1; }
echo "loadgen_peers: server $URL (pid $SERVER), results in $OUT"

# ---- the runs -----------------------------------------------------------------------------------
# Each client's CPU seconds (user + sys) go to OUT/<tool>-<round>.cpu: on a small machine the
# client competes with the server for the same cores.
cpu() {  # cpu NAME COMMAND...: runs COMMAND, writes its user + sys seconds to OUT/NAME.cpu
  local name=$1
  shift
  /usr/bin/time -f "%U %S" -o "$OUT/$name.time" "$@"
  awk '{printf "%.2f\n", $1 + $2}' "$OUT/$name.time" > "$OUT/$name.cpu"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "loadgen_peers: round $round: r2serve bench"
  cpu "r2serve-$round" "$BIN" bench --base-url "$URL" --endpoint /v1/completions --num-prompts "$NUM_PROMPTS" \
    --max-concurrency "$CONCURRENCY" --random-input-len "$INPUT_LEN" \
    --random-output-len "$OUTPUT_LEN" --seed "$SEED" --warmup "$WARMUP" \
    --metric-percentiles 50,90,99 --no-progress --result-file "$OUT/r2serve-$round.json" \
    > "$OUT/r2serve-$round.log" 2>&1

  echo "loadgen_peers: round $round: vllm bench serve"
  cpu "vllm-$round" "$VENV/bin/vllm" bench serve --backend openai --base-url "$URL" --endpoint /v1/completions \
    --dataset-name random --random-input-len "$INPUT_LEN" --random-output-len "$OUTPUT_LEN" \
    --num-prompts "$NUM_PROMPTS" --max-concurrency "$CONCURRENCY" --seed "$SEED" --ignore-eos \
    --temperature 0 --num-warmups "$WARMUP" --percentile-metrics ttft,tpot,itl,e2el \
    --metric-percentiles 50,90,99 --disable-tqdm --save-result --result-dir "$OUT" \
    --result-filename "vllm-$round.json" > "$OUT/vllm-$round.log" 2>&1

  echo "loadgen_peers: round $round: guidellm"
  cpu "guidellm-$round" "$VENV/bin/guidellm" run \
    --backend "kind=openai_http,target=$URL,request_format=/v1/completions" \
    --profile "kind=concurrent,streams=$CONCURRENCY" \
    --constraint "kind=max_requests,count=$NUM_PROMPTS" \
    --data "kind=synthetic_text,prompt_tokens=$INPUT_LEN,output_tokens=$OUTPUT_LEN" \
    --tokenizer "kind=huggingface_auto,model=$MODEL" --seed "kind=static,value=$SEED" \
    --output "kind=json,path=$OUT/guidellm-$round.json" --disable-progress \
    > "$OUT/guidellm-$round.log" 2>&1
done

# ---- side by side -------------------------------------------------------------------------------
"$VENV/bin/python" - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])

def vllm_like(path):  # r2serve bench and vllm bench serve share the D1 result keys
    d = json.load(open(path))
    row = {"ok": d["completed"], "failed": d["failed"], "dur": d["duration"],
           "in": d["total_input_tokens"] / max(d["completed"], 1),
           "req/s": d["request_throughput"], "out tok/s": d["output_throughput"]}
    for m in ("ttft", "tpot", "itl", "e2el"):
        for s in ("median", "p99"):
            row[f"{m} {s}"] = d[f"{s}_{m}_ms"]
    return row

def guidellm(path):
    b = json.load(open(path))["benchmarks"][0]
    m = b["metrics"]
    ok = m["request_totals"]["successful"]
    dur = b["duration"]
    ok_of = lambda k: m[k]["successful"]
    row = {"ok": ok, "failed": m["request_totals"]["errored"], "dur": dur,
           "in": ok_of("prompt_token_count")["total_sum"] / max(ok, 1),
           "req/s": ok / dur, "out tok/s": ok_of("output_token_count")["total_sum"] / dur}
    # guidellm's ITL is (last token - first token) / (tokens - 1) per request: vLLM's TPOT.
    # Its distributions of per-token metrics are weighted by tokens; with fixed output lengths
    # the median equals the per-request one. It has no gap-by-gap ITL.
    pairs = {"ttft": "time_to_first_token_ms", "tpot": "inter_token_latency_ms",
             "e2el": "request_latency"}
    for name, key in pairs.items():
        scale = 1000 if key == "request_latency" else 1
        row[f"{name} median"] = ok_of(key)["median"] * scale
        row[f"{name} p99"] = ok_of(key)["percentiles"]["p99"] * scale
    row["itl median"] = row["itl p99"] = float("nan")
    return row

def add_cpu(row, name):
    row["client cpu s"] = float(open(f"{out}/{name}.cpu").read())
    return row

cols = ["ok", "failed", "client cpu s", "dur", "in", "req/s", "out tok/s", "ttft median", "ttft p99",
        "tpot median", "tpot p99", "itl median", "itl p99", "e2el median", "e2el p99"]
print("| round | tool | " + " | ".join(cols) + " |")
print("|---|---|" + "---|" * len(cols))
for r in range(1, rounds + 1):
    rows = {"r2serve bench": add_cpu(vllm_like(f"{out}/r2serve-{r}.json"), f"r2serve-{r}"),
            "vllm bench serve": add_cpu(vllm_like(f"{out}/vllm-{r}.json"), f"vllm-{r}"),
            "guidellm": add_cpu(guidellm(f"{out}/guidellm-{r}.json"), f"guidellm-{r}")}
    for tool, row in rows.items():
        cells = [f"{row[c]:.0f}" if c in ("ok", "failed") else f"{row[c]:.2f}" for c in cols]
        print(f"| {r} | {tool} | " + " | ".join(cells) + " |")
    base = rows["r2serve bench"]
    for tool in ("vllm bench serve", "guidellm"):
        ratio = [f"{rows[tool][c] / base[c]:.2f}" if base[c] else "-" for c in cols[3:]]
        print(f"| {r} | {tool} / r2serve | | | | " + " | ".join(ratio) + " |")
EOF
