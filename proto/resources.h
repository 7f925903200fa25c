#pragma once
// Snapshot <-> xDS resources, shared by the operator's server and the proxy's client.
#include <google/protobuf/any.pb.h>

#include <array>
#include <map>
#include <string>

#include "skiff/v1/config.pb.h"

namespace skiff::xds {

inline constexpr const char* kListenerType = "type.googleapis.com/skiff.v1.Listener";
inline constexpr const char* kRouteTableType = "type.googleapis.com/skiff.v1.RouteTable";
inline constexpr const char* kClusterType = "type.googleapis.com/skiff.v1.Cluster";
inline constexpr const char* kEndpointsType = "type.googleapis.com/skiff.v1.ClusterLoadAssignment";
// Key material (Envoy's SDS): sent only to the proxies whose listeners or clusters name it.
inline constexpr const char* kSecretType = "type.googleapis.com/skiff.v1.Secret";
// The order a server sends types in (as Envoy's ADS): clusters and their endpoints before
// the listeners and route tables that refer to them; secrets first, so that a listener
// never arrives before the certificate it serves.
inline constexpr std::array<const char*, 5> kTypeOrder = {kSecretType, kClusterType, kEndpointsType,
                                                          kListenerType, kRouteTableType};

// name -> resource, per type.
using ResourceMap = std::map<std::string, google::protobuf::Any>;
using TypedResources = std::map<std::string, ResourceMap>;

// Every type of kTypeOrder is present in the result (possibly empty).
TypedResources SplitSnapshot(const v1::Snapshot& snapshot);
// Unpacks resources into a snapshot; false with `error` naming the resource on a type or
// decoding problem.
bool AssembleSnapshot(const TypedResources& resources, v1::Snapshot* out, std::string* error);
// A content hash of one resource and of a whole type (hex), stable across processes.
std::string ResourceVersion(const google::protobuf::Any& resource);
std::string TypeVersion(const ResourceMap& resources);
// The name of a packed resource (listener / route table / cluster / secret name, or the
// cluster name of a ClusterLoadAssignment); empty when it cannot be decoded.
std::string ResourceName(const google::protobuf::Any& resource);
// "Listener" for a type URL.
std::string ShortType(const std::string& type_url);

}  // namespace skiff::xds
