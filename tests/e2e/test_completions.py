"""Conformance cases of API.md that need no tokenizer: /v1/completions with token-id prompts,
/v1/models, /health, errors, logprobs, n, seeds, stop token ids, logit_bias, usage, metrics."""
import json

import httpx
import openai
import pytest

from conftest import MODEL_NAME, metric, parse_metrics

PROMPT = [5, 17, 99, 3, 250, 7]
AS_IDS = {"ignore_eos": True, "return_tokens_as_token_ids": True}


def tokens_of(choice):
    return choice.logprobs.tokens


def test_health_and_models(server, client):  # cases 1, 2
    assert httpx.get(server.base_url + "/health").status_code == 200
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    out = client.completions.create(model=models.data[0].id, prompt=PROMPT, max_tokens=2)
    assert out.model == MODEL_NAME


def test_basic_completion_length_and_usage(client):  # cases 3, 7
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=5,
                                    temperature=0, extra_body={"ignore_eos": True})
    assert out.object == "text_completion"
    assert out.id.startswith("cmpl-")
    assert len(out.choices) == 1
    choice = out.choices[0]
    assert choice.finish_reason == "length"
    assert out.usage.prompt_tokens == len(PROMPT)
    assert out.usage.completion_tokens == 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_prompt_as_list_of_one_token_list(client):
    out = client.completions.create(model=MODEL_NAME, prompt=[PROMPT], max_tokens=2)
    assert out.usage.prompt_tokens == len(PROMPT)


def test_list_of_several_prompts_is_rejected(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL_NAME, prompt=[PROMPT, PROMPT], max_tokens=2)
    assert err.value.body["param"] == "prompt"


def test_stream_equals_non_stream_at_temperature_zero(client):  # cases 4, 5, 10
    args = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=0,
                extra_body={"ignore_eos": True})
    full = client.completions.create(**args)
    chunks = list(client.completions.create(stream=True, **args))
    streamed = [t for c in chunks for ch in c.choices if ch.logprobs for t in ch.logprobs.tokens]
    assert streamed == tokens_of(full.choices[0])
    assert "".join(ch.text for c in chunks for ch in c.choices) == full.choices[0].text
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["length"]


def test_stream_options_usage(server, client):  # case 6
    args = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=4, stream=True)
    chunks = list(client.completions.create(**args))
    assert all(c.usage is None for c in chunks)
    chunks = list(client.completions.create(stream_options={"include_usage": True}, **args))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    r = httpx.post(server.base_url + "/v1/completions",
                   json={"model": MODEL_NAME, "prompt": PROMPT, "stream": False,
                         "stream_options": {"include_usage": True}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "stream_options"


def test_n_choices(client):  # case 8
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=3, n=3,
                                    temperature=1, seed=1)
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    chunks = list(client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=3, n=3,
                                            stream=True))
    finishes = {}
    for c in chunks:
        for ch in c.choices:
            if ch.finish_reason:
                finishes[ch.index] = finishes.get(ch.index, 0) + 1
    assert finishes == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize("k", [0, 5])
def test_completion_logprobs(client, k):  # case 11
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=4, logprobs=k)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == 4
    assert all(v <= 0 for v in lp.token_logprobs)
    # Distinct tokens may share a text (e.g. partial UTF-8 bytes), so the dicts can be shorter.
    assert all(min(k, 1) <= len(top) <= k + 1 for top in lp.top_logprobs)


def test_too_many_logprobs_then_healthy(server, client):  # cases 9, 11
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=2, logprobs=21)
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_no_logprobs_is_null(client):
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=2)
    assert out.choices[0].logprobs is None


def test_seed(client):  # case 18
    args = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=1.0, logprobs=0,
                seed=1234)
    a = client.completions.create(**args)
    b = client.completions.create(**args)
    assert tokens_of(a.choices[0]) == tokens_of(b.choices[0])
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=2,
                                  seed=2**63)
    assert err.value.body["param"] == "seed"


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_exceeded_before_streaming(server, stream):  # cases 19, 20
    too_long = list(range(1, 200)) * 6  # 1194 tokens > 1024
    r = httpx.post(server.base_url + "/v1/completions",
                   json={"model": MODEL_NAME, "prompt": too_long, "stream": stream})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.post(server.base_url + "/v1/completions",
                   json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1020,
                         "stream": stream})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "1024" in error["message"] and "1020" in error["message"]


def test_ignore_eos_gives_exactly_max_tokens(client):  # case 21
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=40,
                                    extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 40
    assert out.choices[0].finish_reason == "length"


