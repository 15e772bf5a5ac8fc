// Command-line options, prompts and request bodies of r2serve bench. The flags are parsed here
// rather than as absl flags: their names (--model, --seed, --api-key) are taken by other
// subcommands of the binary, and --goodput takes several words as vllm bench serve's does.
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/bench/bench.h"

namespace r2::server::bench {

std::string BenchUsage() {
  return R"(usage: r2serve bench --base-url URL [flags]

Load generator for OpenAI-compatible servers; metrics and result keys of `vllm bench serve`.
  --base-url URL            server, e.g. http://127.0.0.1:8000 (required)
  --endpoint PATH           /v1/completions (default) or /v1/chat/completions
  --model NAME              model id to send; default: the first id of GET /v1/models
  --num-prompts N           measured requests (default 1000)
  --max-concurrency C       requests in flight at most (default: no cap)
  --request-rate R          requests/s (default inf: all at once)
  --burstiness B            gamma shape of the gaps; 1 = Poisson (default 1)
  --random-input-len I      prompt length (default 1024)
  --random-output-len O     max_tokens, with ignore_eos (default 128)
  --prompt-kind K           token_ids (default; /v1/completions only) or words
  --token-id-range LO:HI    random token ids in [LO, HI) (default 10:1000)
  --dataset-path FILE       ShareGPT json instead of random prompts
  --seed S                  prompts and arrival times (default 0)
  --warmup N                unmeasured requests first (default 0)
  --result-file PATH        write the JSON result
  --plot PATH.png           write a PNG plot: p50/p90/p99 of TTFT, TPOT, ITL, E2EL and
                            requests and output tokens per second over time
                            (default: beside --result-file, out.json -> out.png)
  --no-plot                 no PNG, not even beside --result-file
  --plot-size WxH           plot size in pixels (default 1280x900)
  --api-key K               sent as Authorization: Bearer K
  --goodput KEY:MS ...      SLOs for goodput; KEY in ttft, tpot, e2el
  --metric-percentiles P,.. percentiles to report (default 90,99)
  --no-ignore-eos           let requests stop at end-of-sequence
  --timeout S               per-request timeout in seconds (default 600)
  --no-progress             no live progress line
)";
}

namespace {

absl::Status Bad(const std::string& flag, const std::string& value, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " '", value, "': ", why));
}

absl::Status ParseInt(const std::string& flag, const std::string& v, int lo, int* out) {
  int x;
  if (!absl::SimpleAtoi(v, &x)) return Bad(flag, v, "not an integer");
  if (x < lo) return Bad(flag, v, absl::StrCat("must be >= ", lo));
  *out = x;
  return absl::OkStatus();
}

absl::Status ParseDouble(const std::string& flag, const std::string& v, double* out) {
  double x;
  if (v == "inf") {
    *out = 0;  // infinite rate
    return absl::OkStatus();
  }
  if (!absl::SimpleAtod(v, &x) || !std::isfinite(x)) return Bad(flag, v, "not a number");
  if (x <= 0) return Bad(flag, v, "must be > 0");
  *out = x;
  return absl::OkStatus();
}

