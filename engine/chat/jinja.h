#pragma once
// A small Jinja interpreter for chat templates (the subset Hugging Face chat templates use),
// rendering the way transformers does: trim_blocks and lstrip_blocks on, a single trailing newline
// of the source dropped, Python semantics for values, and HF's tojson (json.dumps with
// ensure_ascii=False). Templates are user input: every failure is an absl::Status, and rendering
// is bounded in output size, work and call depth.
//
//   absl::StatusOr<Template> t = Template::Parse(source);
//   absl::StatusOr<std::string> text = t->Render({{"messages", messages}, {"bos_token", "<s>"}});

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace r2::chat::jinja {

struct Stmt;

struct RenderLimits {
  size_t max_output_bytes = size_t{8} << 20;  // also caps any single string or list built
  int64_t max_steps = 2'000'000;              // statements, expression nodes, copied kilobytes
  int max_call_depth = 32;                    // macro recursion
};

class Template {
 public:
  // Syntax errors are InvalidArgument with the line number in the message.
  static absl::StatusOr<Template> Parse(std::string_view source);

  // Renders with the members of `context` (a JSON object, or null for none) as global
  // variables. Errors:
  // InvalidArgument for template errors (type errors, unknown filters, raise_exception(msg),
  // whose message is passed through), ResourceExhausted when a limit is hit.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context,
                                     const RenderLimits& limits = {}) const;

 private:
  struct Body;
  explicit Template(std::shared_ptr<const Body> body) : body_(std::move(body)) {}
  std::shared_ptr<const Body> body_;
};

}  // namespace r2::chat::jinja
