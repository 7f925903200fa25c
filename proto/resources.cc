#include "proto/resources.h"

#include <cstdio>

namespace skiff::xds {

namespace {
uint64_t Fnv(std::string_view data, uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

template <typename T>
void Add(ResourceMap* map, const T& msg, const std::string& name) {
  google::protobuf::Any any;
  any.PackFrom(msg);
  (*map)[name] = std::move(any);
}
}  // namespace

TypedResources SplitSnapshot(const v1::Snapshot& s) {
  TypedResources out;
  for (const char* t : kTypeOrder) {
    out[t];
  }
  for (const auto& l : s.listeners()) {
    Add(&out[kListenerType], l, l.name());
  }
  for (const auto& r : s.route_tables()) {
    Add(&out[kRouteTableType], r, r.name());
  }
  for (const auto& c : s.clusters()) {
    Add(&out[kClusterType], c, c.name());
  }
  for (const auto& e : s.endpoints()) {
    Add(&out[kEndpointsType], e, e.cluster_name());
  }
  for (const auto& sec : s.secrets()) {
    Add(&out[kSecretType], sec, sec.name());
  }
  return out;
}

bool AssembleSnapshot(const TypedResources& resources, v1::Snapshot* out, std::string* error) {
  out->Clear();
  for (const auto& [type, map] : resources) {
    for (const auto& [name, any] : map) {
      bool ok = false;
      if (any.type_url() != type) {
        *error = ShortType(type) + " \"" + name + "\": resource has type " + any.type_url();
        return false;
      }
      if (type == kListenerType) {
        ok = any.UnpackTo(out->add_listeners());
      } else if (type == kRouteTableType) {
        ok = any.UnpackTo(out->add_route_tables());
      } else if (type == kClusterType) {
        ok = any.UnpackTo(out->add_clusters());
      } else if (type == kEndpointsType) {
        ok = any.UnpackTo(out->add_endpoints());
      } else if (type == kSecretType) {
        ok = any.UnpackTo(out->add_secrets());
      } else {
        *error = "unknown resource type " + type;
        return false;
      }
      if (!ok) {
        *error = ShortType(type) + " \"" + name + "\": cannot be decoded";
        return false;
      }
    }
  }
  return true;
}

std::string ResourceVersion(const google::protobuf::Any& resource) {
  return Hex(Fnv(resource.value(), Fnv(resource.type_url())));
}

std::string TypeVersion(const ResourceMap& resources) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& [name, any] : resources) {
    h = Fnv(name, h);
    h = Fnv(any.value(), h);
  }
  return Hex(h);
}

std::string ResourceName(const google::protobuf::Any& any) {
  if (any.type_url() == kListenerType) {
    v1::Listener m;
    return any.UnpackTo(&m) ? m.name() : "";
  }
  if (any.type_url() == kRouteTableType) {
    v1::RouteTable m;
    return any.UnpackTo(&m) ? m.name() : "";
  }
  if (any.type_url() == kClusterType) {
    v1::Cluster m;
    return any.UnpackTo(&m) ? m.name() : "";
  }
  if (any.type_url() == kEndpointsType) {
    v1::ClusterLoadAssignment m;
    return any.UnpackTo(&m) ? m.cluster_name() : "";
  }
  if (any.type_url() == kSecretType) {
    v1::Secret m;
    return any.UnpackTo(&m) ? m.name() : "";
  }
  return "";
}

std::string ShortType(const std::string& type_url) {
  auto dot = type_url.rfind('.');
  return dot == std::string::npos ? type_url : type_url.substr(dot + 1);
}

}  // namespace skiff::xds
