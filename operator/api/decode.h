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
  int ignored = 0;  // documents of kinds skiff does not use (Deployment, ...) or empty
};

// Parses YAML text (JSON is YAML too) holding any number of documents separated by
// "---"; a "kind: List" document is expanded into its items. `source` names the file.
DecodeResult DecodeDocuments(std::string_view text, const std::string& source);

// Converts one YAML document into JSON. Throws std::runtime_error with the position.
nlohmann::json YamlToJson(std::string_view text);

// Decodes a single object (already parsed). Returns false (and leaves `out` untouched) when
// the kind/apiVersion is not one skiff uses. Validation runs as part of decoding.
bool DecodeObject(const nlohmann::json& doc, const std::string& origin, Object* out);

// The apiVersion/kind pairs skiff decodes, e.g. {"networking.istio.io/v1", "Gateway"}.
bool IsSupportedKind(std::string_view api_version, std::string_view kind, Kind* out);

}  // namespace skiff::api
