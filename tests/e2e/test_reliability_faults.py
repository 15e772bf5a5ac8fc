"""Engine faults and process lifecycle (RELIABILITY rows 26, 27, 29, 30; docs/reliability.md):
--inject-fault syntax and its startup errors, the watchdog on a hung step (HTTP streaming and
non-streaming), slow steps that must not trip it, SIGTERM with --shutdown-timeout 0 and SIGKILL
then restart on the same port. The throw fault's test is test_lifecycle.py::test_engine_fault_is_loud.
"""
import json
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

from conftest import MODEL_NAME, metric, wait_until

PROMPT = [11, 22, 33, 44]
WATCHDOG_S = 2.0


def start_stream(server, max_tokens=1000, prompt=PROMPT):
    body = json.dumps({"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens,
                       "stream": True, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def read_until(s, marker, deadline_s=60):
    """Bytes read until `marker` appears or the peer closes."""
    buf = b""
    s.settimeout(deadline_s)
    while marker not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def sse_events(raw):
    """The data payloads of an HTTP/1.1 chunked SSE response (chunk framing removed)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    text = b""
    rest = body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        text += rest[:size]
        rest = rest[size + 2:]
    return [block[len(b"data: "):].decode() for block in text.split(b"\n\n") if block]


def assert_one_error_then_done(events, needle):
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1, events[-3:]
    errors = [json.loads(e) for e in events[:-1] if "error" in json.loads(e)]
    assert len(errors) == 1, events[-3:]
    assert needle in errors[0]["error"]["message"], errors[0]
    assert errors[0]["error"]["type"] == "server_error", errors[0]
    for e in events[:-1]:  # no choice ended before the error
        for choice in json.loads(e).get("choices", []):
            assert choice["finish_reason"] in (None, "error"), choice


# ---- --inject-fault syntax -------------------------------------------------------------------

@pytest.mark.parametrize("value,why", [
    ("explode@3", "unknown KIND"), ("throw", "no '@STEP'"), ("throw@0", "STEP"),
    ("throw@x", "STEP"), ("hang@5:2s", "only slow takes a DELAY"),
    ("slow@5", "slow needs a DELAY"), ("slow@5:200", "needs a unit"),
    ("slow@5:-1ms", "not a duration"), ("slow@5:", "empty DELAY"), ("throw@3,", "no '@STEP'"),
])
def test_bad_inject_fault_is_a_startup_error_naming_the_flag(binary, model_dir, value, why):
    r = subprocess.run([binary, "serve", "--model", str(model_dir), "--port", "0",
                        "--inject-fault", value], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "--inject-fault" in r.stderr and why in r.stderr, r.stderr


@pytest.mark.parametrize("flag,value", [("--watchdog-timeout-s", "-2"),
                                        ("--watchdog-timeout-s", "nan"),
                                        ("--write-timeout", "0"),
                                        ("--inject-step-delay-ms", "-5")])
def test_bad_watchdog_and_timeout_flags(binary, model_dir, flag, value):
    r = subprocess.run([binary, "serve", "--model", str(model_dir), "--port", "0", flag, value],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert flag in r.stderr, r.stderr


# ---- watchdog ----------------------------------------------------------------------------------

def test_hang_trips_the_watchdog(start_server):  # RELIABILITY 27
    # 100 ms steps give the requests time to be in flight before step 30 hangs.
    server = start_server("--inject-fault", "slow@1:100ms,hang@30", "--watchdog-timeout-s",
                          str(WATCHDOG_S))
    streams = [start_stream(server) for _ in range(3)]
    non_stream = {}

    def post():
        r = httpx.post(server.base_url + "/v1/completions", timeout=60,
                       json={"model": MODEL_NAME, "prompt": [5, 6, 7], "max_tokens": 500,
                             "ignore_eos": True})
        non_stream["status"], non_stream["body"] = r.status_code, r.json()
    poster = threading.Thread(target=post)
    poster.start()
    first = [read_until(s, b"data: ") for s in streams]  # every stream has started
    # All four run before step 30 hangs (3 s of 100 ms steps).
    assert wait_until(lambda: metric(server.metrics(), "vllm:num_requests_running") == 4, 10)
    raw = [f + read_until(s, b"data: [DONE]") for f, s in zip(first, streams)]
    errors_at = time.monotonic()
    # Unhealthy by the time the errors arrive (the verdict flips health before ending requests).
    assert server.health() in (503, None)
    for r in raw:
        assert_one_error_then_done(sse_events(r), "watchdog")
    poster.join(30)
    assert non_stream["status"] == 500, non_stream
    assert non_stream["body"]["error"]["type"] == "server_error"
    assert "watchdog" in non_stream["body"]["error"]["message"]
    assert server.proc.wait(10) == 1
    assert time.monotonic() - errors_at < 5
    assert "watchdog" in server.read_log()
    for s in streams:
        s.close()


def test_slow_steps_under_the_timeout_do_not_trip_it(start_server):  # RELIABILITY 27
    server = start_server("--inject-fault", "slow@1:250ms", "--watchdog-timeout-s",
                          str(WATCHDOG_S))
    start = time.monotonic()
    r = httpx.post(server.base_url + "/v1/completions", timeout=60,
                   json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 12,
                         "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert time.monotonic() - start > WATCHDOG_S  # ran longer than T in total, each step under
    assert server.health() == 200
    assert server.proc.poll() is None


# ---- SIGTERM and SIGKILL -----------------------------------------------------------------------

def test_sigterm_with_zero_drain_aborts_and_refuses_new(start_server):  # RELIABILITY 29
    server = start_server("--shutdown-timeout", "0", "--inject-fault", "slow@1:20ms")
    streams = [start_stream(server) for _ in range(4)]
    first = [read_until(s, b"data: ") for s in streams]
    server.proc.send_signal(signal.SIGTERM)
    for f, s in zip(first, streams):
        events = sse_events(f + read_until(s, b"data: [DONE]"))
        assert events[-1] == "[DONE]"
        finishes = [c["finish_reason"] for e in events[:-1] for c in json.loads(e)["choices"]
                    if c["finish_reason"]]
        assert finishes == ["abort"], finishes
        s.close()
    # A new request while stopping is refused (503) or finds the listener closed.
    try:
        r = httpx.post(server.base_url + "/v1/completions", timeout=10,
                       json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1})
        assert r.status_code == 503, r.text
    except httpx.TransportError:
        pass
    assert server.proc.wait(5) == 0


def test_sigkill_then_restart_on_the_same_port(start_server, tmp_path):  # RELIABILITY 30
    server = start_server()
    s = start_stream(server)
    read_until(s, b"data: ")
    server.proc.send_signal(signal.SIGKILL)
    assert server.proc.wait(10) == -signal.SIGKILL
    s.close()
    # The same command line, so the same port (the killed process's connections may linger in
    # TIME_WAIT; the listener must still bind).
    with open(tmp_path / "restart.log", "w") as log:
        proc = subprocess.Popen(server.args, stdout=log, stderr=subprocess.STDOUT)
    try:
        seen = []

        def ready():
            seen.append(server.health())
            return proc.poll() is not None or seen[-1] == 200
        assert wait_until(ready, 120, 0.01)
        assert proc.poll() is None, (tmp_path / "restart.log").read_text()
        assert set(seen) <= {None, 503, 200}, seen
        assert 200 not in seen[:-1] or seen.index(200) == len(seen) - 1
        r = httpx.post(server.base_url + "/v1/completions", timeout=30,
                       json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 4})
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
