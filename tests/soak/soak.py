#!/usr/bin/env python3
"""Mixed-fault soak of `r2serve serve` (RELIABILITY.md row 35, issue #10 item 5).

A seeded asyncio driver on raw sockets (stdlib only): N requests at concurrency C, a mix of
streaming and non-streaming chat and completions; a share of random client disconnects (before
the response headers, after a partial request, mid-stream, while a non-streaming answer is being
generated); a share of invalid requests from a rotating table of bad bodies, parameters, routes
and headers; and periodic bursts of simultaneous requests past the server's queue limit.

It starts its own server on a tiny model (`--binary`, `--model-dir` or one made with
make-tiny-model) with a small queue, or drives a running one (`--url`, plus `--pid` for the
process figures). Then it ASSERTS, exiting 1 with every violation listed:
  - no lost response: every request not cut by the driver got a status line before its deadline;
    no 5xx; a 200 is complete (streaming: the events end with exactly one `data: [DONE]`, every
    choice has exactly one finish_reason, or one error event comes right before the [DONE];
    non-streaming: a JSON body whose choices all have a finish_reason); a 4xx has an OpenAI
    error body with the documented status and code, a 429 a Retry-After header;
  - server accounting from /metrics at idle: r2serve_requests_accepted_total ==
    completed + aborted + errored, and consistent with what the client saw;
  - at idle: r2serve_kv_blocks_used == 0, nothing running or waiting, and a KV pool self-check
    that ran after the load (triggered by one probe request) passed;
  - process (Linux /proc): RssAnon + VmSwap at idle after the warm-up (the first 10 % of the
    requests, at most 1,000) vs at idle at the end: growth below 1 %; open descriptors and
    threads back to the post-warm-up baseline within +-2;
  - the server exits 0 on SIGTERM (when the driver started it).

Prints a one-screen summary; --json-out writes it as JSON.

  .venv/bin/python tests/soak/soak.py --binary build/soak/server/r2serve --requests 10000
"""
import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"

# Server flags when the driver starts the server: few running sequences and a short queue, so a
# burst is refused in part; a 1 MiB body limit for the oversized-body case; steps of at most 256
# tokens, so long prompts are prefilled in chunks (aborts land mid-prefill too) and the largest
# step, which sets the size of the model's grow-only forward buffers, comes early in the
# warm-up instead of whenever four long prompts happen to be admitted together.
MAX_NUM_SEQS = 4
MAX_QUEUED = 8
MAX_BODY = 1 << 20
MAX_BATCHED_TOKENS = 256
MAX_PROMPT_IDS = 200  # longest token-id prompt (word prompts are shorter)


