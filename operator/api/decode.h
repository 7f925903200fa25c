#pragma once
// Decoding of Kubernetes-style objects from JSON and (multi-document) YAML into typed
// objects. Problems inside an object become Messages on that object with a field path;
// a document that is not even YAML becomes a DocumentError naming where it is.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "operator/api/types.h"

namespace skiff::api {

struct DocumentError {
  std::string origin;  // "examples/x.yaml document 2"
  std::string text;    // "line 4, column 7: ..."
  [[nodiscard]] std::string Format() const { return origin + ": " + text; }
};

struct DecodeResult {
  std::vector<Object> objects;
  std::vector<DocumentError> errors;
  // Objects of Istio kinds that skiff does not serve yet: "ServiceEntry ns/name: not served
  // by skiff yet; ignored".
  std::vector<DocumentError> warnings;
  int ignored = 0;  // objects skiff does not use (Deployment, ..., and the warnings' objects)
};

// Parses YAML text (JSON is YAML too) holding any number of documents separated by
// "---"; a "kind: List" document is expanded into its items. `source` names the file.
DecodeResult DecodeDocuments(std::string_view text, const std::string& source);

// Converts one YAML document into JSON. Throws std::runtime_error with the position.
nlohmann::json YamlToJson(std::string_view text);

// The documents of a YAML stream (JSON is YAML too) as JSON, in order, whatever their kind
// (a List stays one document); empty documents are left out, one that does not parse is an
// error naming it ("deploy.yaml document 2: line 3, column 1: ...").
struct ParsedDocuments {
  std::vector<nlohmann::json> documents;
  std::vector<DocumentError> errors;
};
ParsedDocuments ParseDocuments(std::string_view text, const std::string& source);

// JSON as block-style YAML that YamlToJson reads back as the same JSON (strings quoted
// where YAML would read something else: "true", "15090", "*", ...).
std::string JsonToYaml(const nlohmann::json& j);

// Decodes a single object (already parsed). Returns false (and leaves `out` untouched) when
// the kind/apiVersion is not one skiff uses. Validation runs as part of decoding.
bool DecodeObject(const nlohmann::json& doc, const std::string& origin, Object* out);

// What skiff makes of an apiVersion/kind pair.
enum class KindClass {
  kServed,     // decoded and translated (IsSupportedKind)
  kNotServed,  // a real Istio (or Gateway API) kind that skiff ignores for now: a warning
  kUnknown,    // a kind or version that does not exist in a group we know: an error
  kIgnored,    // not skiff's business (apps/v1 Deployment, v1 ConfigMap, ...)
};
// `*problem` says what is wrong for kUnknown.
KindClass ClassifyKind(std::string_view api_version, std::string_view kind, std::string* problem);

// The apiVersion/kind pairs skiff decodes, e.g. {"networking.istio.io/v1", "Gateway"}.
bool IsSupportedKind(std::string_view api_version, std::string_view kind, Kind* out);

}  // namespace skiff::api
