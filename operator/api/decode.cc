#include "operator/api/decode.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <unordered_set>

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
    case Kind::kServiceEntry:
      return "ServiceEntry";
    case Kind::kService:
      return "Service";
    case Kind::kEndpointSlice:
      return "EndpointSlice";
    case Kind::kPod:
      return "Pod";
    case Kind::kSecret:
      return "Secret";
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
    if (kind == "ServiceEntry") {
      *out = Kind::kServiceEntry;
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
  if (api_version == "v1" && kind == "Secret") {
    *out = Kind::kSecret;
    return true;
  }
  if (api_version == "discovery.k8s.io/v1" && kind == "EndpointSlice") {
    *out = Kind::kEndpointSlice;
    return true;
  }
  return false;
}

namespace {

// The text of a string field, or "" when absent or not a string.
std::string TextField(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

struct Group {
  const char* name;  // "networking.istio.io", "" for the core group
  std::vector<const char*> versions;
  std::vector<const char*> kinds;  // every kind of the group that we know of
};

// The API groups whose kinds we know; in them, a kind or version we do not know is a typo
// (or a version that does not exist), never something to skip silently.
const std::vector<Group>& KnownGroups() {
  static const std::vector<Group> groups = {
      {"networking.istio.io",
       {"v1", "v1beta1", "v1alpha3"},
       {"Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "Sidecar", "WorkloadEntry",
        "WorkloadGroup", "EnvoyFilter", "ProxyConfig"}},
      {"security.istio.io",
       {"v1", "v1beta1"},
       {"PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"}},
      {"telemetry.istio.io", {"v1", "v1alpha1"}, {"Telemetry"}},
      {"extensions.istio.io", {"v1alpha1"}, {"WasmPlugin"}},
      {"gateway.networking.k8s.io",
       {"v1", "v1beta1", "v1alpha2", "v1alpha3"},
       {"Gateway", "GatewayClass", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute",
        "ReferenceGrant", "BackendTLSPolicy"}},
      {"",
       {"v1"},
       {"Binding", "ComponentStatus", "ConfigMap", "Endpoints", "Event", "LimitRange", "Namespace",
        "Node", "PersistentVolume", "PersistentVolumeClaim", "Pod", "PodTemplate",
        "ReplicationController", "ResourceQuota", "Secret", "Service", "ServiceAccount"}},
      {"discovery.k8s.io", {"v1"}, {"EndpointSlice"}},
  };
  return groups;
}

// Levenshtein distance, for "did you mean".
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diag + (std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                                         std::tolower(static_cast<unsigned char>(b[j - 1]))
                                     ? 0
                                     : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

KindClass ClassifyKind(std::string_view api_version, std::string_view kind, std::string* problem) {
  Kind served;
  if (IsSupportedKind(api_version, kind, &served)) {
    return KindClass::kServed;
  }
  auto slash = api_version.find('/');
  std::string_view group = slash == std::string_view::npos ? "" : api_version.substr(0, slash);
  std::string_view version =
      slash == std::string_view::npos ? api_version : api_version.substr(slash + 1);
  for (const auto& g : KnownGroups()) {
    if (group != g.name) {
      continue;
    }
    bool known_kind =
        std::any_of(g.kinds.begin(), g.kinds.end(), [&](const char* k) { return kind == k; });
    bool known_version = std::any_of(g.versions.begin(), g.versions.end(),
                                     [&](const char* v) { return version == v; });
    std::string group_text = g.name[0] == '\0' ? "the core API group" : g.name;
    if (!known_version) {
      std::string served_versions;
      for (const char* v : g.versions) {
        served_versions += std::string(served_versions.empty() ? "" : ", ") +
                           (g.name[0] == '\0' ? "" : std::string(g.name) + "/") + v;
      }
      *problem =
          ToValidUtf8("unknown apiVersion \"" + std::string(api_version) + "\" for kind \"" +
                      std::string(kind) + "\" (" + group_text + " has " + served_versions + ")");
      return KindClass::kUnknown;
    }
    if (!known_kind) {
      const char* best = nullptr;
      size_t best_distance = 4;  // suggest only close names
      for (const char* k : g.kinds) {
        size_t d = EditDistance(kind, k);
        if (d < best_distance) {
          best = k;
          best_distance = d;
        }
      }
      *problem =
          ToValidUtf8("unknown kind \"" + std::string(kind) + "\" in " + std::string(api_version) +
                      (best != nullptr ? std::string(" (did you mean ") + best + "?)" : ""));
      return KindClass::kUnknown;
    }
    // A kind of an Istio (or Gateway API) group that skiff does not serve yet; core kinds
    // that skiff does not read (Namespace, ConfigMap, ...) are simply not its business.
    return g.name[0] == '\0' || group == "discovery.k8s.io" ? KindClass::kIgnored
                                                            : KindClass::kNotServed;
  }
  return KindClass::kIgnored;  // apps/v1 Deployment and the like
}

// ---- YAML -> JSON ------------------------------------------------------------------------

namespace {

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
  // A key twice in one object goes the YAML way too, which reports it with its line.
  std::vector<std::unordered_set<std::string>> keys;
  bool duplicate = false;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) {
      keys.resize(static_cast<size_t>(depth) + 1);
      keys[static_cast<size_t>(depth)].clear();
    } else if (event == Event::key && depth > 0) {
      duplicate = duplicate ||
                  !keys[static_cast<size_t>(depth) - 1].insert(parsed.get<std::string>()).second;
    }
    return true;
  };
  auto j = nlohmann::json::parse(text, on_event, /*allow_exceptions=*/false);
  if (j.is_discarded() || duplicate || !NormalizeJsonNumbers(&j)) {
    return std::nullopt;
  }
  return j;
}

}  // namespace

