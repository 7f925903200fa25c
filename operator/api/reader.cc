#include "operator/api/reader.h"

#include <cmath>
#include <cstdio>

#include "common/duration.h"

namespace skiff::api {

std::string JsonTypeName(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "a map";
    case nlohmann::json::value_t::array:
      return "a list";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      return "a number";
    default:
      return "an unsupported value";
  }
}

std::string Messages::Escape(std::string s) {
  bool clean = true;
  for (unsigned char c : s) {
    clean = clean && c >= 0x20 && c != 0x7f;
  }
  if (clean) {
    return s;
  }
  std::string out;
  out.reserve(s.size() + 8);
  for (unsigned char c : s) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == 0) {
      out += "\\0";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string JoinPath(const std::string& base, std::string_view field) {
  if (base.empty()) {
    return std::string(field);
  }
  return base + "." + std::string(field);
}

std::string IndexPath(const std::string& base, size_t index) {
  return base + "[" + std::to_string(index) + "]";
}

Reader::Reader(const nlohmann::json& j, std::string path, Messages& msgs)
    : path_(std::move(path)), msgs_(msgs) {
  if (j.is_object()) {
    obj_ = &j;
  } else if (!j.is_null()) {
    msgs_.Error(path_.empty() ? "(document)" : path_, "expected a map, got " + JsonTypeName(j));
  }
}

Reader::~Reader() {
  if (obj_ == nullptr || ignore_unknown_) {
    return;
  }
  for (auto it = obj_->begin(); it != obj_->end(); ++it) {
    if (known_.find(it.key()) == known_.end()) {
      msgs_.Warn(Path(it.key()), "unknown field, ignored");
    }
  }
}

const nlohmann::json* Reader::Get(std::string_view field) {
  known_.insert(std::string(field));
  if (obj_ == nullptr) {
    return nullptr;
  }
  auto it = obj_->find(field);
  if (it == obj_->end() || it->is_null()) {
    return nullptr;
  }
  return &*it;
}

std::string Reader::String(std::string_view field) {
  const auto* v = Get(field);
  if (v == nullptr) {
    return {};
  }
  if (!v->is_string()) {
    msgs_.Error(Path(field), "expected a string, got " + JsonTypeName(*v));
    return {};
  }
  return v->get<std::string>();
}

bool Reader::Bool(std::string_view field) {
  const auto* v = Get(field);
  if (v == nullptr) {
    return false;
  }
  if (!v->is_boolean()) {
    msgs_.Error(Path(field), "expected true or false, got " + JsonTypeName(*v));
    return false;
  }
  return v->get<bool>();
}

std::optional<int64_t> Reader::Int(std::string_view field) {
  const auto* v = Get(field);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (v->is_number_integer()) {
    return v->get<int64_t>();
  }
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (std::floor(d) == d && std::abs(d) < 9e15) {
      return static_cast<int64_t>(d);
    }
  }
  msgs_.Error(Path(field), "expected an integer, got " + JsonTypeName(*v));
  return std::nullopt;
}

std::optional<double> Reader::Double(std::string_view field) {
  const auto* v = Get(field);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_number()) {
    msgs_.Error(Path(field), "expected a number, got " + JsonTypeName(*v));
    return std::nullopt;
  }
  return v->get<double>();
}

std::optional<Duration> Reader::DurationField(std::string_view field) {
  const auto* v = Get(field);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_string()) {
    msgs_.Error(Path(field), "expected a duration string such as \"2s\", got " + JsonTypeName(*v));
    return std::nullopt;
  }
  const auto& text = v->get_ref<const std::string&>();
  auto d = ParseDuration(text);
  if (!d) {
    msgs_.Error(Path(field), "invalid duration \"" + text + "\"");
    return std::nullopt;
  }
  if (d->count() < 0) {
    msgs_.Error(Path(field), "duration must not be negative: \"" + text + "\"");
    return std::nullopt;
  }
  if (d->count() % 1000000 != 0) {
    msgs_.Error(Path(field), "duration must be a whole number of milliseconds: \"" + text + "\"");
    return std::nullopt;
  }
  return *d;
}

std::vector<std::string> Reader::StringList(std::string_view field) {
  std::vector<std::string> out;
  const auto* v = Get(field);
  if (v == nullptr) {
    return out;
  }
  if (!v->is_array()) {
    msgs_.Error(Path(field), "expected a list of strings, got " + JsonTypeName(*v));
    return out;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const auto& item = (*v)[i];
    if (!item.is_string()) {
      msgs_.Error(IndexPath(Path(field), i), "expected a string, got " + JsonTypeName(item));
      continue;
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

Labels Reader::StringMap(std::string_view field) {
  Labels out;
  const auto* v = Get(field);
  if (v == nullptr) {
    return out;
  }
  if (!v->is_object()) {
    msgs_.Error(Path(field), "expected a map of strings, got " + JsonTypeName(*v));
    return out;
  }
  out.reserve(v->size());
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_string()) {
      msgs_.Error(Path(field) + "." + it.key(),
                  "expected a string, got " + JsonTypeName(it.value()) + " (quote it)");
      continue;
    }
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

}  // namespace skiff::api
