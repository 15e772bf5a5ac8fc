"""Bad input never gives a 500, a crash or a hang (API.md 15, 24-26; RELIABILITY rows 10-19)."""
import socket
import time

import httpx
import pytest

from conftest import MODEL_NAME, post

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "hi"}]


def assert_error(r, status, param=None):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["code"], str)
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("messages", [None, "hi", [], [123], [{}], [{"role": 1, "content": "x"}],
                                      [{"role": "user"}], [{"role": "user", "content": 5}]])
def test_malformed_messages(server, messages):  # case 15
    assert_error(post(server, CHAT, {"model": MODEL_NAME, "messages": messages}), 400, "messages")


@pytest.mark.parametrize("field,value", [
    ("temperature", -1), ("temperature", "hot"), ("top_p", 1.5), ("n", 0), ("n", 10**6),
    ("max_tokens", -1), ("max_tokens", 0), ("top_logprobs", 21), ("seed", "x"),
    ("seed", 2**64), ("stop", 5), ("stop", ["x"] * 100), ("logit_bias", {"99999": 1}),
    ("logit_bias", {"1": 1000}), ("presence_penalty", 5), ("min_p", 2), ("stream", "yes"),
])
def test_bad_sampling_params_name_the_field(server, field, value):  # RELIABILITY 10, 11
    body = {"model": MODEL_NAME, "messages": HELLO, field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    r = post(server, CHAT, body)
    assert_error(r, 400, field)
    assert httpx.get(server.base_url + "/health").status_code == 200


@pytest.mark.parametrize("content", [b"{", b"[1,2]", b"null", b"\"x\"", b"{\"prompt\": [1,}",
                                     b"\xff\xfe", b"[" * 100000, b"{\"a\":" * 50000])
def test_malformed_json(server, content):  # RELIABILITY 12, 13
    r = post(server, COMPLETIONS, content=content, headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_invalid_utf8_in_prompt_string(server):  # RELIABILITY 14
    body = b'{"model": "tiny", "prompt": "abc\xff\xfe", "max_tokens": 1}'
    r = post(server, COMPLETIONS, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_non_json_content_type(server):  # case 26
    r = post(server, COMPLETIONS, content=b"prompt=x",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(r, 415)
    r = post(server, CHAT, content=b'{"messages": []}', headers={"Content-Type": "text/plain"})
    assert_error(r, 415)


def test_unknown_route_and_method(server):
    assert_error(httpx.get(server.base_url + "/v1/nothing"), 404)
    assert_error(httpx.get(server.base_url + COMPLETIONS), 405)
    assert_error(httpx.delete(server.base_url + "/v1/models"), 405)


def test_oversized_body_is_413(server):  # RELIABILITY 16
    r = post(server, COMPLETIONS, content=b" " * (5 * 1024 * 1024),
             headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def raw(server, data, read_timeout=10.0):
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def status_of(response):
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1") else None


def test_header_limits_and_bad_framing(server):  # RELIABILITY 17
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert status_of(raw(server, big)) == 431
    absurd = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 99999999999999999999999\r\n\r\n")
    assert status_of(raw(server, absurd)) in (400, 413)
    both = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_of(raw(server, both)) in (400, 415, 401)
    assert status_of(raw(server, b"NONSENSE\r\n\r\n")) == 400


@pytest.mark.parametrize("target", [b"//v1/models", b"/v1/../metrics", b"/v1%2Fmodels",
                                    b"/health/../v1/models"])
def test_path_tricks_do_not_route(server, target):  # RELIABILITY 19
    response = raw(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) in (401, 404)


def test_slowloris_is_dropped_and_others_served(server):  # RELIABILITY 5
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        start = time.monotonic()
        assert httpx.get(server.base_url + "/health").status_code == 200
        s.settimeout(30)
        try:
            while s.recv(1024):
                pass
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 25  # closed by the 10 s header deadline


@pytest.fixture(scope="module")
def keyed(start_server):
    return start_server("--allowed-origins", "http://app.example", api_key="sk-test-1")


def test_api_key(keyed):  # case 24, RELIABILITY 18
    base = keyed.base_url
    assert httpx.get(base + "/health").status_code == 200
    for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", COMPLETIONS),
                         ("POST", CHAT), ("POST", "/tokenize"), ("GET", "/nothing")):
        r = httpx.request(method, base + path, json={})
        assert_error(r, 401)
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.request(method, base + path, json={}, headers={"Authorization": "Bearer no"})
        assert r.status_code == 401
    ok = httpx.post(base + COMPLETIONS, json={"model": MODEL_NAME, "prompt": [1, 2], "max_tokens": 1},
                    headers={"Authorization": "Bearer sk-test-1"})
    assert ok.status_code == 200


def test_cors_preflight(keyed):  # case 25
    r = httpx.options(keyed.base_url + CHAT, headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    other = httpx.options(keyed.base_url + CHAT, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