nlohmann::json YamlToJson(std::string_view text) { return YamlToJsonAt(text, 0); }

ParsedDocuments ParseDocuments(std::string_view text, const std::string& source) {
  ParsedDocuments result;
  DocumentSplitter splitter(text);
  RawDocument doc;
  int index = 0;
  while (splitter.Next(&doc)) {
    if (Blank(doc.text)) {
      continue;
    }
    ++index;
    if (auto parsed = ParseJsonDocument(doc.text)) {
      result.documents.push_back(std::move(*parsed));
      continue;
    }
    try {
      nlohmann::json j = YamlToJsonAt(doc.text, doc.first_line);
      if (!j.is_null()) {
        result.documents.push_back(std::move(j));
      }
    } catch (const std::exception& e) {
      result.errors.push_back({source + " document " + std::to_string(index), e.what()});
    }
  }
  return result;
}

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
    std::string doc_kind = TextField(j, "kind");
    if (doc_kind == "List" ||
        (j.contains("items") && j["items"].is_array() && EndsWith(doc_kind, "List"))) {
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
      std::string api_version = TextField(item, "apiVersion");
      std::string kind = TextField(item, "kind");
      std::string problem;
      switch (ClassifyKind(api_version, kind, &problem)) {
        case KindClass::kServed: {
          Object obj;
          DecodeObject(item, item_origin, &obj);
          obj.file = source;
          result.objects.push_back(std::move(obj));
          break;
        }
        case KindClass::kNotServed: {
          std::string ns = "default";
          std::string name;
          if (item.contains("metadata") && item["metadata"].is_object()) {
            ns = TextField(item["metadata"], "namespace");
            name = TextField(item["metadata"], "name");
            if (ns.empty()) {
              ns = "default";
            }
          }
          result.warnings.push_back({item_origin, ToValidUtf8(kind + " " + ns + "/" + name) +
                                                      ": not served by skiff yet; ignored"});
          ++result.ignored;
          break;
        }
        case KindClass::kUnknown:
          result.errors.push_back({item_origin, problem});
          break;
        case KindClass::kIgnored:
          ++result.ignored;
          break;
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
  s.cluster_ips = spec.StringList("clusterIPs");
  ForEachItem(spec, "ports", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    r.IgnoreUnknown();
    ServicePort p;
    p.name = r.String("name");
    p.protocol = r.String("protocol");
    p.app_protocol = r.String("appProtocol");
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

// Only the TLS keys are kept; their values never go into a message (they may be keys).
Secret DecodeSecret(Reader& top) {
  Secret sec;
  Messages& msgs = top.msgs();
  top.IgnoreUnknown();
  sec.type = top.String("type");
  struct Field {
    const char* key;
    std::string Secret::*member;
  };
  static constexpr Field kFields[] = {{"tls.crt", &Secret::cert}, {"tls.key", &Secret::key},
                                      {"ca.crt", &Secret::ca},    {"cert", &Secret::cert},
                                      {"key", &Secret::key},      {"cacert", &Secret::ca}};
  // data: base64 values; stringData (as kubectl applies it; handy in files): plain text,
  // which wins over data, as the API server merges them.
  for (const char* section : {"data", "stringData"}) {
    const auto* m = top.Get(section);
    if (m == nullptr) {
      continue;
    }
    if (!m->is_object()) {
      msgs.Error(section, "expected a map, got " + JsonTypeName(*m));
      continue;
    }
    for (const auto& f : kFields) {
      auto it = m->find(f.key);
      if (it == m->end() || it->is_null()) {
        continue;
      }
      std::string path = std::string(section) + "[" + f.key + "]";
      if (!it->is_string()) {
        msgs.Error(path, "expected a string, got " + JsonTypeName(*it));
        continue;
      }
      const auto& v = it->get_ref<const std::string&>();
      std::string& out = sec.*f.member;
      if (std::string_view(section) == "stringData") {
        out = v;
      } else if (!Base64Decode(v, &out)) {
        out.clear();
        msgs.Error(path, "is not valid base64");
      }
    }
  }
  return sec;
}

}  // namespace

namespace {
void DecodeInto(const nlohmann::json& doc, Object* out);
}  // namespace

namespace {

// Every string (key or value) of `j` that is not UTF-8, as an error at its path; with
// `repair`, each is replaced by its valid form (invalid bytes as U+FFFD), so that no
// message, status or log line built from the object carries invalid UTF-8.
void CheckUtf8(nlohmann::json& j, const std::string& path, bool repair, std::vector<Message>* out) {
  auto report = [&](const std::string& at, std::string_view s, size_t bad, const char* what) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(s[bad]));
    out->push_back({Message::Level::kError, at.empty() ? "(document)" : at,
                    std::string("invalid UTF-8 in ") + what + " (byte " + byte + " at offset " +
                        std::to_string(bad) + ")"});
  };
  size_t bad = 0;
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (!IsValidUtf8(s, &bad)) {
      report(path, s, bad, "a string");
      if (repair) {
        j = ToValidUtf8(s);
      }
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      CheckUtf8(j[i], path + "[" + std::to_string(i) + "]", repair, out);
    }
  } else if (j.is_object()) {
    std::vector<std::pair<std::string, std::string>> renames;  // bad key -> repaired
    for (auto it = j.begin(); it != j.end(); ++it) {
      std::string key = it.key();
      if (!IsValidUtf8(key, &bad)) {
        std::string fixed = ToValidUtf8(key);
        report(path.empty() ? fixed : path + "." + fixed, key, bad, "a field name");
        renames.emplace_back(key, std::move(fixed));
        key = renames.back().second;
      }
      CheckUtf8(it.value(), path.empty() ? key : path + "." + key, repair, out);
    }
    if (repair) {
      for (auto& [from, to] : renames) {
        nlohmann::json v = std::move(j[from]);
        j.erase(from);
        j[to] = std::move(v);
      }
    }
  }
}

