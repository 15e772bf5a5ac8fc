"""Load comparison of the two front ends on one server: N concurrent streams of T tokens over
gRPC (grpc.aio, one channel) and over HTTP (httpx, SSE completions), the same prompt and
parameters, greedy with ignore_eos so both do the same engine work. Prints wall time, output
tokens per second and the ratio. Not a test; run it against a running server:

    .venv/bin/python tests/e2e/grpc_http_load.py --http 127.0.0.1:8000 --grpc 127.0.0.1:50051 \
        --streams 256 --tokens 32
"""
import argparse
import asyncio
import importlib
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[2]


def stubs(out):
    from grpc_tools import protoc
    import grpc_tools
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    protos = [str(p) for p in (ROOT / "proto" / "r2serve" / "v1").glob("*.proto")]
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *protos]) == 0
    sys.path.insert(0, out)
    return (importlib.import_module("r2serve.v1.inference_pb2"),
            importlib.import_module("r2serve.v1.inference_pb2_grpc"))


async def run_grpc(pb, target, streams, tokens):
    msg, services = pb
    async with grpc.aio.insecure_channel(target) as ch:
        stub = services.InferenceStub(ch)

        async def one(i):
            request = msg.GenerateRequest(token_ids=msg.TokenIds(ids=[11 + i % 50, 22, 33]),
                                          sampling=msg.SamplingParams(
                                              max_tokens=tokens, temperature=0, ignore_eos=True))
            n = 0
            async for r in stub.Generate(request, timeout=600):
                n += sum(len(c.token_ids) for c in r.choices)
            return n
        start = time.monotonic()
        counts = await asyncio.gather(*[one(i) for i in range(streams)])
        return time.monotonic() - start, sum(counts)


async def run_http(base, streams, tokens):
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        async def one(i):
            body = {"prompt": [11 + i % 50, 22, 33], "max_tokens": tokens, "temperature": 0,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            n = 0
            async with client.stream("POST", base + "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"usage":{' in line:
                        n = int(line.split('"completion_tokens":')[1].split(",")[0])
            return n
        start = time.monotonic()
        counts = await asyncio.gather(*[one(i) for i in range(streams)])
        return time.monotonic() - start, sum(counts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http", default="127.0.0.1:8000")
    p.add_argument("--grpc", default="127.0.0.1:50051")
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pb = stubs(tmp)
        asyncio.run(run_grpc(pb, a.grpc, 16, 4))  # warm-up
        asyncio.run(run_http("http://" + a.http, 16, 4))
        for _ in range(a.rounds):
            g_s, g_n = asyncio.run(run_grpc(pb, a.grpc, a.streams, a.tokens))
            h_s, h_n = asyncio.run(run_http("http://" + a.http, a.streams, a.tokens))
            print(f"{a.streams} streams x {a.tokens} tokens: gRPC {g_s:.2f} s "
                  f"({g_n / g_s:.0f} tok/s, {g_n} tokens), HTTP {h_s:.2f} s "
                  f"({h_n / h_s:.0f} tok/s, {h_n} tokens), gRPC/HTTP time {g_s / h_s:.2f}")


if __name__ == "__main__":
    main()