absl::Status ParseGoodput(const std::string& word, GoodputSlos* slos) {
  std::pair<std::string, std::string> kv = absl::StrSplit(word, absl::MaxSplits(':', 1));
  double ms;
  if (!absl::SimpleAtod(kv.second, &ms) || !(ms >= 0) || !std::isfinite(ms)) {
    return Bad("goodput", word, "expected KEY:MS with MS a number >= 0");
  }
  if (kv.first == "ttft") {
    slos->ttft_ms = ms;
  } else if (kv.first == "tpot") {
    slos->tpot_ms = ms;
  } else if (kv.first == "e2el") {
    slos->e2el_ms = ms;
  } else {
    return Bad("goodput", word, "KEY must be ttft, tpot or e2el");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BenchOptions> ParseBenchOptions(int argc, char** argv) {
  BenchOptions o;
  using Setter = std::function<absl::Status(const std::string&)>;
  const std::map<std::string, Setter> setters = {
      {"base_url",
       [&](const std::string& v) {
         if (!absl::StartsWith(v, "http://")) {
           return Bad("base-url", v, "must start with http:// (https is not supported)");
         }
         o.base_url = std::string(absl::StripSuffix(v, "/"));
         return absl::OkStatus();
       }},
      {"endpoint",
       [&](const std::string& v) {
         if (v != "/v1/completions" && v != "/v1/chat/completions") {
           return Bad("endpoint", v, "must be /v1/completions or /v1/chat/completions");
         }
         o.endpoint = v;
         return absl::OkStatus();
       }},
      {"model",
       [&](const std::string& v) {
         o.model = v;
         return absl::OkStatus();
       }},
      {"num_prompts",
       [&](const std::string& v) { return ParseInt("num-prompts", v, 1, &o.num_prompts); }},
      {"max_concurrency",
       [&](const std::string& v) { return ParseInt("max-concurrency", v, 1, &o.max_concurrency); }},
      {"request_rate",
       [&](const std::string& v) { return ParseDouble("request-rate", v, &o.request_rate); }},
      {"burstiness",
       [&](const std::string& v) {
         if (v == "inf") return Bad("burstiness", v, "must be a finite number > 0");
         return ParseDouble("burstiness", v, &o.burstiness);
       }},
      {"random_input_len",
       [&](const std::string& v) {
         return ParseInt("random-input-len", v, 1, &o.random_input_len);
       }},
      {"random_output_len",
       [&](const std::string& v) {
         return ParseInt("random-output-len", v, 1, &o.random_output_len);
       }},
      {"prompt_kind",
       [&](const std::string& v) {
         if (v == "token_ids" || v == "token-ids") {
           o.prompt_kind = PromptKind::kTokenIds;
         } else if (v == "words") {
           o.prompt_kind = PromptKind::kWords;
         } else {
           return Bad("prompt-kind", v, "must be token_ids or words");
         }
         return absl::OkStatus();
       }},
      {"token_id_range",
       [&](const std::string& v) {
         std::pair<std::string, std::string> lh = absl::StrSplit(v, absl::MaxSplits(':', 1));
         int lo, hi;
         if (!absl::SimpleAtoi(lh.first, &lo) || !absl::SimpleAtoi(lh.second, &hi) || lo < 0 ||
             hi <= lo) {
           return Bad("token-id-range", v, "expected LO:HI with 0 <= LO < HI");
         }
         o.token_id_low = lo;
         o.token_id_high = hi;
         return absl::OkStatus();
       }},
      {"dataset_path",
       [&](const std::string& v) {
         o.dataset_path = v;
         return absl::OkStatus();
       }},
      {"seed",
       [&](const std::string& v) {
         if (!absl::SimpleAtoi(v, &o.seed)) return Bad("seed", v, "not a non-negative integer");
         return absl::OkStatus();
       }},
      {"warmup", [&](const std::string& v) { return ParseInt("warmup", v, 0, &o.warmup); }},
      {"num_warmups",
       [&](const std::string& v) { return ParseInt("num-warmups", v, 0, &o.warmup); }},
      {"result_file",
       [&](const std::string& v) {
         o.result_file = v;
         return absl::OkStatus();
       }},
      {"plot",
       [&](const std::string& v) {
         if (v.empty()) return Bad("plot", v, "expected a file name");
         o.plot_file = v;
         return absl::OkStatus();
       }},
      {"plot_size",
       [&](const std::string& v) {
         std::pair<std::string, std::string> wh = absl::StrSplit(v, absl::MaxSplits('x', 1));
         int w, h;
         if (!absl::SimpleAtoi(wh.first, &w) || !absl::SimpleAtoi(wh.second, &h) || w < 480 ||
             h < 360 || w > 8192 || h > 8192) {
           return Bad("plot-size", v, "expected WxH with 480 <= W <= 8192 and 360 <= H <= 8192");
         }
         o.plot_width = w;
         o.plot_height = h;
         return absl::OkStatus();
       }},
      {"api_key",
       [&](const std::string& v) {
         o.api_key = v;
         return absl::OkStatus();
       }},
      {"metric_percentiles",
       [&](const std::string& v) {
         o.percentiles.clear();
         for (absl::string_view piece : absl::StrSplit(v, ',')) {
           double p;
           if (!absl::SimpleAtod(piece, &p) || !(p > 0 && p < 100)) {
             return Bad("metric-percentiles", v, "expected numbers in (0, 100), comma-separated");
           }
           o.percentiles.push_back(p);
         }
         return absl::OkStatus();
       }},
      {"timeout", [&](const std::string& v) { return ParseDouble("timeout", v, &o.timeout_s); }},
  };
  bool plot_enabled = true;  // false once --no-plot is given
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "no_ignore_eos" || name == "no_progress" || name == "no_plot") {
      if (value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      (name == "no_ignore_eos" ? o.ignore_eos
       : name == "no_progress" ? o.progress
                               : plot_enabled) = false;
      continue;
    }
    if (name == "goodput") {
      std::vector<std::string> words;
      if (value) words.push_back(*value);
      while (i + 1 < argc && !absl::StartsWith(argv[i + 1], "--")) words.push_back(argv[++i]);
      if (words.empty()) return Bad("goodput", "", "expected one or more KEY:MS");
      for (const std::string& w : words) {
        if (absl::Status s = ParseGoodput(w, &o.goodput); !s.ok()) return s;
      }
      continue;
    }
    auto it = setters.find(name);
    if (it == setters.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", arg, "'"));
    }
    if (!value) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      value = argv[++i];
    }
    if (absl::Status s = it->second(*value); !s.ok()) return s;
  }
  if (o.base_url.empty()) return absl::InvalidArgumentError("--base-url is required");
  if (!plot_enabled) {
    if (!o.plot_file.empty()) {
      return absl::InvalidArgumentError("--plot and --no-plot contradict each other");
    }
  } else if (o.plot_file.empty() && !o.result_file.empty()) {
    o.plot_file = PlotPathBeside(o.result_file);
  }
  if (o.endpoint == "/v1/chat/completions" && o.prompt_kind == PromptKind::kTokenIds &&
      o.dataset_path.empty()) {
    o.prompt_kind = PromptKind::kWords;  // chat messages are text
  }
  return o;
}

