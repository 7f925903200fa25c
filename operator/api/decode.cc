#include "operator/api/decode.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>

#include "common/strings.h"
#include "operator/api/decode_internal.h"
#include "operator/api/reader.h"

namespace skiff::api {

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kGateway:
      return "Gateway";
    case Kind::kVirtualService:
      return "VirtualService";
    case Kind::kDestinationRule:
      return "DestinationRule";
    case Kind::kService:
      return "Service";
    case Kind::kEndpointSlice:
      return "EndpointSlice";
    case Kind::kPod:
      return "Pod";
  }
  return "?";
}

std::string Message::Format() const { return (path.empty() ? "" : path + ": ") + text; }

bool Object::Valid() const {
  for (const auto& m : messages) {
    if (m.level == Message::Level::kError) {
      return false;
    }
  }
  return true;
}

std::string Object::Ref() const {
  return std::string(KindName(kind)) + " " + meta.namespace_ + "/" + meta.name;
}

bool IsSupportedKind(std::string_view api_version, std::string_view kind, Kind* out) {
  if (api_version == "networking.istio.io/v1" || api_version == "networking.istio.io/v1beta1" ||
      api_version == "networking.istio.io/v1alpha3") {
    if (kind == "Gateway") {
      *out = Kind::kGateway;
      return true;
    }
    if (kind == "VirtualService") {
      *out = Kind::kVirtualService;
      return true;
    }
    if (kind == "DestinationRule") {
      *out = Kind::kDestinationRule;
      return true;
    }
    return false;
  }
  if (api_version == "v1" && kind == "Service") {
    *out = Kind::kService;
    return true;
  }
  if (api_version == "v1" && kind == "Pod") {
    *out = Kind::kPod;
    return true;
  }
  if (api_version == "discovery.k8s.io/v1" && kind == "EndpointSlice") {
    *out = Kind::kEndpointSlice;
    return true;
  }
  return false;
}

// ---- YAML -> JSON ------------------------------------------------------------------------

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

nlohmann::json ScalarToJson(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() != "?") {  // quoted or explicitly tagged: a string
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

nlohmann::json NodeToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return ScalarToJson(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : node) {
        arr.push_back(NodeToJson(item));
      }
      return arr;
    }
    case YAML::NodeType::Map: {
      nlohmann::json obj = nlohmann::json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          auto m = kv.first.Mark();
          throw std::runtime_error("line " + std::to_string(m.line + 1) + ", column " +
                                   std::to_string(m.column + 1) + ": map keys must be scalars");
        }
        obj[kv.first.Scalar()] = NodeToJson(kv.second);
      }
      return obj;
    }
  }
  return nullptr;
}

struct RawDocument {
  std::string text;
  int first_line = 0;  // 0-based line of the document's first line in the file
};

// Splits a YAML stream on "---" separator lines, one document at a time and keeping line
// numbers, so that one broken document does not hide the others.
class DocumentSplitter {
 public:
  explicit DocumentSplitter(std::string_view text) : text_(text) {}

  // The next document (reusing `doc`'s buffer); false after the last one.
  bool Next(RawDocument* doc) {
    if (done_) {
      return false;
    }
    doc->text.clear();
    doc->first_line = first_line_;
    for (;;) {
      size_t end = text_.find('\n', pos_);
      if (end == std::string_view::npos) {
        end = text_.size();
      }
      std::string_view line = text_.substr(pos_, end - pos_);
      if (IsSeparator(line)) {
        if (!at_separator_) {  // it starts the next document
          at_separator_ = true;
          first_line_ = line_no_;
          return true;
        }
        // "--- {a: 1}" keeps content after the marker on the document's first line.
        doc->text.append(line.substr(3));
      } else if (line != "..." && !StartsWith(line, "... ")) {  // "...": document end marker
        doc->text.append(line);
      }
      doc->text.push_back('\n');
      at_separator_ = false;
      ++line_no_;
      if (end == text_.size()) {
        done_ = true;
        return true;
      }
      pos_ = end + 1;
    }
  }

