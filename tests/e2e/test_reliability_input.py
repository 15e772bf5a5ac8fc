"""Bad input never gives a 500, a crash or a hang: the cases of RELIABILITY rows 10-14, 16, 17,
19, 21, 22, 24, 25 and 34 that test_errors_and_security.py and test_completions.py do not already
cover (docs/reliability.md maps every row). Each answer is the documented status with the OpenAI
error body naming the parameter; the module ends by checking that no request got a 500.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import httpx
import pytest

from conftest import MODEL_NAME, post

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
PROMPT = [11, 22, 33, 44]
HELLO = [{"role": "user", "content": "hi"}]


def assert_error(r, status, param=None):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    if status == 400:
        assert error["type"] == "invalid_request_error", error
    if param is not None:
        assert error["param"] == param, error


def raw(server, data, timeout=10.0):
    """The server's whole answer to `data` (read until it closes or goes quiet)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                joined = b"".join(chunks)
                head, sep, body = joined.partition(b"\r\n\r\n")
                if sep and b"content-length:" in head.lower():
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(body) >= length:
                        break
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def status_of(response):
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def json_request(path, body_bytes, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            extra + b"Content-Length: " + str(len(body_bytes)).encode() + b"\r\n\r\n" +
            body_bytes)


def five_hundreds(server):
    return sum(v for labels, v in server.metrics().get("r2serve_http_requests_total", {}).items()
               if dict(labels).get("status", "").startswith("5"))


@pytest.fixture(scope="module", autouse=True)
def no_500s(server):
    before = five_hundreds(server)
    yield
    assert five_hundreds(server) == before, "a bad input got a 5xx answer"
    assert server.health() == 200


# ---- row 10, 11: the bad-parameter table (the chat table is test_errors_and_security.py) ------

BAD_COMPLETION_PARAMS = [
    ("temperature", -0.5), ("temperature", "hot"), ("temperature", [1]),
    ("top_p", 1.5), ("top_p", -1), ("top_k", -5), ("top_k", 1.5), ("min_p", -0.1),
    ("n", 0), ("n", 10**6), ("n", "2"), ("max_tokens", -1), ("max_tokens", 0),
    ("max_tokens", 10**12), ("max_tokens", "5"), ("max_tokens", 1.5), ("logprobs", 21),
    ("logprobs", -1), ("seed", "x"), ("seed", 2**64), ("seed", 1.5), ("stop", 5),
    ("stop", ["x"] * 100), ("stop", ["x" * 10000]), ("stop", [1, 2]), ("stop_token_ids", [-1]),
    ("stop_token_ids", "1"), ("logit_bias", {"999999": 1}), ("logit_bias", {"-1": 1}),
    ("logit_bias", {"x": 1}), ("logit_bias", {"1": "a"}), ("logit_bias", {"1": 1000}),
    ("logit_bias", {str(i): 1 for i in range(5000)}), ("logit_bias", [1]),
    ("presence_penalty", 5), ("frequency_penalty", -3), ("repetition_penalty", 0),
    ("stream", "yes"), ("ignore_eos", "no"), ("prompt", ""), ("prompt", []), ("prompt", [-1]),
    ("prompt", [10**9]), ("prompt", [1.5]), ("prompt", 5), ("prompt", [[1, 2], [3]]),
    ("prompt", {"a": 1}), ("model", 5),
]


@pytest.mark.parametrize("field,value", BAD_COMPLETION_PARAMS)
def test_bad_completion_params_are_400_naming_the_field(server, field, value):
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 2, field: value}
    assert_error(post(server, COMPLETIONS, body), 400, field)


@pytest.mark.parametrize("field,value", [
    ("max_completion_tokens", -1), ("logprobs", "yes"), ("top_logprobs", -1),
    ("top_logprobs", 5), ("n", 300), ("tools", "x"), ("tools", [{"type": "nope"}]),
    ("tool_choice", "sometimes"), ("stream_options", "x"),
])
def test_bad_chat_params_are_400_naming_the_field(server, field, value):
    body = {"model": MODEL_NAME, "messages": HELLO, field: value}
    assert_error(post(server, CHAT, body), 400, field)


# ---- row 12, 13: malformed bodies (the corpus of test_errors_and_security.py, plus) ------------

