#!/usr/bin/env python3
"""Chat-template goldens: render conversations with transformers' own chat-template renderer.

Rerun (from the repository root):

    /work/goldenvenv/bin/python tests/golden/gen_chat_goldens.py

Needs transformers (4.57 was used) and jinja2. Reads the templates in tests/golden/templates/ and
writes one JSON fixture per template variant to tests/golden/fixtures/chat/. The C++ test
(tests/unit/chat/chat_golden_test.cc) renders every case with r2::chat::ChatTemplate and asserts
byte-identical output, or an error where transformers raised one.

Rendering goes through transformers.utils.chat_template_utils.render_jinja_template, the function
tokenizer.apply_chat_template(tokenize=False) calls, with the special tokens of the DeepSeek-V3
tokenizer_config.json passed as context variables the way apply_chat_template passes them.
Message content given as a list of {"type": "text"} parts is flattened to one string first (the
server does the same before rendering).
"""

import copy
import json
import os
import sys

import transformers
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATES = os.path.join(ROOT, "tests", "golden", "templates")
OUT = os.path.join(ROOT, "tests", "golden", "fixtures", "chat")

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
SPECIAL_TOKENS = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web. Returns the top results (título, Überschrift, 标题).",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "top_k": {"type": "integer", "default": 3}},
            "required": ["query"],
        },
    },
}


