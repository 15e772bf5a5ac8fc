// The DeepSeek chat templates written into the tiny models' tokenizer_config.json. They are data:
// the "chat_template" strings of DeepSeek's Hugging Face tokenizer_config.json files, verbatim, as
// copied (with their sources) in tests/golden/templates/README.md:
//   v3   DeepSeek-V3 / V3-0324 (the template of ../shared/models/deepseek-v3-tokenizer)
//   r1   DeepSeek-R1, 2025 update (generation prompt "<｜Assistant｜><think>\n")
//   v31  DeepSeek-V3.1 (the `thinking` template variable)
// tiny_tokenizer_test checks each constant against its file byte for byte.
#include <string_view>

#include "engine/tokenizer/tiny_tokenizer.h"

namespace r2::tokenizer {
namespace {

// v3: tests/golden/templates/deepseek-v3.jinja (see its README for the source).
constexpr char kDeepSeekV3[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif"
    " %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt="
    "'', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{"
    "%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% "
    "set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n"
    "\n"
    "' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_promp"
    "t}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = fal"
    "se -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistan"
    "t' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['t"
    "ool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜to"
    "ol▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '"
    "\n"
    "' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n"
    "' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n"
    "' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['"
    "name'] + '\n"
    "' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n"
    "' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentenc"
    "e｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and messa"
    "ge['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['"
    "content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜A"
    "ssistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜"
    "tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n"
    "<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- end"
    "if %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif"
    " %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

// r1: tests/golden/templates/deepseek-r1.jinja (see its README for the source).
constexpr char kDeepSeekR1[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif"
    " %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt="
    "'', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{"
    "%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% "
    "set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n"
    "' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_pr"
    "ompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool ="
    " false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assi"
    "stant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['"
    "tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜Assistant"
    "｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁se"
    "p｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'"
    "] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message["
    "'content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<"
    "｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']"
    "['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first"
    " = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁s"
    "ep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments"
    "'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁cal"
    "ls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' "
    "and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + mes"
    "sage['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{%"
    " set content = message['content'] %}{% if '</think>' in content %}{% set content = content.s"
    "plit('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence"
    "｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true "
    "-%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜"
    ">' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false "
    "%}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁e"
    "nd｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁en"
    "d｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><thi"
    "nk>\\n'}}{% endif %}";

// v31: tests/golden/templates/deepseek-v3.1.jinja (see its README for the source).
constexpr char kDeepSeekV31[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif"
    " %}{% if not thinking is defined %}{% set thinking = false %}{% endif %}{% set ns = namespac"
    "e(is_first=false, is_tool=false, system_prompt='', is_first_sp=true, is_last_user=false) %}{"
    "%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{%"
    " set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = fals"
    "e %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n"
    "\n"
    "' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_pr"
    "ompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool ="
    " false -%}{%- set ns.is_first = false -%}{%- set ns.is_last_user = true -%}{{'<｜User｜>' "
    "+ message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['tool_ca"
    "lls'] is defined and message['tool_calls'] is not none %}{%- if ns.is_last_user %}{{'<｜Ass"
    "istant｜></think>'}}{%- endif %}{%- set ns.is_last_user = false -%}{%- set ns.is_first = fa"
    "lse %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is"
    "_first %}{%- if message['content'] is none %}{{'<｜tool▁calls▁begin｜><｜tool▁call"
    "▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments"
    "'] + '<｜tool▁call▁end｜>'}}{%- else %}{{message['content'] + '<｜tool▁calls▁begi"
    "n｜><｜tool▁call▁begin｜>' + tool['function']['name'] + '<｜tool▁sep｜>' + tool['"
    "function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = tru"
    "e -%}{%- else %}{{'<｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep"
    "｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor "
    "%}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['rol"
    "e'] == 'assistant' and (message['tool_calls'] is not defined or message['tool_calls'] is non"
    "e) %}{%- if ns.is_last_user %}{{'<｜Assistant｜>'}}{%- if message['prefix'] is defined and"
    " message['prefix'] and thinking %}{{'<think>'}}  {%- else %}{{'</think>'}}{%- endif %}{%- en"
    "dif %}{%- set ns.is_last_user = false -%}{%- if ns.is_tool %}{{message['content'] + '<｜end"
    "▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{%- set content = message['c"
    "ontent'] -%}{%- if '</think>' in content %}{%- set content = content.split('</think>', 1)[1]"
    " -%}{%- endif %}{{content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if me"
    "ssage['role'] == 'tool' %}{%- set ns.is_last_user = false -%}{%- set ns.is_tool = true -%}{{"
    "'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- en"
    "dif %}{%- endfor -%}{%- if add_generation_prompt and ns.is_last_user and not ns.is_tool %}{{"
    "'<｜Assistant｜>'}}{%- if not thinking %}{{'</think>'}}{%- else %}{{'<think>'}}{%- endif %"
    "}{% endif %}";

}  // namespace

std::string_view TinyChatTemplateSource(TinyChatTemplate chat_template) {
  switch (chat_template) {
    case TinyChatTemplate::kR1:
      return kDeepSeekR1;
    case TinyChatTemplate::kV31:
      return kDeepSeekV31;
    case TinyChatTemplate::kV3:
      break;
  }
  return kDeepSeekV3;
}

}  // namespace r2::tokenizer