namespace {

// Common English words; a random prompt is a seeded draw of these.
constexpr const char* kWords[] = {
    "time",   "year",     "people", "way",    "day",     "man",    "thing",   "woman",    "life",
    "child",  "world",    "school", "state",  "family",  "group",  "country", "problem",  "hand",
    "part",   "place",    "case",   "week",   "company", "system", "program", "question", "work",
    "number", "night",    "point",  "home",   "water",   "room",   "mother",  "area",     "money",
    "story",  "fact",     "month",  "lot",    "right",   "study",  "book",    "eye",      "job",
    "word",   "business", "issue",  "side",   "kind",    "head",   "house",   "service",  "friend",
    "father", "power",    "hour",   "game",   "line",    "end",    "member",  "law",      "car",
    "city",   "name",     "team",   "minute", "idea"};

}  // namespace

std::vector<Prompt> RandomPrompts(const BenchOptions& o, int num) {
  std::mt19937_64 rng(o.seed);
  std::vector<Prompt> prompts;
  prompts.reserve(num);
  std::uniform_int_distribution<int> id(o.token_id_low, o.token_id_high - 1);
  std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1);
  for (int i = 0; i < num; ++i) {
    Prompt p;
    p.input_len = o.random_input_len;
    p.output_len = o.random_output_len;
    if (o.prompt_kind == PromptKind::kTokenIds) {
      std::vector<int> ids(o.random_input_len);
      for (int& t : ids) t = id(rng);
      p.prompt = ids;
    } else {
      std::string text;
      for (int w = 0; w < o.random_input_len; ++w) {
        if (w) text.push_back(' ');
        text += kWords[word(rng)];
      }
      p.prompt = text;
    }
    prompts.push_back(std::move(p));
  }
  return prompts;
}

absl::StatusOr<std::vector<Prompt>> ShareGptPrompts(const std::string& path, const BenchOptions& o,
                                                    int num) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--dataset-path: cannot open ", path));
  nlohmann::json data = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (data.is_discarded() || !data.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dataset-path ", path, ": not a JSON array (ShareGPT format expected)"));
  }
  std::vector<Prompt> found;
  for (const nlohmann::json& entry : data) {
    if (!entry.is_object()) continue;
    auto conv = entry.find("conversations");
    if (conv == entry.end() || !conv->is_array()) continue;
    for (const nlohmann::json& turn : *conv) {
      if (turn.is_object() && turn.value("from", "") == "human" && turn.contains("value") &&
          turn["value"].is_string() && !turn["value"].get<std::string>().empty()) {
        Prompt p;
        const std::string text = turn["value"].get<std::string>();
        p.prompt = text;
        p.input_len = static_cast<int>(std::count(text.begin(), text.end(), ' ') +
                                       1);  // words until usage says
        p.output_len = o.random_output_len;
        found.push_back(std::move(p));
        break;
      }
    }
  }
  if (found.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dataset-path ", path, ": no conversation with a human turn"));
  }
  std::vector<Prompt> prompts;
  for (int i = 0; i < num; ++i) prompts.push_back(found[i % found.size()]);
  return prompts;
}

nlohmann::json RequestBody(const BenchOptions& o, const Prompt& p) {
  nlohmann::json body;
  body["model"] = o.model;
  if (o.endpoint == "/v1/chat/completions") {
    body["messages"] = nlohmann::json::array(
        {{{"role", "user"},
          {"content", p.prompt.is_string() ? p.prompt.get<std::string>() : p.prompt.dump()}}});
    body["max_completion_tokens"] = p.output_len;
  } else {
    body["prompt"] = p.prompt;
    body["max_tokens"] = p.output_len;
  }
  body["temperature"] = 0.0;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (o.ignore_eos) body["ignore_eos"] = true;
  return body;
}

}  // namespace r2::server::bench