  // How many documents the text holds (an upper bound on the objects, but for Lists).
  [[nodiscard]] size_t Count() const {
    size_t n = 1;
    for (size_t pos = 0; pos < text_.size();) {
      size_t end = text_.find('\n', pos);
      if (end == std::string_view::npos) {
        end = text_.size();
      }
      n += IsSeparator(text_.substr(pos, end - pos)) ? 1 : 0;
      pos = end + 1;
    }
    return n;
  }

 private:
  static bool IsSeparator(std::string_view line) {
    return StartsWith(line, "---") &&
           (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
  }

  std::string_view text_;
  size_t pos_ = 0;
  int line_no_ = 0;
  int first_line_ = 0;
  bool at_separator_ = false;  // pos_ is at the separator line that starts a document
  bool done_ = false;
};

bool Blank(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    auto t = Trim(text.substr(pos, end - pos));
    if (!t.empty() && t[0] != '#') {
      return false;
    }
    pos = end + 1;
  }
  return true;
}

nlohmann::json YamlToJsonAt(std::string_view text, int first_line) {
  try {
    return NodeToJson(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error("line " + std::to_string(first_line + e.mark.line + 1) + ", column " +
                             std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

// Gives the values of a parsed JSON document the types the YAML path gives them (integers
// as signed, integers beyond int64 as doubles). False when the document holds something
// the YAML path could read differently (a double that over- or underflows, where YAML keeps
// the text as a string) or nests deeper than yaml-cpp allows: it then goes the YAML way.
bool NormalizeJsonNumbers(nlohmann::json* root) {
  constexpr size_t kMaxDepth = 1000;  // yaml-cpp stops at 2000
  std::vector<std::pair<nlohmann::json*, size_t>> stack = {{root, 0}};
  while (!stack.empty()) {
    auto [j, depth] = stack.back();
    stack.pop_back();
    switch (j->type()) {
      case nlohmann::json::value_t::object:
      case nlohmann::json::value_t::array:
        if (depth >= kMaxDepth) {
          return false;
        }
        for (auto& child : *j) {
          stack.emplace_back(&child, depth + 1);
        }
        break;
      case nlohmann::json::value_t::number_unsigned: {
        auto u = j->get<uint64_t>();
        if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          *j = static_cast<int64_t>(u);
        } else {
          *j = static_cast<double>(u);
        }
        break;
      }
      case nlohmann::json::value_t::number_float: {
        double d = j->get<double>();
        if (!std::isfinite(d) || std::fabs(d) < std::numeric_limits<double>::min()) {
          return false;  // inf, 0 or subnormal: maybe out of range for YAML
        }
        break;
      }
      default:
        break;
    }
  }
  return true;
}

// A document that is plain JSON (what the Kubernetes API serves) skips the YAML parser.
// Anything else that starts with '{' (YAML flow style such as {a: 1}, comments, a syntax
// error) is left to the YAML path, so results and error messages do not change.
std::optional<nlohmann::json> ParseJsonDocument(std::string_view text) {
  size_t start = text.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos || text[start] != '{') {
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !NormalizeJsonNumbers(&j)) {
    return std::nullopt;
  }
  return j;
}

}  // namespace

nlohmann::json YamlToJson(std::string_view text) { return YamlToJsonAt(text, 0); }

DecodeResult DecodeDocuments(std::string_view text, const std::string& source) {
  DecodeResult result;
  DocumentSplitter splitter(text);
  result.objects.reserve(splitter.Count());
  RawDocument doc;
  int index = 0;
  while (splitter.Next(&doc)) {
    if (Blank(doc.text)) {
      continue;
    }
    ++index;
    std::string origin = source + " document " + std::to_string(index);
    nlohmann::json j;
    if (auto parsed = ParseJsonDocument(doc.text)) {
      j = std::move(*parsed);
    } else {
      try {
        j = YamlToJsonAt(doc.text, doc.first_line);  // positions are file positions
      } catch (const std::exception& e) {
        result.errors.push_back({origin, e.what()});
        continue;
      }
    }
    if (j.is_null()) {
      continue;
    }
    if (!j.is_object()) {
      result.errors.push_back(
          {origin, "expected a Kubernetes object (a map), got " + JsonTypeName(j)});
      continue;
    }
    std::vector<std::pair<nlohmann::json, std::string>> items;
    if (j.value("kind", "") == "List" ||
        (j.contains("items") && j["items"].is_array() && EndsWith(j.value("kind", ""), "List"))) {
      auto& arr = j["items"];
      for (size_t i = 0; i < arr.size(); ++i) {
        items.emplace_back(std::move(arr[i]), origin + " items[" + std::to_string(i) + "]");
      }
    } else {
      items.emplace_back(std::move(j), origin);
    }
    for (auto& [item, item_origin] : items) {
      if (!item.is_object() || !item.contains("kind") || !item.contains("apiVersion")) {
        result.errors.push_back(
            {item_origin, "not a Kubernetes object: apiVersion and kind are required"});
        continue;
      }
      Object obj;
      if (DecodeObject(item, item_origin, &obj)) {
        result.objects.push_back(std::move(obj));
      } else {
        ++result.ignored;
      }
    }
  }
  return result;
}

// ---- objects -----------------------------------------------------------------------------

namespace {

void DecodeMeta(Reader& top, Object* obj, Messages& msgs) {
  const auto* m = top.Get("metadata");
  if (m == nullptr) {
    msgs.Error("metadata", "required");
    return;
  }
  Reader r(*m, "metadata", msgs);
  r.IgnoreUnknown();  // managedFields, ownerReferences, finalizers, ...
  obj->meta.name = r.String("name");
  obj->meta.namespace_ = r.String("namespace");
  if (obj->meta.namespace_.empty()) {
    obj->meta.namespace_ = "default";
  }
  obj->meta.uid = r.String("uid");
  obj->meta.resource_version = r.String("resourceVersion");
  obj->meta.creation_timestamp = r.String("creationTimestamp");
  obj->meta.generation = r.Int("generation").value_or(0);
  obj->meta.labels = r.StringMap("labels");
  obj->meta.annotations = r.StringMap("annotations");
  if (obj->meta.name.empty()) {
    msgs.Error("metadata.name", "required");
  } else if (!IsDns1123Subdomain(obj->meta.name)) {
    msgs.Error(
        "metadata.name",
        "\"" + obj->meta.name + "\" is not a valid name (lower-case letters, digits, '-' and '.')");
  }
  if (!IsDns1123Label(obj->meta.namespace_)) {
    msgs.Error("metadata.namespace", "\"" + obj->meta.namespace_ + "\" is not a valid namespace");
  }
}

Service DecodeService(Reader& spec) {
  Service s;
  Messages& msgs = spec.msgs();
  spec.IgnoreUnknown();  // type, sessionAffinity, ipFamilies, ...
  s.selector = spec.StringMap("selector");
  s.cluster_ip = spec.String("clusterIP");
  ForEachItem(spec, "ports", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    r.IgnoreUnknown();
    ServicePort p;
    p.name = r.String("name");
    p.protocol = r.String("protocol");
    auto port = r.Int("port");
    if (!port || *port < 1 || *port > 65535) {
      msgs.Error(r.Path("port"), "must be a port number between 1 and 65535");
    } else {
      p.port = static_cast<uint32_t>(*port);
    }
    if (const auto* tp = r.Get("targetPort")) {
      if (tp->is_number_integer()) {
        p.target_port = std::to_string(tp->get<int64_t>());
      } else if (tp->is_string()) {
        p.target_port = tp->get<std::string>();
      } else {
        msgs.Error(r.Path("targetPort"), "expected a port number or name");
      }
    }
    s.ports.push_back(std::move(p));
  });
  return s;
}

EndpointSlice DecodeEndpointSlice(Reader& top, const Object& obj) {
  EndpointSlice s;
  Messages& msgs = top.msgs();
  auto it = obj.meta.labels.find("kubernetes.io/service-name");
  if (it != obj.meta.labels.end()) {
    s.service_name = it->second;
  } else {
    msgs.Warn("metadata.labels",
              "no kubernetes.io/service-name label: the slice belongs to no Service");
  }
  s.address_type = top.String("addressType");
  ForEachItem(top, "endpoints", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    r.IgnoreUnknown();
    EndpointSlice::Endpoint e;
    e.addresses = r.StringList("addresses");
    if (const auto* c = r.Get("conditions")) {
      Reader cr(*c, r.Path("conditions"), msgs);
      cr.IgnoreUnknown();
      if (cr.Get("ready") != nullptr) {
        e.ready = cr.Bool("ready");
      }
    }
    if (const auto* t = r.Get("targetRef")) {
      Reader tr(*t, r.Path("targetRef"), msgs);
      tr.IgnoreUnknown();
      e.target_kind = tr.String("kind");
      e.target_name = tr.String("name");
      e.target_namespace = tr.String("namespace");
      if (e.target_namespace.empty()) {
        e.target_namespace = obj.meta.namespace_;
      }
    }
    s.endpoints.push_back(std::move(e));
  });
  ForEachItem(top, "ports", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    r.IgnoreUnknown();
    EndpointSlice::Port p;
    p.name = r.String("name");
    auto port = r.Int("port");
    if (!port || *port < 1 || *port > 65535) {
      msgs.Error(r.Path("port"), "must be a port number between 1 and 65535");
    } else {
      p.port = static_cast<uint32_t>(*port);
    }
    s.ports.push_back(std::move(p));
  });
  return s;
}

