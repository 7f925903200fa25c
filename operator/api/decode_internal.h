#pragma once
// Decoders for the Istio kinds (decode_istio.cc) and the YAML reader (yaml_json.cc); used by
// decode.cc only.
#include <nlohmann/json.hpp>
#include <string_view>

#include "operator/api/names.h"
#include "operator/api/reader.h"
#include "operator/api/types.h"

namespace skiff::api {

Gateway DecodeGateway(Reader& spec);
VirtualService DecodeVirtualService(Reader& spec);
DestinationRule DecodeDestinationRule(Reader& spec);
ServiceEntry DecodeServiceEntry(Reader& spec);

// One YAML document as JSON; `first_line` (0-based) offsets the line numbers of errors.
// Throws std::runtime_error("line L, column C: ...").
nlohmann::json YamlToJsonAt(std::string_view text, int first_line);

}  // namespace skiff::api
