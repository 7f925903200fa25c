// YAML -> JSON, built from the parser's events rather than from a yaml-cpp node tree, so
// that what a document may cost is bounded and checked while it is read:
// - aliases are copied, so an "alias bomb" (a few lines whose aliases expand to billions of
//   nodes) is refused once its aliases have expanded to more nodes than a budget allows,
//   as sigs.k8s.io/yaml (go-yaml) does;
// - a key that appears twice in one mapping is an error naming the key and both lines, as
//   kubectl's strict decoding has it (a silent "last one wins" hides typos);
// - nesting is limited.
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "operator/api/decode.h"
#include "operator/api/decode_internal.h"

namespace skiff::api {

namespace {

bool IsDigits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// YAML 1.2 core schema integers: [-+]?(0|[1-9][0-9]*), 0x..., 0o...
std::optional<nlohmann::json> ParseYamlInt(std::string_view s) {
  std::string_view body = s;
  if (!body.empty() && (body[0] == '-' || body[0] == '+')) {
    body.remove_prefix(1);
  }
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    base = s[1] == 'x' ? 16 : 8;
    body = s.substr(2);
    bool ok = !body.empty();
    for (char c : body) {
      ok = ok && (base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) != 0
                             : (c >= '0' && c <= '7'));
    }
    if (!ok) {
      return std::nullopt;
    }
  } else if (!IsDigits(body) || (body.size() > 1 && body[0] == '0')) {
    return std::nullopt;
  }
  try {
    return nlohmann::json(std::stoll(std::string(base == 10 ? s : body), nullptr, base));
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool IsYamlFloat(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
    ++i;
  }
  size_t int_digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
    ++i;
    ++int_digits;
  }
  size_t frac_digits = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
      ++frac_digits;
    }
  }
  if (int_digits == 0 && frac_digits == 0) {
    return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
      ++i;
    }
    if (!IsDigits(s.substr(i))) {
      return false;
    }
    i = s.size();
  }
  return i == s.size();
}

// A scalar as JSON, with the YAML 1.2 core schema for plain scalars (tag "?").
nlohmann::json ScalarToJson(const std::string& tag, const std::string& s) {
  if (tag != "?") {  // quoted or explicitly tagged: a string
    return s;
  }
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") {
    return nullptr;
  }
  if (s == "true" || s == "True" || s == "TRUE") {
    return true;
  }
  if (s == "false" || s == "False" || s == "FALSE") {
    return false;
  }
  char c = s[0];
  if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+' || c == '.')) {
    return s;
  }
  if (auto i = ParseYamlInt(s)) {
    return *i;
  }
  if (IsYamlFloat(s)) {
    try {
      return std::stod(s);
    } catch (const std::out_of_range&) {
      return s;  // keep the text; the field reader reports the type
    }
  }
  return s;
}

// Printable form of a key for messages: control and non-ASCII bytes escaped.
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 100)) {
    if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > 100) {
    out += "...";
  }
  return out;
}

class JsonBuilder : public YAML::EventHandler {
 public:
  explicit JsonBuilder(int first_line) : first_line_(first_line) {}