def call(cid, name, args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def sys_(text):
    return {"role": "system", "content": text}


def user(text):
    return {"role": "user", "content": text}


def asst(text):
    return {"role": "assistant", "content": text}


def asst_calls(calls, content=None):
    return {"role": "assistant", "content": content, "tool_calls": calls}


def tool(cid, text):
    return {"role": "tool", "tool_call_id": cid, "content": text}


W1 = call("call_1", "get_weather", '{"city": "Paris"}')
W2 = call("call_2", "get_weather", '{"city": "Tokyo", "unit": "celsius"}')
S1 = call("call_3", "web_search", '{"query": "DeepSeek V3 paper", "top_k": 2}')


def conversations():
    """(name, messages, tools) triples. Each is rendered with and without a generation prompt."""
    c = []
    c.append(("single_user", [user("Hello!")], None))
    c.append(("system_user", [sys_("You are a helpful assistant."), user("Hi")], None))
    c.append(("two_systems", [sys_("You are terse."), sys_("Answer in French."), user("Bonjour")],
              None))
    c.append(("three_systems_spread", [sys_("A"), user("q1"), sys_("B"), asst("a1"), sys_("C"),
                                       user("q2")], None))
    c.append(("multi_turn", [user("What is 2+2?"), asst("4"), user("And 3+3?"), asst("6"),
                             user("Thanks")], None))
    c.append(("ends_in_assistant", [user("Say hi"), asst("Hi there!")], None))
    c.append(("system_only", [sys_("Only a system prompt.")], None))
    c.append(("empty_messages", [], None))
    c.append(("unicode_and_newlines", [sys_("Système: réponds\nen détail."),
                                       user("你好，世界！\n\tTabs and \"quotes\" and \\ backslash"),
                                       asst("こんにちは 👋\n\n```python\nprint('x')\n```")], None))
    c.append(("think_in_history", [user("Why is the sky blue?"),
                                   asst("<think>\nRayleigh scattering.\n</think>\n\nBecause of "
                                        "Rayleigh scattering."),
                                   user("And sunsets?")], None))
    c.append(("two_think_blocks", [user("q"), asst("<think>a</think>b</think>c"), user("q2")],
              None))
    c.append(("think_only_assistant_last", [user("Think first"),
                                            asst("<think>planning</think>Done.")], None))
    c.append(("one_tool_call", [user("Weather in Paris?"), asst_calls([W1])], [WEATHER_TOOL]))
    c.append(("one_tool_call_result", [user("Weather in Paris?"), asst_calls([W1]),
                                       tool("call_1", '{"temp": 21, "sky": "clear"}')],
              [WEATHER_TOOL]))
    c.append(("one_tool_call_answer", [user("Weather in Paris?"), asst_calls([W1]),
                                       tool("call_1", "21C, clear"), asst("It is 21C and clear.")],
              [WEATHER_TOOL]))
    c.append(("two_tool_calls", [user("Paris and Tokyo?"), asst_calls([W1, W2])], [WEATHER_TOOL]))
    c.append(("two_tool_results", [user("Paris and Tokyo?"), asst_calls([W1, W2]),
                                   tool("call_1", "21C"), tool("call_2", "18C")], [WEATHER_TOOL]))
    c.append(("two_tool_results_answer", [sys_("Use tools."), user("Paris and Tokyo?"),
                                          asst_calls([W1, W2]), tool("call_1", "21C"),
                                          tool("call_2", "18C"),
                                          asst("Paris 21C, Tokyo 18C."), user("Thanks!")],
              [WEATHER_TOOL]))
    c.append(("three_tool_calls_two_tools", [user("Look up things"), asst_calls([W1, S1, W2]),
                                             tool("call_1", "a"), tool("call_3", "b"),
                                             tool("call_2", "c")],
              [WEATHER_TOOL, SEARCH_TOOL]))
    c.append(("tool_calls_twice", [user("Paris?"), asst_calls([W1]), tool("call_1", "21C"),
                                   asst("21C."), user("Tokyo?"), asst_calls([W2]),
                                   tool("call_2", "18C")], [WEATHER_TOOL]))
    c.append(("tool_call_with_content", [user("Paris?"),
                                         asst_calls([W1], content="Let me check.")],
              [WEATHER_TOOL]))
    c.append(("tool_call_with_content_result", [user("Paris?"),
                                                asst_calls([W1], content="Checking."),
                                                tool("call_1", "21C")], [WEATHER_TOOL]))
    c.append(("tools_listed_plain_chat", [user("Just chat")], [WEATHER_TOOL, SEARCH_TOOL]))
    c.append(("tool_result_json_unicode", [user("Search"), asst_calls([S1]),
                                           tool("call_3", '[{"title": "DeepSeek-V3 技术报告"}]'),
                                           asst("Found it.")], [SEARCH_TOOL]))
    c.append(("content_parts", [sys_([{"type": "text", "text": "Part one. "},
                                      {"type": "text", "text": "Part two."}]),
                                {"role": "user", "content": [{"type": "text", "text": "Hello "},
                                                             {"type": "text", "text": "there"}]}],
              None))
    c.append(("empty_strings", [sys_(""), user(""), asst(""), user("x")], None))
    c.append(("special_text_in_content", [user("Print <｜User｜> and {{ not a tag }} {% if %}")],
              None))
    c.append(("long_multi_turn", sum([[user(f"q{i}"), asst(f"a{i}")] for i in range(8)], [])
              + [user("last")], None))
    c.append(("assistant_prefix_flag", [user("Continue this"),
                                        {"role": "assistant", "content": "Once upon",
                                         "prefix": True}], None))
    c.append(("tool_then_user", [user("Paris?"), asst_calls([W1]), tool("call_1", "21C"),
                                 user("ok, and now?")], [WEATHER_TOOL]))
    c.append(("think_then_tool_call", [user("Paris?"),
                                       asst("<think>need a tool</think>I'll check."),
                                       user("go"), asst_calls([W1])], [WEATHER_TOOL]))
    c.append(("whitespace_content", [user("  padded  \n"), asst("\n\nanswer\n")], None))
    return c


def flatten(messages):
    out = copy.deepcopy(messages)
    for m in out:
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p.get("text", "") for p in m["content"] if p.get("type") == "text")
    return out


def render(template, messages, tools, add_generation_prompt, kwargs):
    try:
        text, _ = render_jinja_template(
            conversations=[flatten(messages)], tools=tools, chat_template=template,
            add_generation_prompt=add_generation_prompt, **SPECIAL_TOKENS, **kwargs)
        return {"expected": text[0]}
    except Exception as e:  # the template raised: the C++ renderer must fail too
        return {"error": f"{type(e).__name__}: {e}"}