Pod DecodePod(Reader& top) {
  Pod p;
  Messages& msgs = top.msgs();
  top.Ignore("spec");
  if (const auto* st = top.Get("status")) {
    Reader r(*st, "status", msgs);
    r.IgnoreUnknown();
    p.pod_ip = r.String("podIP");
    ForEachItem(r, "conditions", [&](const nlohmann::json& j, const std::string& path) {
      Reader c(j, path, msgs);
      c.IgnoreUnknown();
      if (c.String("type") == "Ready") {
        p.ready = c.String("status") == "True";
      }
    });
  }
  return p;
}

}  // namespace

namespace {
void DecodeInto(const nlohmann::json& doc, Object* out);
}  // namespace

bool DecodeObject(const nlohmann::json& doc, const std::string& origin, Object* out) {
  std::string api_version = doc.value("apiVersion", "");
  std::string kind_name = doc.value("kind", "");
  Kind kind;
  if (!IsSupportedKind(api_version, kind_name, &kind)) {
    return false;
  }
  Object obj;
  obj.kind = kind;
  obj.api_version = api_version;
  obj.origin = origin;
  DecodeInto(doc, &obj);
  *out = std::move(obj);
  return true;
}

namespace {

// Kept apart from DecodeObject so that every Reader (which reports unknown fields when it
// goes out of scope) is gone before the object is moved out.
void DecodeInto(const nlohmann::json& doc, Object* out) {
  Object& obj = *out;
  Kind kind = obj.kind;
  Messages msgs(&obj.messages);
  Reader top(doc, "", msgs);
  top.Ignore("apiVersion");
  top.Ignore("kind");
  DecodeMeta(top, &obj, msgs);
  switch (kind) {
    case Kind::kGateway:
    case Kind::kVirtualService:
    case Kind::kDestinationRule: {
      top.Ignore("status");
      const auto* spec = top.Get("spec");
      if (spec == nullptr) {
        msgs.Error("spec", "required");
        static const nlohmann::json kEmpty = nlohmann::json::object();
        spec = &kEmpty;
      }
      Reader r(*spec, "spec", msgs);
      if (kind == Kind::kGateway) {
        obj.spec = DecodeGateway(r);
      } else if (kind == Kind::kVirtualService) {
        obj.spec = DecodeVirtualService(r);
      } else {
        obj.spec = DecodeDestinationRule(r);
      }
      break;
    }
    case Kind::kService: {
      top.Ignore("status");
      static const nlohmann::json kEmpty = nlohmann::json::object();
      const auto* spec = top.Get("spec");
      Reader r(spec ? *spec : kEmpty, "spec", msgs);
      obj.spec = DecodeService(r);
      break;
    }
    case Kind::kEndpointSlice:
      obj.spec = DecodeEndpointSlice(top, obj);
      break;
    case Kind::kPod:
      obj.spec = DecodePod(top);
      break;
  }
}

}  // namespace

}  // namespace skiff::api