bool HasInvalidUtf8(const nlohmann::json& j) {
  if (j.is_string()) {
    return !IsValidUtf8(j.get_ref<const std::string&>());
  }
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!IsValidUtf8(it.key()) || HasInvalidUtf8(it.value())) {
        return true;
      }
    }
  } else if (j.is_array()) {
    for (const auto& v : j) {
      if (HasInvalidUtf8(v)) {
        return true;
      }
    }
  }
  return false;
}

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
  if (HasInvalidUtf8(doc)) {
    // Decoded from a repaired copy: the object is invalid (the errors say where), but what
    // it shows (names, values in messages) is valid UTF-8.
    nlohmann::json repaired = doc;
    std::vector<Message> utf8;
    CheckUtf8(repaired, "", /*repair=*/true, &utf8);
    DecodeInto(repaired, &obj);
    obj.messages.insert(obj.messages.begin(), utf8.begin(), utf8.end());
  } else {
    DecodeInto(doc, &obj);
  }
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
    case Kind::kDestinationRule:
    case Kind::kServiceEntry: {
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
      } else if (kind == Kind::kServiceEntry) {
        obj.spec = DecodeServiceEntry(r);
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
    case Kind::kSecret:
      obj.spec = DecodeSecret(top);
      break;
  }
}

}  // namespace

}  // namespace skiff::api