class Violation(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1


class Conn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.used = 0  # requests sent on it

    @staticmethod
    async def open(host, port):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return Conn(reader, writer)

    def close(self, reset=False):
        try:
            if reset:
                sock = self.writer.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: close sends RST
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.writer.transport.abort()
            else:
                self.writer.close()
        except (OSError, RuntimeError):
            pass


def encode_request(method, path, body=None, headers=None, keep_alive=True, host="soak"):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    hdrs = {"Connection": "keep-alive" if keep_alive else "close"}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_head(reader):
    """(status, {lower-case header: value}); raises Violation on a malformed head."""
    status_line = await reader.readline()
    if not status_line:
        raise EOFError("connection closed before the status line")
    parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Violation(f"malformed status line {status_line[:80]!r}")
    headers = {}
    while True:
        line = await reader.readline()
        if not line:
            raise Violation("connection closed inside the response headers")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def body_chunks(reader, headers):
    """Yields the body's bytes as they arrive (chunked, Content-Length or until EOF)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise Violation("connection closed inside a chunked body (no last chunk)")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = await reader.readexactly(size)
            if (await reader.readexactly(2)) != b"\r\n":
                raise Violation("chunk not followed by CRLF")
            yield data
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            yield await reader.readexactly(n)
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


def reusable(headers):
    return headers.get("connection", "").lower() != "close"


# --------------------------------------------------------------------------------------------
# Request plans


def valid_request(rng, endpoint, stream, max_tokens):
    """(path, body dict, n choices)."""
    n = 2 if rng.random() < 0.1 else 1
    body = {"model": MODEL, "max_tokens": max_tokens, "stream": stream, "n": n,
            "seed": rng.randrange(1 << 31)}
    if rng.random() < 0.5:
        body["temperature"] = round(rng.uniform(0.0, 1.5), 2)
    if rng.random() < 0.3:
        body["top_p"] = round(rng.uniform(0.5, 1.0), 2)
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.1:
        body["stop"] = ["the", "\n"]
    if endpoint == "chat":
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        body["messages"] = [{"role": "user", "content": words}]
        if rng.random() < 0.2:
            body["messages"].insert(0, {"role": "system", "content": "Be brief."})
        return "/v1/chat/completions", body, n
    if rng.random() < 0.5:
        body["prompt"] = [rng.randrange(10, 1000) for _ in range(rng.randint(1, MAX_PROMPT_IDS))]
    else:
        body["prompt"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
    if rng.random() < 0.1:
        body["logprobs"] = 2
    return "/v1/completions", body, n


WORDS = ("alpha beta gamma delta the a of and engine token cache block server stream request "
         "model kernel queue burst soak").split()


def _json(obj):
    return json.dumps(obj).encode()


def _deep(depth):
    return ("[" * depth + "]" * depth).encode()


# Each case: (name, method, path, body bytes or None, extra headers, expected status, code).
# code None: any string code.
INVALID_CASES = [
    ("malformed_json", "POST", "/v1/completions", b'{"model": "tiny", "prompt": ', {}, 400,
     "invalid_json"),
    ("array_body", "POST", "/v1/completions", b"[1, 2, 3]", {}, 400, None),
    ("string_body", "POST", "/v1/chat/completions", b'"hello"', {}, 400, None),
    ("missing_prompt", "POST", "/v1/completions", _json({"model": MODEL}), {}, 400,
     "missing_required_parameter"),
    ("unknown_model", "POST", "/v1/completions", _json({"model": "nope", "prompt": "hi"}), {},
     404, "model_not_found"),
    ("negative_max_tokens", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "max_tokens": -1}), {}, 400, None),
    ("temperature_string", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "temperature": "hot"}), {}, 400, "invalid_type"),
    ("n_zero", "POST", "/v1/completions", _json({"model": MODEL, "prompt": "hi", "n": 0}), {},
     400, None),
    ("top_p_two", "POST", "/v1/chat/completions",
     _json({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": 2.0}),
     {}, 400, None),
    ("stream_string", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "stream": "yes"}), {}, 400, "invalid_type"),
    ("token_out_of_vocab", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": [5, 99999999]}), {}, 400, None),
    ("context_length", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "max_tokens": 10000000}), {}, 400, None),
    ("empty_messages", "POST", "/v1/chat/completions", _json({"model": MODEL, "messages": []}),
     {}, 400, None),
    ("content_number", "POST", "/v1/chat/completions",
     _json({"model": MODEL, "messages": [{"role": "user", "content": 5}]}), {}, 400,
     "invalid_type"),
    ("missing_role", "POST", "/v1/chat/completions",
     _json({"model": MODEL, "messages": [{"content": "hi"}]}), {}, 400, "invalid_type"),
    ("stop_numbers", "POST", "/v1/chat/completions",
     _json({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stop": [1, 2]}),
     {}, 400, "invalid_type"),
    ("deep_json", "POST", "/v1/completions", _deep(200), {}, 400, None),
    ("invalid_utf8", "POST", "/v1/completions",
     b'{"model": "tiny", "prompt": "caf\xc3\x28 \xff"}', {}, 400, None),
    ("get_on_post_route", "GET", "/v1/completions", None, {}, 405, "method_not_allowed"),
    ("unknown_route", "POST", "/v1/nothing_here", _json({"model": MODEL}), {}, 404,
     "not_found"),
    ("text_content_type", "POST", "/v1/completions", _json({"model": MODEL, "prompt": "hi"}),
     {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("logprobs_too_many", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "logprobs": 1000}), {}, 400, None),
    ("json_schema_format", "POST", "/v1/chat/completions",
     _json({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}), {}, 400,
     "unsupported_parameter"),
    ("echo", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "echo": True}), {}, 400, "unsupported_parameter"),
    ("seed_string", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": "hi", "seed": "abc"}), {}, 400, "invalid_type"),
    ("several_prompts", "POST", "/v1/completions",
     _json({"model": MODEL, "prompt": ["a", "b"]}), {}, 400, None),
    ("body_too_large", "POST", "/v1/completions", None,
     {"Content-Type": "application/json", "Content-Length": str(8 * MAX_BODY)}, 413,
     "request_too_large"),
]

DISCONNECT_MODES = ("before_headers", "partial_request", "mid_stream", "nonstream_wait")


def make_spec(rng, args, counters, in_burst):
    """One request: invalid (invalid_frac), cut by the client (disconnect_frac) or valid."""
    r = rng.random()
    if r < args.invalid_frac:
        case = INVALID_CASES[counters["invalid"] % len(INVALID_CASES)]
        counters["invalid"] += 1
        # Half of them on the worker's kept-alive connection: the next request on it must be
        # served normally after the error answer.
        return {"kind": "invalid", "case": case, "burst": in_burst,
                "keep": not in_burst and case[0] != "body_too_large" and rng.random() < 0.5}
    disconnect = None
    if r < args.invalid_frac + args.disconnect_frac:
        disconnect = rng.choice(DISCONNECT_MODES)
    endpoint = "chat" if rng.random() < 0.4 else "completions"
    stream = rng.random() < 0.5 or in_burst
    if disconnect == "mid_stream":
        stream = True
    elif disconnect == "nonstream_wait":
        stream = False
    max_tokens = rng.randint(1, args.max_tokens)
    if in_burst or disconnect in ("mid_stream", "nonstream_wait"):
        max_tokens = rng.randint(args.max_tokens, 2 * args.max_tokens)  # long enough to queue
    path, body, n = valid_request(rng, endpoint, stream, max_tokens)
    return {"kind": "disconnect" if disconnect else "valid", "burst": in_burst, "path": path,
            "body": body, "n": n, "stream": stream, "endpoint": endpoint,
            "disconnect": disconnect, "cut_events": rng.randint(0, 6),
            "cut_after_s": rng.uniform(0.0, 0.08), "cut_frac": rng.random(),
            "reset": rng.random() < 0.5, "fresh": in_burst or rng.random() < 0.3}


def make_plan(args):
    """The seeded list of work items: ('one', spec) or ('burst', [spec, ...]). Every
    burst_every single requests, burst_size requests are sent at once; the shares of invalid
    and cut requests are the same inside bursts."""
    rng = random.Random(args.seed)
    counters = {"invalid": 0}
    items = []
    n_left = args.requests
    # Priming: the run opens with the largest steps it can produce (max_num_seqs * 2 requests at
    # once, each with the longest prompt and two choices with logprobs), so buffers sized by the
    # largest step so far reach their size inside the warm-up, not after the memory baseline.
    priming = []
    for i in range(min(2 * MAX_NUM_SEQS, n_left)):
        body = {"model": MODEL, "max_tokens": args.max_tokens, "stream": i % 2 == 0, "n": 2,
                "seed": i, "logprobs": 2,
                "prompt": [rng.randrange(10, 1000) for _ in range(MAX_PROMPT_IDS)]}
        priming.append({"kind": "valid", "burst": True, "path": "/v1/completions", "body": body,
                        "n": 2, "stream": body["stream"], "endpoint": "completions",
                        "disconnect": None, "fresh": True})
    if priming:
        items.append(("burst", priming))
        n_left -= len(priming)
    singles = 0
    while n_left > 0:
        if args.burst_every and singles == args.burst_every and n_left > 1:
            size = min(args.burst_size, n_left)
            items.append(("burst", [make_spec(rng, args, counters, True) for _ in range(size)]))
            n_left -= size
            singles = 0
            continue
        items.append(("one", make_spec(rng, args, counters, False)))
        n_left -= 1
        singles += 1
    return items


# --------------------------------------------------------------------------------------------
# Response checks


def check_error_body(status, headers, body, expect_code=None):
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Violation(f"{status} without a JSON body: {body[:120]!r}")
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str) or \
            not err["message"] or not isinstance(err.get("type"), str):
        raise Violation(f"{status} body is not an OpenAI error: {body[:160]!r}")
    if not isinstance(err.get("code"), str):
        raise Violation(f"{status} error without a string code: {body[:160]!r}")
    if expect_code is not None and err["code"] != expect_code:
        raise Violation(f"{status} code {err['code']!r}, expected {expect_code!r}")
    if status == 429 and "retry-after" not in headers:
        raise Violation("429 without Retry-After")
    return err["code"]


def check_full_body(body, n):
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Violation(f"200 body is not JSON: {body[:120]!r}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        raise Violation(f"200 body has {len(choices or [])} choices, expected {n}")
    reasons = []
    for c in choices:
        if not isinstance(c.get("finish_reason"), str):
            raise Violation(f"choice without finish_reason: {json.dumps(c)[:160]}")
        reasons.append(c["finish_reason"])
    if not isinstance(obj.get("usage"), dict):
        raise Violation("200 body without usage")
    return reasons


class SseChecker:
    """Feeds SSE bytes; checks one terminal [DONE] (last), at most one error event right
    before it, exactly one finish_reason per choice otherwise."""

    def __init__(self, n):
        self.n = n
        self.buf = b""
        self.events = 0
        self.done = False
        self.error = None
        self.finish = collections.Counter()

    def feed(self, data):
        self.buf += data
        while b"\n\n" in self.buf:
            raw, self.buf = self.buf.split(b"\n\n", 1)
            self.event(raw)

    def event(self, raw):
        payload = b"\n".join(line[5:].lstrip(b" ") for line in raw.split(b"\n")
                             if line.startswith(b"data:"))
        if not payload:
            return
        self.events += 1
        if self.done:
            raise Violation(f"event after [DONE]: {payload[:120]!r}")
        if payload == b"[DONE]":
            self.done = True
            return
        if self.error is not None:
            raise Violation(f"event after the error event: {payload[:120]!r}")
        try:
            obj = json.loads(payload)
        except ValueError:
            raise Violation(f"stream event is not JSON: {payload[:120]!r}")
        if "error" in obj:
            err = obj["error"]
            if not isinstance(err, dict) or not isinstance(err.get("message"), str):
                raise Violation(f"malformed error event: {payload[:160]!r}")
            self.error = err["message"]
            return
        for c in obj.get("choices", []):
            if c.get("finish_reason") is not None:
                self.finish[c.get("index", 0)] += 1

    def finish_check(self):
        if self.buf.strip():
            raise Violation(f"stream ended inside an event: {self.buf[:120]!r}")
        if not self.done:
            raise Violation("stream ended without data: [DONE]")
        if self.error is None:
            bad = {i: self.finish[i] for i in range(self.n) if self.finish[i] != 1}
            if bad or set(self.finish) - set(range(self.n)):
                raise Violation(f"finish_reason counts per choice {dict(self.finish)}, "
                                f"expected one for each of {self.n}")


# --------------------------------------------------------------------------------------------
# Driver


class Stats:
    def __init__(self):
        self.outcomes = collections.Counter()
        self.codes = collections.Counter()
        self.finish = collections.Counter()
        self.violations = []
        self.burst_429 = []
        self.latencies = []

    def violate(self, msg):
        self.violations.append(msg)


class Driver:
    def __init__(self, args, host, port, stats):
        self.args = args
        self.host = host
        self.port = port
        self.stats = stats
        self.deadline = args.deadline

    async def metrics(self):
        conn = await Conn.open(self.host, self.port)
        try:
            conn.writer.write(encode_request("GET", "/metrics", keep_alive=False))
            status, headers = await asyncio.wait_for(read_head(conn.reader), 10)
            body = b"".join([c async for c in body_chunks(conn.reader, headers)])
        finally:
            conn.close()
        if status != 200:
            raise Violation(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    async def health(self):
        conn = await Conn.open(self.host, self.port)
        try:
            conn.writer.write(encode_request("GET", "/health", keep_alive=False))
            status, headers = await asyncio.wait_for(read_head(conn.reader), 10)
            async for _ in body_chunks(conn.reader, headers):
                pass
        finally:
            conn.close()
        return status

    async def one(self, spec, conn_holder, burst=False):
        """Runs one request; records its outcome. conn_holder: [Conn or None] kept alive."""
        start = time.monotonic()
        try:
            outcome = await asyncio.wait_for(self._one(spec, conn_holder), self.deadline)
        except asyncio.TimeoutError:
            outcome = "lost"
            self.stats.violate(f"lost: {spec['kind']} {spec.get('path', '')} got no complete "
                               f"answer within {self.deadline}s")
            if conn_holder[0] is not None:
                conn_holder[0].close(reset=True)
                conn_holder[0] = None
        except (OSError, EOFError, asyncio.IncompleteReadError) as e:
            outcome = "violation"
            self.stats.violate(f"{spec['kind']} {spec.get('path') or spec['case'][0]}: "
                               f"connection failed: {type(e).__name__}: {e}")
            if conn_holder[0] is not None:
                conn_holder[0].close()
                conn_holder[0] = None
        except Violation as e:
            outcome = "violation"
            self.stats.violate(f"{spec['kind']} {spec.get('path') or spec['case'][0]}: {e}")
            if conn_holder[0] is not None:
                conn_holder[0].close()
                conn_holder[0] = None
        self.stats.outcomes[("burst:" if burst else "") + outcome] += 1
        if outcome in ("ok", "ok_error_event"):
            self.stats.latencies.append(time.monotonic() - start)
        return outcome

    async def _conn(self, spec, conn_holder):
        fresh = spec.get("fresh", True) or spec["kind"] == "disconnect"
        if not fresh and conn_holder[0] is not None:
            return conn_holder[0], True
        return await Conn.open(self.host, self.port), False  # the kept-alive one stays for later

    async def _one(self, spec, conn_holder):
        kind = spec["kind"]
        if kind == "invalid":
            return await self._invalid(spec, conn_holder)
        conn, reused = await self._conn(spec, conn_holder)
        keep = kind == "valid" and not spec.get("fresh", True)
        raw = encode_request("POST", spec["path"], _json(spec["body"]), keep_alive=keep)
        mode = spec.get("disconnect")
        try:
            if mode == "partial_request":
                conn.writer.write(raw[:max(1, int(len(raw) * spec["cut_frac"]))])
                await conn.writer.drain()
                conn.close(reset=spec["reset"])
                return "disconnect:partial_request"
            conn.writer.write(raw)
            await conn.writer.drain()
            if mode == "before_headers":
                # Cut at a random point 0-20 ms after the request left (fault timing, not a
                # synchronization: whatever the server has done by then, it must clean up).
                await asyncio.sleep(spec["cut_after_s"] / 4)
                conn.close(reset=spec["reset"])
                return "disconnect:before_headers"
            if mode == "nonstream_wait":
                try:
                    status, headers = await asyncio.wait_for(read_head(conn.reader),
                                                             spec["cut_after_s"])
                except asyncio.TimeoutError:
                    conn.close(reset=spec["reset"])
                    return "disconnect:nonstream_wait"
                outcome = await self._answer(spec, conn, status, headers)
                conn.close()
                return "answered_before_cut:" + outcome
            status, headers = await read_head(conn.reader)
            outcome = await self._answer(spec, conn, status, headers)
            if keep and reusable(headers):
                if conn_holder[0] is not conn:
                    if conn_holder[0] is not None:
                        conn_holder[0].close()
                    conn_holder[0] = conn
            else:
                if conn_holder[0] is conn:
                    conn_holder[0] = None
                conn.close()
            return outcome
        except (EOFError, ConnectionError, asyncio.IncompleteReadError) as e:
            if conn_holder[0] is conn:
                conn_holder[0] = None
            conn.close()
            raise Violation(f"connection failed ({'reused' if reused else 'fresh'}): "
                            f"{type(e).__name__}: {e}")
        except BaseException:  # a violation, or the deadline cancelling us: never leak the socket
            if conn_holder[0] is conn:
                conn_holder[0] = None
            conn.close(reset=True)
            raise

    async def _answer(self, spec, conn, status, headers):
        if status == 200:
            if spec["stream"]:
                checker = SseChecker(spec["n"])
                cut = spec.get("disconnect") == "mid_stream"
                async for data in body_chunks(conn.reader, headers):
                    checker.feed(data)
                    if cut and checker.events >= spec["cut_events"] and not checker.done:
                        conn.close(reset=spec["reset"])
                        return "disconnect:mid_stream"
                checker.finish_check()
                if checker.error is not None:
                    self.stats.codes["stream_error_event"] += 1
                    return "ok_error_event"
                self.stats.finish["stream"] += 1
                return "ok"
            body = b"".join([c async for c in body_chunks(conn.reader, headers)])
            for reason in check_full_body(body, spec["n"]):
                self.stats.finish[reason] += 1
            return "ok"
        body = b"".join([c async for c in body_chunks(conn.reader, headers)])
        if status >= 500 and status != 503:
            raise Violation(f"HTTP {status}: {body[:200]!r}")
        if status not in (429, 503):
            raise Violation(f"valid request answered {status}: {body[:200]!r}")
        code = check_error_body(status, headers, body)
        self.stats.codes[f"{status} {code}"] += 1
        return f"refused_{status}"

    async def _invalid(self, spec, conn_holder):
        name, method, path, body, headers, expect_status, expect_code = spec["case"]
        keep = spec.get("keep", False)
        if keep and conn_holder[0] is not None:
            conn, reused = conn_holder[0], True
        else:
            conn, reused = await Conn.open(self.host, self.port), False
        try:
            if name == "body_too_large":  # headers only: the server refuses before reading
                lines = [f"{method} {path} HTTP/1.1", "Host: soak", "Connection: close"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
            else:
                raw = encode_request(method, path, body, headers, keep_alive=keep)
            conn.writer.write(raw)
            await conn.writer.drain()
            try:
                status, rheaders = await read_head(conn.reader)
                rbody = b"".join([c async for c in body_chunks(conn.reader, rheaders)])
            except (EOFError, ConnectionError, asyncio.IncompleteReadError) as e:
                raise Violation(f"connection failed ({'reused' if reused else 'fresh'}): "
                                f"{type(e).__name__}: {e}")
        except BaseException:
            if conn_holder[0] is conn:
                conn_holder[0] = None
            conn.close()
            raise
        if keep and reusable(rheaders):
            if conn_holder[0] is not conn:
                if conn_holder[0] is not None:
                    conn_holder[0].close()
                conn_holder[0] = conn
        else:
            if conn_holder[0] is conn:
                conn_holder[0] = None
            conn.close()
        if status >= 500:
            raise Violation(f"HTTP {status} for {name}: {rbody[:200]!r}")
        if status != expect_status:
            raise Violation(f"{name}: status {status}, expected {expect_status}: "
                            f"{rbody[:200]!r}")
        code = check_error_body(status, rheaders, rbody, expect_code)
        self.stats.codes[f"{status} {code}"] += 1
        return "invalid_rejected"

    async def burst(self, specs):
        holders = [[None] for _ in specs]
        outcomes = await asyncio.gather(*(self.one(s, h, burst=True)
                                          for s, h in zip(specs, holders)))
        self.stats.burst_429.append(sum(o == "refused_429" for o in outcomes))

    async def run(self, items, concurrency, on_progress=None):
        queue = collections.deque(items)
        done = [0]

        async def worker():
            holder = [None]
            while queue:
                kind, spec = queue.popleft()
                if kind == "burst":
                    await self.burst(spec)
                    done[0] += len(spec)
                else:
                    outcome = await self.one(spec, holder)
                    done[0] += 1
                    if outcome.endswith("refused_429") and self.args.backoff_ms > 0:
                        # A client backs off after 429 (Retry-After asks 1 s; shorter keeps the
                        # queue under pressure). Without it the workers spin on instant 429s
                        # and the mix degenerates into a queue-full test.
                        await asyncio.sleep(self.args.backoff_ms / 1000)
                if on_progress:
                    on_progress(done[0])
            if holder[0] is not None:
                holder[0].close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done[0]


def parse_metrics(text):
    out = collections.defaultdict(float)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        out[name_labels.split("{", 1)[0]] += float(value)
    return out


ACCOUNTING = ("r2serve_requests_accepted_total", "r2serve_requests_completed_total",
              "r2serve_requests_aborted_total", "r2serve_requests_errored_total")


# --------------------------------------------------------------------------------------------
# Process figures


def proc_status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()

    def kb(key):
        return int(fields.get(key, "0 kB").split()[0])

    return {"rss_anon_kb": kb("RssAnon"), "swap_kb": kb("VmSwap"), "rss_kb": kb("VmRSS"),
            "threads": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def wait_for(predicate, deadline_s, interval_s=0.05):
    """Polls an async predicate until true or the deadline; returns its last value."""
    end = time.monotonic() + deadline_s
    while True:
        value = await predicate()
        if value or time.monotonic() >= end:
            return value
        await asyncio.sleep(interval_s)


async def settle(driver, pid, stats, label, baseline=None):
    """Waits for the server to go idle; returns its /metrics and process figures. With
    `baseline`, waits (bounded) for fds and threads to come back within +-2 of it."""
    last = {}

    async def idle():
        m = await driver.metrics()
        last["m"] = m
        return (m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
                and m["r2serve_kv_blocks_used"] == 0)

    if not await wait_for(idle, 30):
        m = last["m"]
        stats.violate(f"{label}: server not idle 30 s after the load: running "
                      f"{m['vllm:num_requests_running']:.0f}, waiting "
                      f"{m['vllm:num_requests_waiting']:.0f}, KV blocks used "
                      f"{m['r2serve_kv_blocks_used']:.0f}")
    if pid is None:
        return last["m"], None
    if baseline is None:
        # The smallest descriptor count over a short window: a connection the server is
        # closing right now (the /metrics poll's) is not part of the baseline.
        samples = []
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            samples.append(proc_status(pid))
            await asyncio.sleep(0.1)
        fig = min(samples, key=lambda s: (s["fds"], s["threads"]))
        return last["m"], fig

    async def back():
        fig = proc_status(pid)
        last["p"] = fig
        return (abs(fig["fds"] - baseline["fds"]) <= 2
                and abs(fig["threads"] - baseline["threads"]) <= 2)

    await wait_for(back, 10, 0.1)
    return last["m"], last["p"]


# --------------------------------------------------------------------------------------------
# Server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary():
    for build in ("soak", "release"):
        path = ROOT / "build" / build / "server" / "r2serve"
        if path.exists():
            return str(path)
    sys.exit("no r2serve binary: pass --binary or --url")


def start_server(args, workdir):
    binary = args.binary or find_binary()
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = workdir / "tiny"
        subprocess.run([binary, "make-tiny-model", "--preset", "tiny", "--out", str(model_dir)],
                       check=True, capture_output=True, timeout=300)
    port = free_port()
    cmd = [binary, "serve", "--model", str(model_dir), "--served-model-name", MODEL, "--port",
           str(port), "--max-num-seqs", str(MAX_NUM_SEQS), "--max-queued-requests",
           str(MAX_QUEUED), "--max-num-batched-tokens", str(MAX_BATCHED_TOKENS),
           "--kv-cache-memory", args.kv_cache_memory, "--max-body-bytes",
           str(MAX_BODY), "--shutdown-timeout", "5"]
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return proc, port, cmd, log


async def wait_ready(driver, proc):
    async def ready():
        if proc is not None and proc.poll() is not None:
            return True
        try:
            return await driver.health() == 200
        except (OSError, asyncio.TimeoutError, EOFError, Violation):
            return False

    ok = await wait_for(ready, 180, 0.1)
    if not ok or (proc is not None and proc.poll() is not None):
        raise SystemExit("the server did not become ready")


# --------------------------------------------------------------------------------------------


async def soak(args):
    stats = Stats()
    workdir = Path(tempfile.mkdtemp(prefix="r2soak_"))
    proc = None
    cmd = None
    if args.url:
        host, _, port = args.url.split("//", 1)[-1].rstrip("/").partition(":")
        port = int(port or 80)
        pid = args.pid
        if pid is not None:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError as e:
                raise SystemExit(f"--pid {pid}: {e}")
            if b"serve" not in argv:
                raise SystemExit(f"--pid {pid} is not a server process: {b' '.join(argv)[:200]!r}")
    else:
        proc, port, cmd, log = start_server(args, workdir)
        host, pid = "127.0.0.1", proc.pid
    driver = Driver(args, host, port, stats)
    summary = {"seed": args.seed, "requests": args.requests, "concurrency": args.concurrency,
               "server_cmd": " ".join(cmd) if cmd else args.url}
    try:
        await wait_ready(driver, proc)
        # Until the server reports the accounting counters, nothing below can be checked.
        m0 = await driver.metrics()
        missing = [k for k in ACCOUNTING + ("r2serve_kv_pool_integrity_checks_total",)
                   if k not in m0]
        if missing:
            raise SystemExit(f"/metrics lacks {', '.join(missing)}")
        plan = make_plan(args)
        warmup = args.warmup if args.warmup is not None else min(1000, max(1, args.requests // 10))
        # Split the plan at the warm-up: the first items making up `warmup` requests.
        count, split = 0, 0
        for split, (kind, spec) in enumerate(plan):
            if count >= warmup:
                break
            count += len(spec) if kind == "burst" else 1
        else:
            split = len(plan)
        started = time.monotonic()
        last_print = [0.0]
        # RssAnon+VmSwap under load, every tenth of the run (informational: the assertion
        # compares the two idle points).
        trajectory = []
        sample_every = max(1, args.requests // 10)

        def progress(offset):
            def cb(done):
                now = time.monotonic()
                total = offset + done
                if pid is not None and total >= sample_every * (len(trajectory) + 1):
                    fig = proc_status(pid)
                    trajectory.append([total, fig["rss_anon_kb"] + fig["swap_kb"]])
                if args.progress and now - last_print[0] > 10:
                    last_print[0] = now
                    print(f"  {total} requests, {now - started:.0f} s, "
                          f"{len(stats.violations)} violations", flush=True)
            return cb

        n1 = await driver.run(plan[:split], args.concurrency, progress(0))
        _, base = await settle(driver, pid, stats, "after the warm-up")
        load_start = time.monotonic()
        n2 = await driver.run(plan[split:], args.concurrency, progress(n1))
        load_s = time.monotonic() - load_start
        elapsed = time.monotonic() - started
        m_idle, end = await settle(driver, pid, stats, "at the end", base)

        # A KV pool self-check after the load: the engine runs one each time it turns idle, so
        # one small request makes it run now.
        checks_before = m_idle["r2serve_kv_pool_integrity_checks_total"]
        probe = {"kind": "valid", "path": "/v1/completions", "n": 1, "stream": False,
                 "body": {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 2}, "fresh": True}
        if await driver.one(probe, [None]) != "ok":
            stats.violate("the probe request after the load did not complete")

        async def checked():
            m = await driver.metrics()
            return m if m["r2serve_kv_pool_integrity_checks_total"] > checks_before else None

        m1 = await wait_for(checked, 10)
        if not m1:
            stats.violate("no KV pool self-check ran within 10 s of the idle probe")
            m1 = await driver.metrics()
        if m1["r2serve_kv_pool_integrity_failures_total"] != 0:
            stats.violate(f"KV pool self-check failed "
                          f"{m1['r2serve_kv_pool_integrity_failures_total']:.0f} times")
        if m1["r2serve_kv_blocks_used"] != 0:
            stats.violate(f"{m1['r2serve_kv_blocks_used']:.0f} KV blocks in use at idle")
        if await driver.health() != 200:
            stats.violate("/health is not 200 after the soak")
        acc = {k.split("_")[2]: m1[k] for k in ACCOUNTING}
        delta = {k.split("_")[2]: m1[k] - m0[k] for k in ACCOUNTING}
        if acc["accepted"] != acc["completed"] + acc["aborted"] + acc["errored"]:
            stats.violate(f"accounting: accepted {acc['accepted']:.0f} != completed "
                          f"{acc['completed']:.0f} + aborted {acc['aborted']:.0f} + errored "
                          f"{acc['errored']:.0f}")
        oc = stats.outcomes
        client_ok = sum(v for k, v in oc.items() if k.split(":")[-1] == "ok")
        client_cut = sum(v for k, v in oc.items() if k.startswith("disconnect:"))
        if delta["completed"] < client_ok:
            stats.violate(f"server completed {delta['completed']:.0f} requests, the client "
                          f"received {client_ok} complete answers")
        if delta["aborted"] > client_cut:
            stats.violate(f"server aborted {delta['aborted']:.0f} requests, the client cut only "
                          f"{client_cut}")
        if delta["errored"] > 0:  # nothing in the soak's valid traffic may fail in the engine
            stats.violate(f"the engine ended {delta['errored']:.0f} requests with an error "
                          f"({stats.codes.get('stream_error_event', 0)} error events seen)")
        if args.bursts_must_overflow and args.burst_every and not any(stats.burst_429):
            stats.violate("no burst went past the queue limit (no 429 in any burst)")

        figures = {}
        if base is not None and end is not None:
            mem0 = base["rss_anon_kb"] + base["swap_kb"]
            mem1 = end["rss_anon_kb"] + end["swap_kb"]
            growth = (mem1 - mem0) / mem0 * 100
            figures = {"rss_anon_plus_swap_kb_after_warmup": mem0,
                       "rss_anon_plus_swap_kb_end": mem1, "growth_pct": round(growth, 3),
                       "under_load_kb": trajectory,
                       "fds": [base["fds"], end["fds"]],
                       "threads": [base["threads"], end["threads"]]}
            if growth >= args.max_growth_pct:
                stats.violate(f"RssAnon+VmSwap grew {growth:.2f} % after the warm-up "
                              f"({mem0} -> {mem1} kB; limit {args.max_growth_pct} %)")
            if abs(end["fds"] - base["fds"]) > 2:
                stats.violate(f"open descriptors {base['fds']} after the warm-up, "
                              f"{end['fds']} at idle at the end")
            if abs(end["threads"] - base["threads"]) > 2:
                stats.violate(f"threads {base['threads']} after the warm-up, "
                              f"{end['threads']} at idle at the end")
        summary.update({
            "warmup_requests": n1, "sent": n1 + n2 + 1, "elapsed_s": round(elapsed, 1),
            "throughput_rps": round((n1 + n2) / elapsed, 1),
            "load_after_warmup_s": round(load_s, 1),
            "outcomes": dict(sorted(oc.items())), "error_codes": dict(sorted(stats.codes.items())),
            "finish_reasons": dict(stats.finish), "bursts": len(stats.burst_429),
            "burst_429": stats.burst_429,
            "accounting": {k: int(v) for k, v in acc.items()},
            "accounting_delta": {k: int(v) for k, v in delta.items()},
            "client_gone_total": int(m1["r2serve_requests_client_gone_total"]),
            "integrity_checks": int(m1["r2serve_kv_pool_integrity_checks_total"]),
            "integrity_failures": int(m1["r2serve_kv_pool_integrity_failures_total"]),
            "kv_blocks_used_idle": int(m1["r2serve_kv_blocks_used"]),
            "process": figures,
        })
        if stats.latencies:
            lat = sorted(stats.latencies)
            summary["latency_s_p50_p99_max"] = [round(lat[len(lat) // 2], 3),
                                                round(lat[int(len(lat) * 0.99)], 3),
                                                round(lat[-1], 3)]
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(30)
                    if rc != 0:
                        stats.violate(f"the server exited {rc} after SIGTERM")
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    stats.violate("the server did not exit within 30 s of SIGTERM")
            else:
                stats.violate(f"the server died during the soak (exit {proc.returncode})")
            log.close()
            if stats.violations or args.keep_log:
                tail = (workdir / "server.log").read_text(errors="replace")[-3000:]
                summary["server_log_tail"] = tail
        shutil.rmtree(workdir, ignore_errors=True)
    summary["violations"] = stats.violations
    return summary


def print_summary(s):
    print(f"soak: {s['sent']} requests (seed {s['seed']}, concurrency {s['concurrency']}) in "
          f"{s['elapsed_s']} s = {s['throughput_rps']} req/s; warm-up {s['warmup_requests']}")
    print(f"server: {s['server_cmd']}")
    print("outcomes:")
    for k, v in s["outcomes"].items():
        print(f"  {k:40s} {v:6d}")
    print("error answers: " + ", ".join(f"{k} x{v}" for k, v in s["error_codes"].items()))
    print(f"finish reasons: {s['finish_reasons']}")
    print(f"bursts: {s['bursts']}, 429s per burst: min {min(s['burst_429'], default=0)} "
          f"max {max(s['burst_429'], default=0)} total {sum(s['burst_429'])}")
    a, d = s["accounting"], s["accounting_delta"]
    print(f"accounting (server, at idle): accepted {a['accepted']} = completed {a['completed']}"
          f" + aborted {a['aborted']} + errored {a['errored']}; this run: {d}; "
          f"client_gone {s['client_gone_total']}")
    print(f"KV at idle: blocks used {s['kv_blocks_used_idle']}, pool self-checks "
          f"{s['integrity_checks']} ({s['integrity_failures']} failed)")
    p = s["process"]
    if p:
        print(f"RssAnon+VmSwap: {p['rss_anon_plus_swap_kb_after_warmup']} kB after warm-up -> "
              f"{p['rss_anon_plus_swap_kb_end']} kB at the end ({p['growth_pct']:+.3f} %); "
              f"fds {p['fds'][0]} -> {p['fds'][1]}; threads {p['threads'][0]} -> "
              f"{p['threads'][1]}")
        print("  under load (requests: kB): " +
              ", ".join(f"{n}: {kb}" for n, kb in p["under_load_kb"]))
    else:
        print("process figures: not measured (no --pid)")
    if "latency_s_p50_p99_max" in s:
        print(f"latency of complete answers (s): p50/p99/max {s['latency_s_p50_p99_max']}")
    if s["violations"]:
        print(f"FAILED: {len(s['violations'])} violations")
        for v in s["violations"][:20]:
            print(f"  - {v}")
        if len(s["violations"]) > 20:
            print(f"  ... and {len(s['violations']) - 20} more")
        if "server_log_tail" in s:
            print("server log (tail):\n" + s["server_log_tail"])
    else:
        print("PASSED: no lost responses, every answer well-formed, accounting balanced, "
              "KV pool clean at idle, memory/fds/threads within bounds")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--disconnect-frac", type=float, default=0.20)
    p.add_argument("--invalid-frac", type=float, default=0.05)
    p.add_argument("--burst-every", type=int, default=250,
                   help="a burst after every this many single requests (0: none)")
    p.add_argument("--burst-size", type=int, default=32,
                   help="simultaneous requests per burst (counted in --requests)")
    p.add_argument("--bursts-must-overflow", action=argparse.BooleanOptionalAction,
                   default=True, help="fail unless some burst got a 429")
    p.add_argument("--max-tokens", type=int, default=24, help="max_tokens upper bound")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds per request")
    p.add_argument("--backoff-ms", type=float, default=50.0,
                   help="pause of a worker after a 429 answer (bursts never back off)")
    p.add_argument("--max-growth-pct", type=float, default=1.0)
    p.add_argument("--warmup", type=int,
                   help="requests before the memory/fd/thread baseline (default: 10 %%, at most "
                        "1,000)")
    p.add_argument("--binary", help="r2serve to start (default build/soak, build/release)")
    p.add_argument("--model-dir", help="model for the started server (default: a new tiny one)")
    p.add_argument("--kv-cache-memory", default="64M")
    p.add_argument("--url", help="drive this running server instead (served model 'tiny')")
    p.add_argument("--pid", type=int, help="with --url: the server's pid for process figures")
    p.add_argument("--json-out", help="write the summary here")
    p.add_argument("--progress", action="store_true", help="a line every 10 s")
    p.add_argument("--keep-log", action="store_true", help="add the server log tail")
    args = p.parse_args(argv)
    if not 0 <= args.invalid_frac < 1 or not 0 <= args.disconnect_frac + args.invalid_frac < 1:
        p.error("--disconnect-frac and --invalid-frac must be in [0, 1) and sum below 1")
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be positive")
    summary = asyncio.run(soak(args))
    print_summary(summary)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