def test_duplicate_keys_are_rejected(server):  # RELIABILITY 12
    # Both values valid: refused for the repetition itself, whichever value a parser would keep.
    body = b'{"model": "tiny", "prompt": [1, 2], "max_tokens": 2, "max_tokens": 3}'
    r = post(server, COMPLETIONS, content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "max_tokens")
    assert "repeats the key" in r.json()["error"]["message"]
    nested = (b'{"model": "tiny", "messages": [{"role": "user", "content": "a", '
              b'"content": "b"}], "max_tokens": 1}')
    r = post(server, CHAT, content=nested, headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert r.json()["error"]["param"] is None
    long_key = ("\u00e9" * 100).encode()
    r = post(server, COMPLETIONS, content=b'{"' + long_key + b'": 1, "' + long_key + b'": 2}',
             headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert len(r.json()["error"]["message"]) < 200
    # Sibling objects may use the same keys.
    ok = (b'{"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "a"}, '
          b'{"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}')
    if server.has_chat_template:
        assert post(server, CHAT, content=ok,
                    headers={"Content-Type": "application/json"}).status_code == 200


@pytest.mark.parametrize("content", [
    b"", b"   ", b"{}", b"[]", b"true", b"1e999", b"{\"model\": \"tiny\"} trailing",
    b"{\"model\": \"tiny\", \"prompt\": [1, 2], \"max_tokens\": 2,}",
    b"{\"model\": \"tiny\", \"prompt\": \"\\x\"}", b"\x00" * 64,
])
def test_more_malformed_bodies(server, content):  # RELIABILITY 12
    assert_error(post(server, COMPLETIONS, content=content,
                      headers={"Content-Type": "application/json"}), 400)


def test_deep_nesting_inside_tools_and_schema(server):  # RELIABILITY 13, 24
    deep = b"[" * 100000 + b"]" * 100000
    for body in (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": '
                 + deep + b"}",
                 b'{"model": "tiny", "prompt": [1], "response_format": {"type": "json_schema",'
                 b' "json_schema": {"schema": ' + b'{"a":' * 50000 + b"1" + b"}" * 50000
                 + b"}}}"):
        start = time.monotonic()
        r = post(server, CHAT if b"messages" in body else COMPLETIONS, content=body,
                 headers={"Content-Type": "application/json"})
        assert_error(r, 400)
        assert time.monotonic() - start < 5


def test_response_format_is_refused_on_chat_too(server):  # RELIABILITY 24, 25
    for fmt in ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
                    "type": "string", "maxLength": 10**6}}},
                {"type": "regex", "regex": "(a+)+$"}, {"type": "json_object"}):
        start = time.monotonic()
        r = post(server, CHAT, {"model": MODEL_NAME, "messages": HELLO, "response_format": fmt})
        assert_error(r, 400, "response_format")
        assert "not supported" in r.json()["error"]["message"]
        assert time.monotonic() - start < 1
    ok = post(server, CHAT if server.has_chat_template else COMPLETIONS,
              {"model": MODEL_NAME, "messages": HELLO, "max_tokens": 1} if server.has_chat_template
              else {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1})
    assert ok.status_code == 200  # the engine is unaffected


# ---- row 14: invalid UTF-8 over a raw socket -------------------------------------------------

@pytest.mark.parametrize("prompt", [
    b'"abc\xc3\x28"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\xc0\xaf"', b'"\x80"',
    b'"\\ud800"', b'"x\\udfff y"', b'"\\ud800\\u0041"',
])
def test_invalid_utf8_prompt_is_400_over_a_raw_socket(server, prompt):  # RELIABILITY 14
    body = b'{"model": "tiny", "max_tokens": 1, "prompt": ' + prompt + b"}"
    response = raw(server, json_request(b"/v1/completions", body))
    status = status_of(response)
    assert status == 400, response[:300]
    body = response.partition(b"\r\n\r\n")[2]
    error = json.loads(body.decode("utf-8"))["error"]  # the answer itself is valid UTF-8
    # Raw invalid bytes fail the JSON parse (no param); an escaped lone surrogate names prompt.
    assert error["param"] in (None, "prompt"), error
    assert "UTF-8" in error["message"] or "utf-8" in error["message"].lower() or \
        "surrogate" in error["message"] or "JSON" in error["message"], error


def test_invalid_utf8_in_the_model_name_and_a_header(server):  # RELIABILITY 14
    body = b'{"model": "ti\xffny", "max_tokens": 1, "prompt": [1, 2]}'
    assert status_of(raw(server, json_request(b"/v1/completions", body))) == 400
    body = json.dumps({"model": MODEL_NAME, "max_tokens": 1, "prompt": [1, 2]}).encode()
    response = raw(server, json_request(b"/v1/completions", body, b"X-Note: \xff\xfe\r\n"))
    assert status_of(response) == 200