  nlohmann::json Take() { return std::move(root_); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Count(mark, 1);
    Finish(nullptr, mark, anchor, 1, std::nullopt);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) {
      Fail(mark, "alias to an anchor that is not defined before it (or that contains it)");
    }
    const auto& [value, nodes, key] = it->second;
    alias_nodes_ += nodes;
    // Aliases may at most add a budget's worth of nodes to what the text itself holds.
    if (alias_nodes_ > kAliasBudget + direct_nodes_) {
      Fail(mark, "aliases expand to more than " + std::to_string(kAliasBudget + direct_nodes_) +
                     " nodes; refused (a YAML alias bomb?)");
    }
    Finish(value, mark, YAML::NullAnchor, nodes, key);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    Count(mark, 1);
    Finish(ScalarToJson(tag, value), mark, anchor, 1, value);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(nlohmann::json::array(), mark, anchor);
  }
  void OnSequenceEnd() override { Close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Open(nlohmann::json::object(), mark, anchor);
  }
  void OnMapEnd() override { Close(); }

 private:
  static constexpr size_t kAliasBudget = 100000;
  static constexpr size_t kMaxDepth = 1000;

  struct Frame {
    nlohmann::json value;  // an object or an array
    YAML::Mark mark;
    YAML::anchor_t anchor = YAML::NullAnchor;
    size_t nodes_before = 0;  // total nodes when the collection started
    bool have_key = false;    // maps: a key was read, its value comes next
    std::string key;
    std::unordered_map<std::string, int> key_lines;  // maps: key -> 1-based line
  };

  [[noreturn]] void Fail(const YAML::Mark& mark, const std::string& text) const {
    throw std::runtime_error("line " + std::to_string(first_line_ + mark.line + 1) + ", column " +
                             std::to_string(mark.column + 1) + ": " + text);
  }

  void Count(const YAML::Mark&, size_t n) { direct_nodes_ += n; }

  void Open(nlohmann::json value, const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (stack_.size() >= kMaxDepth) {
      Fail(mark, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    Count(mark, 1);
    Frame f;
    f.value = std::move(value);
    f.mark = mark;
    f.anchor = anchor;
    f.nodes_before = direct_nodes_ + alias_nodes_ - 1;
    stack_.push_back(std::move(f));
  }

  void Close() {
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    size_t nodes = direct_nodes_ + alias_nodes_ - f.nodes_before;
    Finish(std::move(f.value), f.mark, f.anchor, nodes, std::nullopt);
  }

  // A complete value: remembered under its anchor, then added to the collection it is in
  // (as a key or as a value) or made the document.
  void Finish(nlohmann::json value, const YAML::Mark& mark, YAML::anchor_t anchor, size_t nodes,
              const std::optional<std::string>& scalar_text) {
    if (anchor != YAML::NullAnchor) {
      anchors_[anchor] = Anchored{value, nodes, scalar_text};
    }
    if (stack_.empty()) {
      root_ = std::move(value);
      return;
    }
    Frame& top = stack_.back();
    if (top.value.is_array()) {
      top.value.push_back(std::move(value));
      return;
    }
    if (!top.have_key) {
      if (!scalar_text) {
        Fail(mark, "map keys must be scalars");
      }
      int line = first_line_ + mark.line + 1;
      auto [it, inserted] = top.key_lines.emplace(*scalar_text, line);
      if (!inserted) {
        Fail(mark, "duplicate key \"" + Printable(*scalar_text) +
                       "\" in a mapping (first at line " + std::to_string(it->second) + ")");
      }
      top.key = *scalar_text;
      top.have_key = true;
      return;
    }
    top.value[top.key] = std::move(value);
    top.have_key = false;
  }

  struct Anchored {
    nlohmann::json value;
    size_t nodes = 0;
    std::optional<std::string> scalar_text;  // scalars: the text (usable as a key)
  };

  int first_line_;
  nlohmann::json root_;
  std::vector<Frame> stack_;
  std::unordered_map<YAML::anchor_t, Anchored> anchors_;
  size_t direct_nodes_ = 0;  // nodes written in the text
  size_t alias_nodes_ = 0;   // nodes added by aliases
};

}  // namespace

namespace {

// Can `s` be written as a plain scalar and read back as this string? Conservative: only
// simple words, and only those the core schema reads as strings.
bool PlainIsSafe(const std::string& s) {
  if (s.empty() || s.size() > 200) {
    return false;
  }
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool word = std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' ||
                c == '/' || (i > 0 && (c == '-' || c == ':' || c == '=' || c == '@' || c == '+'));
    if (!word || (c == ':' && (i + 1 == s.size()))) {
      return false;
    }
  }
  nlohmann::json back = ScalarToJson("?", s);
  return back.is_string() && back.get<std::string>() == s;
}

void Emit(YAML::Emitter& out, const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object:
      if (j.empty()) {
        out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        return;
      }
      out << YAML::BeginMap;
      for (const auto& [k, v] : j.items()) {
        out << YAML::Key;
        if (PlainIsSafe(k)) {
          out << k;
        } else {
          out << YAML::DoubleQuoted << k;
        }
        out << YAML::Value;
        Emit(out, v);
      }
      out << YAML::EndMap;
      return;
    case nlohmann::json::value_t::array:
      if (j.empty()) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      out << YAML::BeginSeq;
      for (const auto& v : j) {
        Emit(out, v);
      }
      out << YAML::EndSeq;
      return;
    case nlohmann::json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      if (PlainIsSafe(s)) {
        out << s;
      } else {
        out << YAML::DoubleQuoted << s;
      }
      return;
    }
    case nlohmann::json::value_t::boolean:
      out << YAML::TrueFalseBool << j.get<bool>();
      return;
    case nlohmann::json::value_t::number_integer:
      out << j.get<int64_t>();
      return;
    case nlohmann::json::value_t::number_unsigned:
      out << j.get<uint64_t>();
      return;
    case nlohmann::json::value_t::number_float:
      out << j.dump();  // JSON's shortest round-trip form is a YAML float too
      return;
    default:
      out << YAML::Null;
      return;
  }
}

}  // namespace

std::string JsonToYaml(const nlohmann::json& j) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  out.SetMapFormat(YAML::Block);
  Emit(out, j);
  return std::string(out.c_str()) + "\n";
}

nlohmann::json YamlToJsonAt(std::string_view text, int first_line) {
  std::istringstream in{std::string(text)};
  JsonBuilder builder(first_line);
  try {
    YAML::Parser parser(in);
    parser.HandleNextDocument(builder);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error("line " + std::to_string(first_line + e.mark.line + 1) + ", column " +
                             std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  return builder.Take();
}

}  // namespace skiff::api
