#include "engine/chat/jinja.h"

#include <utility>

#include "absl/status/status.h"
#include "engine/chat/jinja_ast.h"
#include "engine/chat/jinja_eval.h"
#include "engine/chat/jinja_lexer.h"
#include "engine/chat/jinja_parser.h"
#include "engine/chat/jinja_status.h"

namespace r2::chat::jinja {

struct Template::Body {
  StmtList statements;
};

absl::StatusOr<Template> Template::Parse(std::string_view source) {
  LexerOptions options;  // Hugging Face renders chat templates with trim_blocks and lstrip_blocks
  JINJA_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source, options));
  auto body = std::make_shared<Body>();
  JINJA_ASSIGN_OR_RETURN(body->statements, jinja::Parse(tokens));
  return Template(std::move(body));
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context,
                                             const RenderLimits& limits) const {
  if (!context.is_object() && !context.is_null()) {
    return absl::InvalidArgumentError("template context must be a JSON object");
  }
  std::string out;
  Evaluator evaluator(limits, &out);
  if (context.is_object()) {
    for (const auto& [name, value] : context.items()) {
      JINJA_ASSIGN_OR_RETURN(Value v, Value::FromJson(value));
      evaluator.SetGlobal(name, std::move(v));
    }
  }
  JINJA_RETURN_IF_ERROR(evaluator.Run(body_->statements));
  return out;
}

}  // namespace r2::chat::jinja
