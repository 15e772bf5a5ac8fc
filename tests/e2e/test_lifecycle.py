"""Streams at scale, client disconnects, cancellation and SIGTERM drain (API.md 27; RELIABILITY
rows 1, 3, 29, 32)."""
import asyncio
import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from conftest import MODEL_NAME, metric, read_data_lines, wait_until

PROMPT = [11, 22, 33, 44]


def proc_status(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def parse_sse(body):
    """Data payloads of an SSE body; asserts the framing."""
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        events.append(block[len("data: "):])
    return events


def check_stream(events, n=1):
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    finishes = {}
    for e in events[:-1]:
        chunk = json.loads(e)
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            if choice["finish_reason"]:
                finishes[choice["index"]] = finishes.get(choice["index"], 0) + 1
    assert finishes == {i: 1 for i in range(n)}


async def one_stream(client, base_url, max_tokens):
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True}
    async with client.stream("POST", base_url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        text = "".join([chunk async for chunk in r.aiter_text()])
    check_stream(parse_sse(text))


async def many_streams(base_url, count, max_tokens):
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        await asyncio.gather(*[one_stream(client, base_url, max_tokens) for _ in range(count)])


def idle(server):
    m = server.metrics()
    return (metric(m, "vllm:num_requests_running") == 0 and
            metric(m, "vllm:num_requests_waiting") == 0 and
            metric(m, "r2serve_kv_blocks_used") == 0)


def test_256_concurrent_streams_and_resources_return(server):
    asyncio.run(many_streams(server.base_url, 256, 8))  # warm-up: allocator pools, threads
    assert wait_until(lambda: idle(server), 10)
    rss0, fds0 = proc_status(server.proc.pid)
    asyncio.run(many_streams(server.base_url, 256, 8))
    assert wait_until(lambda: idle(server), 10)
    assert wait_until(lambda: proc_status(server.proc.pid)[1] <= fds0 + 4, 10), \
        f"fds {proc_status(server.proc.pid)[1]} vs baseline {fds0}"
    rss1, _ = proc_status(server.proc.pid)
    assert rss1 <= rss0 * 1.10 + 16 * 2**20, f"RSS {rss1} vs baseline {rss0}"


def start_raw_stream(server, max_tokens=1000):
    body = json.dumps({"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": max_tokens,
                       "stream": True, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def test_disconnect_mid_stream_frees_kv_within_a_second(server):  # RELIABILITY 1
    sockets = [start_raw_stream(server) for _ in range(16)]
    for k, s in enumerate(sockets):
        read_data_lines(s, 2 + k % 4)
    assert metric(server.metrics(), "r2serve_kv_blocks_used") > 0
    gone_before = metric(server.metrics(), "r2serve_requests_client_gone_total")
    for s in sockets:
        s.close()
    assert wait_until(lambda: idle(server), 1.0), server.metrics().get("r2serve_kv_blocks_used")
    assert metric(server.metrics(), "r2serve_requests_client_gone_total") == gone_before + 16


def test_disconnect_before_non_stream_answer(server):  # RELIABILITY 3
    assert wait_until(lambda: idle(server), 10)
    m = server.metrics()
    aborted = metric(m, "vllm:request_success_total", finished_reason="abort")
    gone = metric(m, "r2serve_requests_client_gone_total")
    body = json.dumps({"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1000,
                       "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert wait_until(lambda: metric(server.metrics(), "vllm:num_requests_running") == 1, 5)
    s.close()
    assert wait_until(lambda: idle(server), 1.0)
    # Aborted (seen by the read side), not run to its 1000 tokens and then found gone.
    m = server.metrics()
    assert metric(m, "vllm:request_success_total", finished_reason="abort") == aborted + 1
    assert metric(m, "r2serve_requests_client_gone_total") == gone + 1


def test_client_timeouts_then_new_request_is_fast(server):  # case 27
    def doomed():
        try:
            httpx.post(server.base_url + "/v1/completions", timeout=0.5,
                       json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1000,
                             "ignore_eos": True})
        except httpx.TimeoutException:
            pass
    threads = [threading.Thread(target=doomed) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = time.monotonic()
    r = httpx.post(server.base_url + "/v1/completions", timeout=30,
                   json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 4})
    assert r.status_code == 200
    assert time.monotonic() - start < 10
    assert wait_until(lambda: idle(server), 2)


def test_sigterm_drains_in_flight_and_exits_zero(start_server):  # RELIABILITY 29
    # 20 ms per step holds the 1000-token streams in flight well past the 1 s drain.
    drain = start_server("--shutdown-timeout", "1", "--inject-step-delay-ms", "20")
    sockets = [start_raw_stream(drain) for _ in range(4)]
    for s in sockets:
        read_data_lines(s, 2)
    drain.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: drain.health() != 200, 5)
    for s in sockets:
        buf = b""
        s.settimeout(30)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if b"data: [DONE]" in buf:
                break
        assert b"data: [DONE]" in buf
        assert b'"finish_reason":"abort"' in buf
        s.close()
    assert drain.proc.wait(30) == 0


def test_sigterm_lets_short_requests_finish(start_server):
    # Slow steps keep the stream in flight when the signal arrives (the tiny model is fast).
    drain = start_server("--shutdown-timeout", "30", "--inject-step-delay-ms", "20")
    s = start_raw_stream(drain, max_tokens=20)
    buf = read_data_lines(s, 1)
    drain.proc.send_signal(signal.SIGTERM)
    s.settimeout(30)
    while b"data: [DONE]" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    assert b'"finish_reason":"length"' in buf
    assert drain.proc.wait(30) == 0


def test_engine_fault_is_loud(start_server):  # RELIABILITY 26
    # 50 ms steps keep three streams and a non-streaming request in flight until step 20 throws.
    faulty = start_server("--inject-fault", "slow@1:50ms,throw@20")
    sockets = [start_raw_stream(faulty) for _ in range(3)]
    result = {}

    def non_stream():
        r = httpx.post(faulty.base_url + "/v1/completions", timeout=30,
                       json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 500,
                             "ignore_eos": True})
        result["status"], result["body"] = r.status_code, r.json()
    thread = threading.Thread(target=non_stream)
    thread.start()
    for s in sockets:
        read_data_lines(s, 1)
    assert wait_until(lambda: metric(faulty.metrics(), "vllm:num_requests_running") == 4, 10)
    for s in sockets:
        buf = b""
        s.settimeout(30)
        while b"data: [DONE]" not in buf:
            chunk = s.recv(65536)
            assert chunk, "closed without [DONE]"
            buf += chunk
        errors_at = time.monotonic()
        assert buf.count(b'"error"') == 1 and b"injected fault (throw@20)" in buf, buf[-500:]
        assert buf.count(b"data: [DONE]") == 1
        assert b'"finish_reason":"length"' not in buf
        s.close()
    thread.join(30)
    assert result["status"] == 500
    assert result["body"]["error"]["type"] == "server_error"
    assert faulty.health() in (503, None)  # unhealthy by the time the errors are out
    assert faulty.proc.wait(5) == 1
    assert time.monotonic() - errors_at < 5
