"""gRPC faults (RELIABILITY rows 27, 31; docs/reliability.md): bytes that are not the request's
protobuf, the concurrent-stream limit, and a hung engine step with gRPC and HTTP calls in flight
(the watchdog ends both, health turns NOT_SERVING, the process exits 1). Cancellation, deadlines
and oversized messages are test_grpc.py's.
"""
import json
import socket
import time

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from conftest import MODEL_NAME, metric, wait_until  # noqa: E402
from test_grpc import call_error, pb, start_grpc_server  # noqa: E402,F401  (pb: a fixture)

PROMPT_IDS = [11, 22, 33, 44]


def raw_unary(channel, method, payload, timeout=30):
    """Calls `method` with `payload` as the request bytes, unparsed by the client."""
    call = channel.unary_unary(method, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    return call(payload, timeout=timeout)


def raw_stream(channel, method, payload, timeout=30):
    call = channel.unary_stream(method, request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    return list(call(payload, timeout=timeout))


@pytest.fixture(scope="module")
def gserver(start_server):
    return start_grpc_server(start_server, "--grpc-max-concurrent-streams", "4")


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x80"
    b"\x80\x80\x80\x80\x80\x01", b"\x08" + b"\xff" * 11, b"\x0f",
])
def test_bad_protobuf_is_refused_and_the_server_serves_on(gserver, payload):  # RELIABILITY 31
    # gRPC C++ refuses a request message it cannot parse before any handler runs, and answers
    # UNIMPLEMENTED with no message (grpc/grpc#30454), not INVALID_ARGUMENT: docs/reliability.md.
    refused = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT,
               grpc.StatusCode.INTERNAL)
    with grpc.insecure_channel(gserver.grpc_target) as ch:
        for method, call in (("/r2serve.v1.Inference/Tokenize", raw_unary),
                             ("/r2serve.v1.Inference/ListModels", raw_unary),
                             ("/r2serve.v1.Inference/Generate", raw_stream),
                             ("/r2serve.v1.Inference/Chat", raw_stream)):
            e = call_error(lambda: call(ch, method, payload))
            assert e.code() in refused, (method, e.code(), e.details())
        # The same channel still works for a well-formed call (an empty ListModelsRequest).
        assert raw_unary(ch, "/r2serve.v1.Inference/ListModels", b"")
    assert gserver.health() == 200


def test_unknown_method_is_unimplemented(gserver):
    with grpc.insecure_channel(gserver.grpc_target) as ch:
        e = call_error(lambda: raw_unary(ch, "/r2serve.v1.Inference/Nope", b""))
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stream_limit_is_enforced_and_slots_return(pb, gserver):  # RELIABILITY 31
    msg, services = pb
    with grpc.insecure_channel(gserver.grpc_target) as ch:
        stub = services.InferenceStub(ch)
        long_request = msg.GenerateRequest(token_ids=msg.TokenIds(ids=PROMPT_IDS),
                                           sampling=msg.SamplingParams(max_tokens=1000,
                                                                       ignore_eos=True))
        calls = [stub.Generate(long_request, timeout=120) for _ in range(4)]
        for call in calls:
            next(call)
        e = call_error(lambda: stub.Generate(long_request, timeout=30))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
        assert "concurrent streams" in e.details()
        for call in calls:
            call.cancel()

        def served():
            try:
                short = msg.GenerateRequest(token_ids=msg.TokenIds(ids=PROMPT_IDS),
                                            sampling=msg.SamplingParams(max_tokens=2))
                return sum(len(r.choices) for r in stub.Generate(short, timeout=30)) > 0
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
        assert wait_until(served, 5)  # the cancelled calls gave their slots back


def test_hang_ends_grpc_and_http_calls_and_health_follows(pb, start_server):  # RELIABILITY 27
    msg, services = pb
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = start_grpc_server(start_server, "--inject-fault", "slow@1:100ms,hang@30",
                               "--watchdog-timeout-s", "2")
    body = json.dumps({"model": MODEL_NAME, "prompt": PROMPT_IDS, "max_tokens": 1000,
                       "stream": True, "ignore_eos": True}).encode()
    http = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    http.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with grpc.insecure_channel(server.grpc_target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        request = msg.GenerateRequest(token_ids=msg.TokenIds(ids=PROMPT_IDS),
                                      sampling=msg.SamplingParams(max_tokens=1000,
                                                                  ignore_eos=True))
        calls = [services.InferenceStub(ch).Generate(request, timeout=60) for _ in range(2)]
        for call in calls:
            next(call)
        assert wait_until(lambda: metric(server.metrics(), "vllm:num_requests_running") == 3, 10)
        for call in calls:
            e = call_error(lambda: list(call))
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()
            assert "watchdog" in e.details()
        ended_at = time.monotonic()
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

        def health_not_serving():
            try:
                return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                    not_serving
            except grpc.RpcError:
                return True  # the server has already gone
        assert wait_until(health_not_serving, 1.0)
        assert time.monotonic() - ended_at < 1.5
    buf = b""
    http.settimeout(30)
    while b"data: [DONE]" not in buf:
        chunk = http.recv(65536)
        if not chunk:
            break
        buf += chunk
    assert b"watchdog" in buf and b"data: [DONE]" in buf
    http.close()
    assert server.proc.wait(10) == 1