def test_stop_token_ids(client):  # case 22, with token ids
    base = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=10,
                                     temperature=0, logprobs=0, extra_body=AS_IDS)
    ids = [int(t.split(":")[1]) for t in tokens_of(base.choices[0])]
    stop_id = ids[3]
    first = ids.index(stop_id)
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=10,
                                    temperature=0, extra_body={"stop_token_ids": [stop_id],
                                                               "ignore_eos": True})
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens in (first, first + 1)


def test_logit_bias_bans_token(client):  # case 23
    base = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=1,
                                     temperature=0, logprobs=0, extra_body=AS_IDS)
    banned = int(tokens_of(base.choices[0])[0].split(":")[1])
    out = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=1,
                                    temperature=0, logprobs=0, extra_body=AS_IDS,
                                    logit_bias={str(banned): -100})
    assert tokens_of(out.choices[0])[0] != f"token_id:{banned}"


def test_cached_tokens_on_repeated_prompt(client):  # case 32
    prompt = [(i * 7 + 3) % 1000 for i in range(300)]
    client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=1)
    out = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=1)
    assert out.usage.prompt_tokens_details.cached_tokens > 0


def test_unknown_fields_are_ignored(server):  # case 16
    r = httpx.post(server.base_url + "/v1/completions",
                   json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 1,
                         "some_vendor_extension": {"a": 1}})
    assert r.status_code == 200


def test_response_format_not_supported(server):  # cases 12-14
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {}}, "bad"):
        r = httpx.post(server.base_url + "/v1/completions",
                       json={"model": MODEL_NAME, "prompt": PROMPT, "response_format": fmt})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "response_format"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="../../etc/passwd", prompt=PROMPT, max_tokens=1)
    assert err.value.body["code"] == "model_not_found"


def test_metrics_names_and_counters_move(server, client):  # case 33
    before = server.metrics()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total",
                 "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:request_success_total",
                 "vllm:num_preemptions_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_count", "vllm:e2e_request_latency_seconds_sum",
                 "r2serve_http_requests_total", "r2serve_kv_blocks_used"):
        assert name in before, name
    for labels in before["vllm:num_requests_running"]:
        assert ("model_name", MODEL_NAME) in labels
    client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=3,
                              extra_body={"ignore_eos": True})
    after = server.metrics()
    assert metric(after, "vllm:generation_tokens_total") >= \
        metric(before, "vllm:generation_tokens_total") + 3
    assert metric(after, "vllm:prompt_tokens_total") > metric(before, "vllm:prompt_tokens_total")
    assert metric(after, "vllm:request_success_total", finished_reason="length") == \
        metric(before, "vllm:request_success_total", finished_reason="length") + 1
    assert metric(after, "vllm:e2e_request_latency_seconds_count") == \
        metric(before, "vllm:e2e_request_latency_seconds_count") + 1
    for phase in ("queue", "prefill", "decode"):
        name = f"vllm:request_{phase}_time_seconds"
        assert metric(after, name + "_count") == metric(before, name + "_count") + 1, name
        assert metric(after, name + "_sum") >= metric(before, name + "_sum"), name
    assert metric(after, "vllm:request_generation_tokens_sum") == \
        metric(before, "vllm:request_generation_tokens_sum") + 3
    assert metric(after, "vllm:request_prompt_tokens_count") == \
        metric(before, "vllm:request_prompt_tokens_count") + 1


# Every vllm:* series API.md lists, under the names dashboards read (histograms by their
# _count). The spec_decode_* counters are left out on purpose: the engine does no speculative
# decoding, and vLLM too exports them only when it does (docs/http.md).
API_MD_VLLM_NAMES = (
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc", "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:request_success_total", "vllm:time_to_first_token_seconds_count",
    "vllm:inter_token_latency_seconds_count", "vllm:time_per_output_token_seconds_count",
    "vllm:e2e_request_latency_seconds_count", "vllm:request_queue_time_seconds_count",
    "vllm:request_prefill_time_seconds_count", "vllm:request_decode_time_seconds_count",
    "vllm:request_prompt_tokens_count", "vllm:request_generation_tokens_count",
    "vllm:iteration_tokens_total_count")


def test_metrics_export_every_api_md_vllm_name(server, client):
    client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=2,
                              extra_body={"ignore_eos": True})
    text = httpx.get(server.base_url + "/metrics", headers=server.headers(), timeout=5).text
    metrics = parse_metrics(text)
    for name in API_MD_VLLM_NAMES:
        assert name in metrics, name
    for name in ("vllm:request_queue_time_seconds", "vllm:request_prompt_tokens"):
        assert f"# TYPE {name} histogram" in text
        assert metric(metrics, name + "_count") >= 1
        assert metric(metrics, name + "_bucket", le="+Inf") == metric(metrics, name + "_count")
