"""Fixtures for the end-to-end tests: a real `r2serve serve` on a tiny model in a temp dir.

R2SERVE_BIN names the binary (scripts/test sets it); otherwise build/release, then build/h8.
Servers start on a free port and are ready when GET /health answers 200 (polled against a
deadline, never a fixed sleep). Each distinct set of extra flags gets its own server, shared by
the tests of a module.
"""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "tiny"
STARTUP_DEADLINE_S = 180


def find_binary():
    env = os.environ.get("R2SERVE_BIN")
    if env:
        return env
    for build in ("release", "h8"):
        path = ROOT / "build" / build / "server" / "r2serve"
        if path.exists():
            return str(path)
    pytest.skip("no r2serve binary: build it or set R2SERVE_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, deadline_s, interval_s=0.02):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


class Server:
    def __init__(self, binary, model_dir, extra_args, log_path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.model_dir = model_dir
        self.log_path = log_path
        self.args = [binary, "serve", "--model", str(model_dir), "--served-model-name",
                     MODEL_NAME, "--port", str(self.port), *extra_args]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        self.api_key = None

    @property
    def has_tokenizer(self):
        return (Path(self.model_dir) / "tokenizer.json").exists()

    @property
    def has_chat_template(self):
        config = Path(self.model_dir) / "tokenizer_config.json"
        return config.exists() and "chat_template" in json.loads(config.read_text())

    def health(self):
        try:
            return httpx.get(self.base_url + "/health", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self):
        ok = wait_until(lambda: self.proc.poll() is not None or self.health() == 200,
                        STARTUP_DEADLINE_S, 0.05)
        if self.proc.poll() is not None or not ok or self.health() != 200:
            raise RuntimeError(f"server did not become ready; log:\n{self.read_log()}")

    def read_log(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")[-4000:]

    def headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def metrics(self):
        text = httpx.get(self.base_url + "/metrics", headers=self.headers(), timeout=5).text
        return parse_metrics(text)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def parse_metrics(text):
    """{name: {frozenset(labels): value}} from Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        labels = frozenset()
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            pairs = []
            for item in rest.rstrip("}").split('",'):
                if "=" in item:
                    k, v = item.split("=", 1)
                    pairs.append((k, v.strip('"')))
            labels = frozenset(pairs)
        else:
            name = name_labels
        out.setdefault(name, {})[labels] = float(value)
    return out


def metric(metrics, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for label_set, value in metrics.get(name, {}).items():
        if all((k, v) in label_set for k, v in labels.items()):
            total += value
    return total


@pytest.fixture(scope="session")
def binary():
    return find_binary()


@pytest.fixture(scope="session")
def model_dir(binary, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    result = subprocess.run([binary, "make-tiny-model", "--preset", "tiny", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def start_server(binary, model_dir, tmp_path_factory):
    """start_server(*extra_args, api_key=None) -> a ready Server; stopped at the session's end."""
    servers = []

    def start(*extra_args, api_key=None):
        args = list(extra_args)
        if api_key:
            args += ["--api-key", api_key]
        log = tmp_path_factory.mktemp("logs") / "server.log"
        server = Server(binary, model_dir, args, log)
        server.api_key = api_key
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--max-num-seqs", "64", "--kv-cache-memory", "256M")


@pytest.fixture(scope="module")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0,
                         timeout=120)


@pytest.fixture
def needs_chat(server):
    if not server.has_tokenizer or not server.has_chat_template:
        pytest.skip("the tiny model has no tokenizer.json/tokenizer_config.json with a chat "
                    "template yet (make-tiny-model does not write one), so chat requests "
                    "cannot be rendered")


# A request through httpx with the server's headers (API key when set).
def post(server, path, body=None, content=None, headers=None):
    return httpx.post(server.base_url + path, json=body, content=content,
                      headers={**server.headers(), **(headers or {})}, timeout=30)


# Reads a raw SSE stream until it holds k `data:` lines; returns everything read.
def read_data_lines(s, k):
    buf = b""
    while buf.count(b"data: ") < k:
        chunk = s.recv(65536)
        assert chunk, "server closed early"
        buf += chunk
    return buf
