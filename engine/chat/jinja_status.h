#pragma once
// Early-return helpers for absl::Status / absl::StatusOr inside the Jinja implementation.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define JINJA_STATUS_CONCAT_INNER(a, b) a##b
#define JINJA_STATUS_CONCAT(a, b) JINJA_STATUS_CONCAT_INNER(a, b)

#define JINJA_RETURN_IF_ERROR(expr)                                 \
  do {                                                              \
    if (absl::Status _jinja_status = (expr); !_jinja_status.ok()) { \
      return _jinja_status;                                         \
    }                                                               \
  } while (0)

#define JINJA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = *std::move(tmp)

#define JINJA_ASSIGN_OR_RETURN(lhs, expr) \
  JINJA_ASSIGN_OR_RETURN_IMPL(JINJA_STATUS_CONCAT(_jinja_statusor_, __LINE__), lhs, expr)