# ---- row 16, 17: oversized bodies and headers --------------------------------------------------

def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def send_and_read(server, head, body_chunks):
    """Sends `head` then the chunks while reading; returns (answer, closed by the server)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(head)

    def writer():
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: expected
    t = threading.Thread(target=writer)
    t.start()
    answer = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    t.join(30)
    s.close()
    return answer


def test_bodies_over_the_limit_are_413_and_close(server):  # RELIABILITY 16
    rss0 = rss_bytes(server.proc.pid)
    ten_mb = [b" " * 65536] * 160
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(160 * 65536).encode() + b"\r\n\r\n")
    assert status_of(send_and_read(server, head, ten_mb)) == 413
    # Announced but never sent: refused from the header alone.
    assert status_of(send_and_read(server, head, [])) == 413
    chunked = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    chunks = [b"10000\r\n" + b" " * 65536 + b"\r\n"] * 160 + [b"0\r\n\r\n"]
    assert status_of(send_and_read(server, chunked, chunks)) == 413
    assert rss_bytes(server.proc.pid) - rss0 < 8 * 2**20
    assert server.health() == 200


def test_header_count_and_bad_chunk_framing(server):  # RELIABILITY 17
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(3000))
    assert status_of(raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")) == 431
    bad_chunk = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    assert status_of(raw(server, bad_chunk)) == 400
    huge_chunk = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n")
    assert status_of(raw(server, huge_chunk)) in (400, 413)
    two_lengths = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                   b"Content-Length: 3\r\n\r\n{}")
    assert status_of(raw(server, two_lengths)) == 400


# ---- row 19: auth bypass attempts --------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(start_server):
    return start_server(api_key="sk-rel-1")


@pytest.mark.parametrize("request_line,extra", [
    (b"GET //v1/models", b""), (b"GET /v1//models", b""), (b"GET /./v1/models", b""),
    (b"GET /v1/../v1/models", b""), (b"GET /v1/%2e%2e/v1/models", b""),
    (b"GET /v1%2Fmodels", b""), (b"GET /health/../v1/models", b""),
    (b"GET /health/..%2Fv1/models", b""), (b"GET /health%2F..%2Fv1%2Fmodels", b""),
    (b"GET /V1/MODELS", b""), (b"GET /v1/models/", b""), (b"GET /metrics;/health", b""),
    (b"GET /v1/models%00", b""), (b"GET /v1/models#/health", b""),
    (b"GET http://127.0.0.1/v1/models", b""), (b"GET /v1/models", b"X-Original-URL: /health\r\n"),
    (b"GET /v1/models", b"X-Rewrite-URL: /health\r\n"), (b"GET /metrics?/health", b""),
    (b"POST /v1/completions?x=/health", b"Content-Length: 2\r\n"),
    (b"GET /v1/models", b"Authorization: Basic c2stcmVsLTE=\r\n"),
    (b"GET /v1/models", b"Authorization: Bearer sk-rel-1x\r\n"),
    (b"GET /v1/models", b"Authorization: Bearer \r\n"),
    (b"GET /v1/models", b"Authorization: sk-rel-1\r\n"),
])
def test_auth_bypass_attempts_are_refused(keyed, request_line, extra):  # RELIABILITY 19
    for host in (b"x", b"127.0.0.1/health", b"x?/health"):
        data = request_line + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"
        if b"Content-Length: 2" in extra:
            data += b"{}"
        response = raw(keyed, data)
        assert status_of(response) in (400, 401, 404, 405), response[:200]


def test_host_tricks_do_not_open_protected_routes(keyed):  # RELIABILITY 19
    for host in (b"localhost/health", b"x/health?", b"x#/health", b""):
        response = raw(keyed, b"GET /metrics HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert status_of(response) in (400, 401), response[:200]
    assert status_of(raw(keyed, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


# ---- row 21: path-like model ids ---------------------------------------------------------------

@pytest.mark.parametrize("model", ["/etc/passwd", "../../../../etc/passwd", "tiny/../tiny",
                                   "./tiny", "tiny/", "%2e%2e%2fetc", "C:\\Windows\\x",
                                   "tiny\u0000", "file:///etc/passwd", "~/.ssh/id_rsa"])
def test_path_like_model_ids_are_404(server, model):  # RELIABILITY 21
    for path, body in ((COMPLETIONS, {"prompt": PROMPT, "max_tokens": 1}),
                       (CHAT, {"messages": HELLO, "max_tokens": 1}),
                       ("/tokenize", {"prompt": "x"})):
        r = post(server, path, {"model": model, **body})
        if path == "/tokenize" and not server.has_tokenizer:
            assert r.status_code in (400, 404)
            continue
        assert_error(r, 404)
        assert r.json()["error"]["code"] == "model_not_found"


# ---- row 34: log injection -------------------------------------------------------------------

def test_user_strings_never_reach_the_log(server):  # RELIABILITY 34
    marker = "INJECTED-LOG-LINE"
    before = server.read_log()
    post(server, COMPLETIONS, {"model": f"x\r\n{marker} fake", "prompt": PROMPT})
    post(server, COMPLETIONS, {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1,
                               "stop": [f"\n{marker}"], "user": f"\r\n{marker}"})
    post(server, COMPLETIONS, {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": -1,
                               f"\n{marker}": 1})
    raw(server, b"GET /\r\n" + marker.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    raw(server, b"GET /nothing HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r" + marker.encode() +
        b"\r\n\r\n")
    assert server.health() == 200
    after = server.read_log()
    assert marker not in after[len(before) - 200 if len(before) > 200 else 0:], after[-1000:]


# ---- row 22: a corrupt or hostile model directory at startup -----------------------------------

def corrupt_copies(model_dir, root):
    """{name: directory} of broken copies of the tiny model."""
    files = sorted(os.listdir(model_dir))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert shards, files
    cases = {}

    def copy(name):
        d = root / name
        shutil.copytree(model_dir, d)
        return d
    d = copy("truncated")
    path = d / shards[0]
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    cases["truncated"] = d
    d = copy("header_len_2_63")
    path = d / shards[0]
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**63) + data[8:])
    cases["header_len_2_63"] = d
    d = copy("header_not_json")
    path = d / shards[0]
    header_len = struct.unpack("<Q", (d / shards[0]).read_bytes()[:8])[0]
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"\xff" * header_len + data[8 + header_len:])
    cases["header_not_json"] = d
    d = copy("offset_overflow")
    path = d / shards[0]
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [2**64 - 16, 2**64 - 1]
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + header_len:])
    cases["offset_overflow"] = d
    d = copy("config_not_json")
    (d / "config.json").write_text("{not json")
    cases["config_not_json"] = d
    d = copy("config_huge_dims")
    config = json.loads((d / "config.json").read_text())
    config["hidden_size"] = 2**40
    (d / "config.json").write_text(json.dumps(config))
    cases["config_huge_dims"] = d
    return cases


def test_corrupt_model_files_fail_cleanly_at_startup(binary, model_dir, tmp_path):  # ROW 22
    for name, d in corrupt_copies(model_dir, tmp_path).items():
        r = subprocess.run([binary, "serve", "--model", str(d), "--port", "0"],
                           capture_output=True, timeout=120)
        stderr = r.stderr.decode("utf-8", errors="replace")
        assert r.returncode == 1, (name, r.returncode, stderr[-2000:])  # not a signal
        assert "loading failed" in stderr and str(d) in stderr, (name, stderr[-2000:])
        # The file's own bytes are escaped, not copied into the log.
        assert b"\xff" not in r.stderr, (name, stderr[-2000:])


# ---- row 15: output cut inside a multi-byte character ------------------------------------------

def test_streamed_chunks_are_utf8_and_join_to_the_whole_text(server):  # RELIABILITY 15
    if not server.has_tokenizer:
        pytest.skip("the tiny model has no tokenizer.json")
    for seed, max_tokens in ((1, 7), (2, 13), (3, 29), (4, 64), (5, 101)):
        body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": max_tokens,
                "temperature": 1.0, "seed": seed, "ignore_eos": True}
        whole = post(server, COMPLETIONS, body).json()["choices"][0]["text"]
        streamed = ""
        r = httpx.post(server.base_url + COMPLETIONS, json={**body, "stream": True}, timeout=60)
        assert r.status_code == 200
        for block in r.content.split(b"\n\n"):
            if not block or block == b"data: [DONE]":
                continue
            text = block[len(b"data: "):].decode("utf-8")  # strict: every event is valid UTF-8
            for choice in json.loads(text)["choices"]:
                streamed += choice["text"]
        # Bytes held back at a cut character are flushed (or replaced) at the end: the streamed
        # text is exactly the non-streamed one.
        assert streamed == whole, (seed, max_tokens)
