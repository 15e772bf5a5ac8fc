"""r2serve bench against a real server on the tiny model: the result file has the keys of
`vllm bench serve` (API.md D1), token counts are exact, and server errors count as failures with
their message kept."""
import json
import re
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import MODEL_NAME

RESULT_KEYS = [
    "date", "backend", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "max_output_tokens_per_s", "max_concurrent_requests", "input_lens", "output_lens", "ttfts",
    "itls", "latencies", "start_times", "errors", "generated_texts",
] + [f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el")
     for stat in ("mean", "median", "std", "p90", "p99")]


def run_bench(binary, server, tmp_path, *args, timeout=300):
    out = tmp_path / "result.json"
    cmd = [binary, "bench", "--base-url", server.base_url, "--result-file", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_fixed_concurrency_32_prompts(binary, server, tmp_path):
    result, summary = run_bench(binary, server, tmp_path, "--num-prompts", "32",
                                "--max-concurrency", "4", "--random-input-len", "24",
                                "--random-output-len", "12", "--seed", "3", "--warmup", "2",
                                "--goodput", "ttft:60000", "e2el:60000")
    for key in RESULT_KEYS:
        assert key in result, key
    assert result["completed"] == 32
    assert result["failed"] == 0
    assert result["model_id"] == MODEL_NAME  # discovered from /v1/models
    assert result["max_concurrency"] == 4
    assert result["total_input_tokens"] == 32 * 24
    assert result["total_output_tokens"] == 32 * 12
    assert result["input_lens"] == [24] * 32
    assert result["output_lens"] == [12] * 32
    assert result["errors"] == [""] * 32
    # One gap per chunk after the first; the server may put several tokens in one chunk when
    # the client lags, never more chunks than tokens.
    assert all(0 <= len(itl) <= 11 for itl in result["itls"])
    assert sum(len(itl) for itl in result["itls"]) > 0
    assert all(0 < t <= e for t, e in zip(result["ttfts"], result["latencies"]))
    assert result["request_goodput"] == pytest.approx(result["request_throughput"])
    assert result["output_throughput"] == pytest.approx(32 * 12 / result["duration"])
    assert result["median_ttft_ms"] <= result["p99_ttft_ms"]
    assert "Serving Benchmark Result" in summary
    assert "Successful requests:                     32" in summary


def png_size(path):
    """(width, height) from a PNG's signature and IHDR chunk; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_beside_the_result_file_and_where_asked(binary, server, tmp_path):
    common = ["--num-prompts", "8", "--max-concurrency", "2", "--random-input-len", "8",
              "--random-output-len", "6", "--no-progress"]
    result, _ = run_bench(binary, server, tmp_path, *common)
    assert result["completed"] == 8
    beside = tmp_path / "result.png"  # result.json -> result.png by default
    assert png_size(beside) == (1280, 900)
    assert beside.stat().st_size > 20_000  # text, bars and lines, not an empty canvas

    beside.unlink()
    elsewhere = tmp_path / "sub" / "plot.png"
    elsewhere.parent.mkdir()
    run_bench(binary, server, tmp_path, *common, "--plot", str(elsewhere), "--plot-size",
              "640x480")
    assert png_size(elsewhere) == (640, 480)
    assert not beside.exists()

    elsewhere.unlink()
    run_bench(binary, server, tmp_path, *common, "--no-plot")
    assert not beside.exists() and not elsewhere.exists()

    proc = subprocess.run([binary, "bench", "--base-url", server.base_url, *common, "--plot",
                           str(tmp_path / "missing-dir" / "p.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "missing-dir/p.png" in proc.stderr


def test_models_root_is_the_checkpoint_directory(server):
    """`vllm bench serve` without --model/--tokenizer takes `id` and `root` from GET /v1/models
    and loads its tokenizer from `root` (vLLM reports the checkpoint path there)."""
    import httpx
    model = httpx.get(server.base_url + "/v1/models", timeout=30).json()["data"][0]
    assert model["id"] == MODEL_NAME
    assert model["root"] == str(server.model_dir)
    assert (Path(model["root"]) / "config.json").exists()


def test_poisson_and_gamma_arrivals(binary, server, tmp_path):
    for burstiness in ("1", "0.5"):
        result, _ = run_bench(binary, server, tmp_path, "--num-prompts", "12", "--request-rate",
                              "200", "--burstiness", burstiness, "--random-input-len", "8",
                              "--random-output-len", "4")
        assert result["completed"] == 12 and result["failed"] == 0
        assert result["request_rate"] == 200
        starts = result["start_times"]
        assert starts == sorted(starts)  # sent in arrival order, one worker each


def test_chat_endpoint(binary, server, tmp_path, needs_chat):
    result, _ = run_bench(binary, server, tmp_path, "--endpoint", "/v1/chat/completions",
                          "--num-prompts", "6", "--max-concurrency", "3", "--random-input-len",
                          "10", "--random-output-len", "5")
    assert result["completed"] == 6 and result["failed"] == 0
    assert result["backend"] == "openai-chat"
    assert result["output_lens"] == [5] * 6
    assert all(n >= 10 for n in result["input_lens"])  # words plus the chat template's tokens


def test_server_errors_are_failures_with_the_message(binary, server, tmp_path):
    result, summary = run_bench(binary, server, tmp_path, "--model", "no-such-model",
                                "--num-prompts", "3", "--random-input-len", "4",
                                "--random-output-len", "2")
    assert result["completed"] == 0 and result["failed"] == 3
    assert all(e.startswith("HTTP 404") and "no-such-model" in e for e in result["errors"])
    assert "First error: HTTP 404" in summary
    too_long, _ = run_bench(binary, server, tmp_path, "--num-prompts", "2",
                            "--random-input-len", "5000", "--random-output-len", "2")
    assert too_long["failed"] == 2
    assert all(e.startswith("HTTP 400") for e in too_long["errors"])


def test_sharegpt_dataset(binary, server, tmp_path):
    data = [{"conversations": [{"from": "human", "value": "hello there"},
                               {"from": "gpt", "value": "hi"}]},
            {"conversations": [{"from": "gpt", "value": "no human turn"}]},
            {"conversations": [{"from": "human", "value": "what is the time"}]}]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    result, _ = run_bench(binary, server, tmp_path, "--dataset-path", str(path), "--num-prompts",
                          "4", "--random-output-len", "3", "--max-concurrency", "2")
    assert result["completed"] == 4 and result["failed"] == 0
    assert result["output_lens"] == [3] * 4
    assert all(n > 0 for n in result["input_lens"])  # the server's token counts


def test_bad_flags_and_unreachable_server(binary, tmp_path):
    proc = subprocess.run([binary, "bench", "--base-url", "http://127.0.0.1:1", "--num-prompts",
                           "0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "--num-prompts" in proc.stderr
    proc = subprocess.run([binary, "bench", "--base-url", "http://127.0.0.1:1", "--model", "m",
                           "--num-prompts", "2"], capture_output=True, text=True, timeout=60)
    # Connection refused is a per-request failure, reported, not a crash.
    assert proc.returncode == 0, proc.stderr
    assert "Failed requests:                         2" in proc.stdout
    assert "First error: connect" in proc.stdout


def serve_scripted(answers):
    """A raw-socket HTTP server that answers its k-th connection with answers[k] (bytes), then
    closes it. Returns (base_url, thread)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(60)

    def run():
        with listener:
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, body = data.split(b"\r\n\r\n", 1)
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    while len(body) < length:
                        body += conn.recv(65536)
                    conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


def test_broken_streams_and_error_events_are_failures(binary, tmp_path):
    chunk = b'data: {"choices":[{"index":0,"text":"a"}]}\n\n'
    sse_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    answers = [
        sse_head + chunk + b'data: {"error":{"message":"engine died","type":"server_error"}}\n\n'
        + b"data: [DONE]\n\n",
        sse_head + chunk,  # closed without [DONE]
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(chunk) + chunk + b"\r\n40\r\ndata: {",  # cut inside a chunk
        sse_head + chunk + chunk + b"data: [DONE]\n\n",  # fine: no usage, 2 chunks
    ]
    base_url, thread = serve_scripted(answers)
    out = tmp_path / "result.json"
    proc = subprocess.run([binary, "bench", "--base-url", base_url, "--model", "m",
                           "--num-prompts", "4", "--max-concurrency", "1", "--random-input-len",
                           "3", "--random-output-len", "2", "--result-file", str(out)],
                          capture_output=True, text=True, timeout=60)
    thread.join(10)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 1 and result["failed"] == 3
    errors = result["errors"]
    assert errors[0] == "error event: engine died"
    assert errors[1] == "stream ended without data: [DONE]"
    assert errors[2].startswith("stream broken")
    assert errors[3] == ""
    assert result["output_lens"][3] == 2  # counted chunks when the server sends no usage
    assert result["input_lens"][3] == 3
    assert "First error: error event: engine died" in proc.stdout


def test_request_timeout_is_a_failure(binary, tmp_path):
    listener = socket.socket()  # accepts (the kernel's backlog) but never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    with listener:
        base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        out = tmp_path / "result.json"
        proc = subprocess.run([binary, "bench", "--base-url", base_url, "--model", "m",
                               "--num-prompts", "2", "--random-input-len", "3",
                               "--random-output-len", "2", "--timeout", "0.5", "--result-file",
                               str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["failed"] == 2
    assert all("timeout" in e or "timed out" in e for e in result["errors"]), result["errors"]
    assert result["duration"] < 30


def test_connections_are_kept_alive_and_replaced_when_closed_while_idle(binary, tmp_path):
    """Worker connections are reused; a kept-alive connection the server closed without notice
    is replaced once, and the request on it still succeeds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(60)
    connections = []
    events = b'data: {"choices":[{"index":0,"text":"a"}]}\n\n' \
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n' \
        b"data: [DONE]\n\n"
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(events) + events
              + b"\r\n0\r\n\r\n")

    def read_request(conn, pending):
        while b"\r\n\r\n" not in pending:
            more = conn.recv(65536)
            if not more:
                return None
            pending += more
        head, body = pending.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
        return body[length:]

    def run():
        served = 0
        with listener:
            while served < 3:
                conn, _ = listener.accept()
                connections.append(conn)
                with conn:
                    pending = b""
                    for _ in range(2):  # at most two requests per connection, then close
                        pending = read_request(conn, pending)
                        if pending is None:
                            break
                        conn.sendall(answer)
                        served += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    out = tmp_path / "result.json"
    proc = subprocess.run([binary, "bench", "--base-url",
                           f"http://127.0.0.1:{listener.getsockname()[1]}", "--model", "m",
                           "--num-prompts", "3", "--max-concurrency", "1", "--random-input-len",
                           "3", "--random-output-len", "1", "--result-file", str(out)],
                          capture_output=True, text=True, timeout=60)
    thread.join(10)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 3 and result["failed"] == 0, result["errors"]
    assert len(connections) == 2
