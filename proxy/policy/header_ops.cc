#include "proxy/policy/header_ops.h"

namespace skiff::policy {

namespace {
char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) {
      return false;
    }
  }
  return true;
}
}  // namespace

const v1::HeaderOperations* RequestOps(const v1::Headers& headers, bool present) {
  return present && headers.has_request() ? &headers.request() : nullptr;
}

const v1::HeaderOperations* ResponseOps(const v1::Headers& headers, bool present) {
  return present && headers.has_response() ? &headers.response() : nullptr;
}

bool Overridden(std::string_view name, const v1::HeaderOperations* a,
                const v1::HeaderOperations* b) {
  for (const auto* ops : {a, b}) {
    if (ops == nullptr) {
      continue;
    }
    for (const auto& n : ops->remove()) {
      if (IEquals(n, name)) {
        return true;
      }
    }
    for (const auto& h : ops->set()) {
      if (IEquals(h.name(), name)) {
        return true;
      }
    }
  }
  return false;
}

void AppendOps(std::string* fields, const v1::HeaderOperations* ops, std::string_view skip) {
  if (ops == nullptr) {
    return;
  }
  for (const auto* list : {&ops->set(), &ops->add()}) {
    for (const auto& h : *list) {
      if (!h.name().empty() && h.name()[0] == ':') {
        continue;  // pseudo-headers (":authority") are applied by the caller
      }
      if (!skip.empty() && IEquals(h.name(), skip)) {
        continue;
      }
      fields->append(h.name());
      fields->append(": ");
      fields->append(h.value());
      fields->append("\r\n");
    }
  }
}

const std::string* SetAuthority(const v1::HeaderOperations* a, const v1::HeaderOperations* b) {
  const std::string* value = nullptr;
  for (const auto* ops : {a, b}) {
    if (ops == nullptr) {
      continue;
    }
    for (const auto& h : ops->set()) {
      if (h.name() == ":authority") {
        value = &h.value();  // the destination's operations come last and win
      }
    }
  }
  return value;
}

}  // namespace skiff::policy
