#pragma once
// Field-by-field reading of a JSON object with a field path, collecting type errors and
// unknown-field warnings into a Message list instead of throwing.
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "operator/api/types.h"

namespace skiff::api {

// Collects problems. Control characters that came from the input (a value quoted in a
// message, a key in a path) are written as escapes (\r, \n, \0, \xNN), so that a message
// is always one line in a log, a status or a terminal.
class Messages {
 public:
  explicit Messages(std::vector<Message>* out) : out_(out) {}
  void Error(const std::string& path, std::string text) {
    out_->push_back({Message::Level::kError, Escape(path), Escape(text)});
  }
  void Warn(const std::string& path, std::string text) {
    out_->push_back({Message::Level::kWarning, Escape(path), Escape(text)});
  }
  static std::string Escape(std::string s);

 private:
  std::vector<Message>* out_;
};

std::string JsonTypeName(const nlohmann::json& j);
std::string JoinPath(const std::string& base, std::string_view field);
std::string IndexPath(const std::string& base, size_t index);

// Reads the fields of one JSON object. Every key not asked for is reported as an unknown
// field (a warning) when the reader is destroyed.
class Reader {
 public:
  Reader(const nlohmann::json& j, std::string path, Messages& msgs);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  [[nodiscard]] bool ok() const { return obj_ != nullptr; }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string Path(std::string_view field) const { return JoinPath(path_, field); }
  Messages& msgs() { return msgs_; }

  // The raw value, or nullptr when absent or null. Marks the field as known.
  const nlohmann::json* Get(std::string_view field);
  // Marks a field as known without reading it (fields skiff accepts but ignores).
  void Ignore(std::string_view field) { known_.insert(std::string(field)); }
  void IgnoreUnknown() { ignore_unknown_ = true; }

  std::string String(std::string_view field);
  bool Bool(std::string_view field);
  std::optional<int64_t> Int(std::string_view field);
  std::optional<double> Double(std::string_view field);
  std::optional<Duration> DurationField(std::string_view field);
  std::vector<std::string> StringList(std::string_view field);
  Labels StringMap(std::string_view field);

 private:
  const nlohmann::json* obj_ = nullptr;
  std::string path_;
  Messages& msgs_;
  std::set<std::string, std::less<>> known_;
  bool ignore_unknown_ = false;
};

// Iterates a JSON array field, giving each element's path; reports a non-array.
template <typename Fn>
void ForEachItem(Reader& r, std::string_view field, Fn&& fn) {
  const nlohmann::json* arr = r.Get(field);
  if (arr == nullptr) {
    return;
  }
  std::string path = r.Path(field);
  if (!arr->is_array()) {
    r.msgs().Error(path, "expected a list, got " + JsonTypeName(*arr));
    return;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    fn((*arr)[i], IndexPath(path, i));
  }
}

}  // namespace skiff::api
