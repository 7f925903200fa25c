#pragma once
// Decoders for the Istio kinds (decode_istio.cc); used by decode.cc only.
#include "operator/api/names.h"
#include "operator/api/reader.h"
#include "operator/api/types.h"

namespace skiff::api {

Gateway DecodeGateway(Reader& spec);
VirtualService DecodeVirtualService(Reader& spec);
DestinationRule DecodeDestinationRule(Reader& spec);

}  // namespace skiff::api
