// Incremental SSE parsing and the meaning of one OpenAI stream event, for r2serve bench.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/bench/bench.h"

namespace r2::server::bench {

void SseParser::Feed(std::string_view bytes, std::vector<std::string>* events) {
  for (char c : bytes) {
    if (c == '\n' && last_was_cr_) {  // the \n of a \r\n: the line already ended at \r
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = c == '\r';
    if (c == '\r' || c == '\n') {
      Line(partial_, events);
      partial_.clear();
    } else {
      partial_.push_back(c);
    }
  }
}

void SseParser::Line(std::string_view line, std::vector<std::string>* events) {
  if (line.empty()) {  // blank line: dispatch
    if (has_data_) events->push_back(std::move(data_));
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment (keep-alive)
  const size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field != "data") return;
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

absl::StatusOr<StreamEvent> ParseStreamEvent(std::string_view data) {
  StreamEvent e;
  if (absl::StartsWith(absl::string_view(data.data(), data.size()), "[DONE]")) {
    e.done = true;
    return e;
  }
  nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream event is not a JSON object: ", std::string(data.substr(0, 200))));
  }
  if (auto it = j.find("error"); it != j.end()) {
    if (it->is_object() && it->contains("message") && (*it)["message"].is_string()) {
      e.error = (*it)["message"].get<std::string>();
    } else {
      e.error = it->dump();
    }
    return e;
  }
  if (auto it = j.find("choices"); it != j.end() && it->is_array() && !it->empty()) {
    const nlohmann::json& choice = (*it)[0];
    e.has_choice = true;
    if (choice.is_object()) {
      auto take = [&](const nlohmann::json& obj, const char* key) {
        if (auto f = obj.find(key); f != obj.end() && f->is_string()) {
          e.text += f->get<std::string>();
        }
      };
      take(choice, "text");
      if (auto d = choice.find("delta"); d != choice.end() && d->is_object()) {
        take(*d, "reasoning_content");
        if (!d->contains("reasoning_content")) take(*d, "reasoning");
        take(*d, "content");
      }
    }
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (auto p = u->find("prompt_tokens"); p != u->end() && p->is_number_integer()) {
      e.prompt_tokens = p->get<int64_t>();
    }
    if (auto c = u->find("completion_tokens"); c != u->end() && c->is_number_integer()) {
      e.completion_tokens = c->get<int64_t>();
    }
  }
  return e;
}

}  // namespace r2::server::bench