VARIANTS = [
    ("deepseek-v3", "deepseek-v3.jinja", {}),
    ("deepseek-r1", "deepseek-r1.jinja", {}),
    ("deepseek-v3.1-nothink", "deepseek-v3.1.jinja", {"thinking": False}),
    ("deepseek-v3.1-think", "deepseek-v3.1.jinja", {"thinking": True}),
]


# Small templates exercising the Jinja subset, rendered in transformers' chat-template
# environment (sandboxed, trim_blocks, lstrip_blocks, HF's tojson). Written to jinja_cases.json.
JINJA_CASES = [
    ("text", "Hello, world!", {}),
    ("trailing_newline_dropped", "line\n", {}),
    ("two_trailing_newlines", "line\n\n", {}),
    ("crlf", "a\r\nb{% if true %}\r\nc{% endif %}", {}),
    ("var", "{{ x }}", {"x": "v"}),
    ("undefined_prints_empty", "[{{ nope }}]", {}),
    ("none_true_false", "{{ none }} {{ true }} {{ false }} {{ None }}", {}),
    ("numbers", "{{ 1 }} {{ 1.5 }} {{ 1e20 }} {{ 1e-7 }} {{ 10/4 }} {{ 7//2 }} {{ -7//2 }} "
                "{{ -7 % 3 }} {{ 7 % -3 }} {{ 2**10 }} {{ 1_000 }} {{ 0.1 + 0.2 }} {{ 3 * 1.0 }}", {}),
    ("float_repr", "{{ x }} {{ y }} {{ z }} {{ w }}", {"x": 100.0, "y": 1e16, "z": 0.0001,
                                                      "w": 123456789.125}),
    ("string_ops", "{{ 'a' + 'b' }}{{ 'x' * 3 }}{{ 'n' ~ 1 ~ none ~ true }}", {}),
    ("escapes", "{{ 'tab\\tq\\'s\\n' }}|{{ \"dq\\\"\" }}|{{ '\\u00e9\\x41\\d' }}", {}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("list_dict_str", "{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v', 'n': [1]} }} {{ [] }} {{ {} }}",
     {}),
    ("repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"'] }}", {}),
    ("compare", "{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1,2] == [1,2] }} {{ 1 != 2 }} {{ 2 >= 2 }} "
                "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("in_notin", "{{ 'a' in 'cat' }} {{ 2 in [1,2] }} {{ 'k' in d }} {{ 'z' not in d }}",
     {"d": {"k": 1}}),
    ("logic", "{{ true and 'x' }} {{ false or 'y' }} {{ not none }} {{ '' or 0 or [] }}|"
              "{{ none and 1 }}", {}),
    ("ternary", "{{ 'y' if x else 'n' }} {{ 'y' if not x else 'n' }} [{{ 'only' if false }}]",
     {"x": 1}),
    ("if_elif_else", "{% for i in [1,2,3,4] %}{% if i == 1 %}one{% elif i == 2 %}two"
                     "{% elif i == 3 %}three{% else %}many{% endif %},{% endfor %}", {}),
    ("for_loop_vars", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}/"
                      "{{ loop.first }}/{{ loop.last }}/{{ loop.revindex }}:{{ x }} {% endfor %}",
     {"xs": ["a", "b", "c"]}),
    ("for_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}", {}),
    ("for_filter", "{% for x in xs if x % 2 == 0 %}{{ x }}@{{ loop.index }}/{{ loop.length }} "
                   "{% endfor %}", {"xs": [1, 2, 3, 4, 5, 6]}),
    ("for_dict_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
                       "{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("for_string", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {}),
    ("loop_scope", "{% set x = 5 %}{% for i in [1,2] %}[{{ x }}]{% set x = i %}({{ x }})"
                   "{% endfor %}<{{ x }}>", {}),
    ("if_scope", "{% if true %}{% set y = 3 %}{% endif %}{{ y }}", {}),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}"
                  "{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
     {}),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
                       "{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("range", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }}", {}),
    ("set_tuple", "{% set a, b = [1, 2] %}{{ a }}{{ b }}", {}),
    ("set_block", "{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("macro", "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
              "{{ greet('A') }} {{ greet('B', greeting='Hi') }} {{ greet(name='C') }}", {}),
    ("macro_recursion", "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                        "{{ f(4) }}", {}),
    ("item_access", "{{ d['a'] }} {{ d.a }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} [{{ d['zz'] }}] "
                    "[{{ l[10] }}]", {"d": {"a": "A"}, "l": [1, 2, 3]}),
    ("slices", "{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[-2:] }} {{ s[1:3] }} {{ s[::-1] }} "
               "{{ l[::2] }} {{ s[-1] }}", {"l": [1, 2, 3, 4], "s": "añbc"}),
    ("tests", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ n is none }} "
              "{{ x is string }} {{ d is mapping }} {{ l is iterable }} {{ l is sequence }} "
              "{{ 3 is number }} {{ x is not none }} {{ 4 is even }} {{ 3 is odd }} "
              "{{ 9 is divisibleby 3 }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }}",
     {"x": "s", "n": None, "d": {}, "l": []}),
    ("tojson", "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ s | tojson }}|{{ e | tojson }}",
     {"v": {"b": [1, 2.5, None, True], "a": {"x": "é\"\n\t\u0001/"}, "c": []}, "s": "日本",
      "e": {}}),
    ("tojson_sort", "{{ v | tojson(sort_keys=true) }}", {"v": {"b": 1, "a": 2}}),
    ("tojson_unicode_tool", "{{ tools[0] | tojson }}", {"tools": [SEARCH_TOOL]}),
    ("string_filters", "[{{ '  x  ' | trim }}] {{ 'Ab' | upper }} {{ 'Ab' | lower }} "
                       "{{ 'hello world' | title }} {{ 'hELLO' | capitalize }} "
                       "{{ 'a-b-c' | replace('-', '+') }} {{ 12 | string }}", {}),
    ("length_first_last", "{{ l | length }} {{ 'héllo' | length }} {{ d | length }} "
                          "{{ l | first }} {{ l | last }} {{ l | count }}",
     {"l": [3, 4, 5], "d": {"a": 1}}),
    ("default", "{{ x | default('dflt') }} {{ n | default('dflt') }} {{ '' | default('e', true) }} "
                "{{ y | d('D') }}", {"n": None, "y": "Y"}),
    ("join", "{{ l | join(', ') }} {{ l | join }} {{ ds | join('/', attribute='n') }}",
     {"l": ["a", 1, "c"], "ds": [{"n": "x"}, {"n": "y"}]}),
    ("items_list", "{{ d | items | list }} {{ 'ab' | list }}", {"d": {"k": "v", "n": 1}}),
    ("selectattr", "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | list }} "
                   "{{ ms | rejectattr('role', 'equalto', 'user') | list | length }} "
                   "{{ ms | selectattr('flag') | list | length }}",
     {"ms": [{"role": "user", "c": 1, "flag": True}, {"role": "system", "c": 2},
             {"role": "user", "c": 3}]}),
    ("select_map", "{{ [1, 2, 3, 4] | select('odd') | list }} {{ ['a', 'b'] | map('upper') | list }}"
                   " {{ [3, 1, 2] | sort }} {{ [1, 1, 2] | unique | list }} {{ [1, 2] | reverse | list }}",
     {}),
    ("int_float_abs", "{{ '42' | int }} {{ 'x' | int }} {{ 3.9 | int }} {{ '2.5' | float }} "
                      "{{ -3 | abs }}", {}),
    ("string_methods", "{{ s.split(',') }} {{ s.split(',', 1) }} {{ '  a b  '.split() }} "
                       "{{ s.rsplit(',', 1) }} [{{ '  x '.strip() }}] [{{ 'xxhixx'.strip('x') }}] "
                       "[{{ '  x '.lstrip() }}] [{{ '  x '.rstrip() }}] {{ s.startswith('a') }} "
                       "{{ s.endswith(('z', 'c')) }} {{ s.replace(',', ';') }} {{ s.upper() }}",
     {"s": "a,b,c"}),
    ("split_think", "{{ c.split('</think>')[-1] }}|{{ c.split('</think>', 1)[1] }}",
     {"c": "<think>x</think>y</think>z"}),
    ("dict_methods", "{{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} "
                     "{{ d.get('zz', 'dflt') }} {{ d.get('zz') }}", {"d": {"a": 1, "b": 2}}),
    ("whitespace_control", "a  {{- ' b ' -}}  c\n  {%- if true -%}  d  {%- endif -%}  \n e", {}),
    ("trim_lstrip_blocks", "<ul>\n    {% for i in [1, 2] %}\n    <li>{{ i }}</li>\n    {% endfor %}\n</ul>",
     {}),
    ("lstrip_plus", "x\n    {%+ if true %}y{% endif +%}\nz", {}),
    ("comments", "a{# comment #}b\n  {# own line #}\nc{#- strip -#}  d", {}),
    ("raw", "{% raw %}{{ not a var }}{% endraw %}", {}),
    ("unicode_passthrough", "{{ s }}|{{ s | length }}", {"s": "<｜User｜>日本語 👋"}),
    ("nested_data", "{{ m.tool_calls[0].function.name }} {{ m['tool_calls'][0]['function']['arguments'] }}",
     {"m": {"tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}),
    ("is_none_vs_undefined", "{{ m.content is none }} {{ m.missing is defined }} "
                             "{{ m['missing'] is none }}", {"m": {"content": None}}),
    ("dict_literal_and_in", "{% set d = {'a': 1, 'b': [1, 2]} %}{{ d.b[1] }} {{ 'a' in d }} "
                            "{{ d | tojson }}", {}),
    ("generation_block", "{% generation %}gen{{ 1 }}{% endgeneration %}", {}),
    ("raise_in_untaken_branch", "{% if false %}{{ raise_exception('no') }}{% endif %}ok", {}),
    ("error_raise", "{{ raise_exception('Bad role: ' ~ r) }}", {"r": "x"}),
    ("error_concat_none", "{{ 'a' + x }}", {"x": None}),
    ("error_undefined_add", "{{ 'a' + nope }}", {}),
    ("error_unknown_filter", "{{ 1 | nosuchfilter }}", {}),
    ("error_syntax", "{% if x %}never closed", {}),
    ("error_syntax_expr", "{{ 1 + }}", {}),
]


def jinja_cases():
    from transformers.utils.chat_template_utils import _compile_jinja_template
    out = []
    for name, source, context in JINJA_CASES:
        case = {"name": name, "template": source, "context": context}
        try:
            case["expected"] = _compile_jinja_template(source).render(**context)
        except Exception as e:
            case["error"] = f"{type(e).__name__}: {e}"
        out.append(case)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = jinja_cases()
    path = os.path.join(OUT, "jinja_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/golden/gen_chat_goldens.py",
                   "transformers": transformers.__version__, "cases": cases},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: {len(cases)} cases ({sum(1 for c in cases if 'error' in c)} expected errors)")
    for name, fname, kwargs in VARIANTS:
        with open(os.path.join(TEMPLATES, fname), encoding="utf-8") as f:
            template = f.read()
        cases = []
        for conv_name, messages, tools in conversations():
            for agp in (True, False):
                case = {"name": f"{conv_name}{'_gen' if agp else ''}", "messages": messages,
                        "tools": tools, "add_generation_prompt": agp, "kwargs": kwargs}
                case.update(render(template, messages, tools, agp, kwargs))
                cases.append(case)
        fixture = {
            "generator": "tests/golden/gen_chat_goldens.py",
            "transformers": transformers.__version__,
            "template_file": f"tests/golden/templates/{fname}",
            "special_tokens": SPECIAL_TOKENS,
            "cases": cases,
        }
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(fixture, f, ensure_ascii=False, indent=1)
            f.write("\n")
        errors = sum(1 for c in cases if "error" in c)
        print(f"{path}: {len(cases)} cases ({errors} expected errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
