// Clusters and endpoints: every cluster the routes name, with its DestinationRule policy
// (load balancer, connection pool, outlier detection) and the endpoints of its Service
// (a subset's: the Pods its labels select).
#include <algorithm>
#include <tuple>

#include "common/strings.h"
#include "operator/translate/builder.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

using api::Object;

const Index::ServiceEntry* Builder::ServiceFor(std::string_view fqdn) {
  if (!have_last_service_ || fqdn != last_service_fqdn_) {
    last_service_fqdn_.assign(fqdn);
    last_service_ = index_.ServiceEntryFor(fqdn);
    have_last_service_ = true;
  }
  return last_service_;
}

void Builder::SetDestinationCluster(const api::Destination& d, const std::string& ns,
                                    uint32_t service_port, std::string* name) {
  std::string_view fqdn = ResolveHostView(d.host, ns, &fqdn_buf_);
  const Index::ServiceEntry* svc = ServiceFor(fqdn);
  uint32_t port = Index::DestinationPort(d, svc != nullptr ? svc->object : nullptr, service_port);
  SetCluster(fqdn, port, d.subset, svc, name);
}

void Builder::SetCluster(std::string_view fqdn, uint32_t port, std::string_view subset,
                         const Index::ServiceEntry* svc, std::string* name) {
  name->clear();
  AppendClusterName(name, port, subset, fqdn);
  clusters_.try_emplace(*name, ClusterKey{port, subset.size(), fqdn.size(), svc});
}

Builder::EffectivePolicy Builder::PolicyFor(const api::TrafficPolicy* base,
                                            const api::TrafficPolicy* subset, uint32_t port) {
  EffectivePolicy out;
  auto level = [&](const api::TrafficPolicy* tp) {
    if (tp == nullptr) {
      return;
    }
    auto take = [](const auto& field, auto* into) {
      if (field) {
        *into = &*field;
      }
    };
    take(tp->load_balancer, &out.load_balancer);
    take(tp->connection_pool, &out.connection_pool);
    take(tp->outlier_detection, &out.outlier_detection);
    take(tp->tls, &out.tls);
    for (const auto& p : tp->port_level_settings) {
      if (p.port == port) {
        out.load_balancer = p.load_balancer ? &*p.load_balancer : nullptr;
        out.connection_pool = p.connection_pool ? &*p.connection_pool : nullptr;
        out.outlier_detection = p.outlier_detection ? &*p.outlier_detection : nullptr;
        out.tls = p.tls ? &*p.tls : nullptr;
        break;
      }
    }
  };
  level(base);
  level(subset);
  return out;
}

void Builder::ApplyPolicy(const EffectivePolicy& policy, v1::Cluster* c) {
  if (const auto* lb_in = policy.load_balancer) {
    auto* lb = c->mutable_load_balancer();
    const auto& in = *lb_in;
    if (in.consistent_hash) {
      lb->set_policy(v1::LoadBalancer::CONSISTENT_HASH);
      auto* ch = lb->mutable_consistent_hash();
      const auto& h = *in.consistent_hash;
      if (!h.http_header_name.empty()) {
        ch->set_http_header_name(ToLower(h.http_header_name));
      } else if (h.use_source_ip) {
        ch->set_use_source_ip(true);
      } else if (!h.http_query_parameter_name.empty()) {
        ch->set_http_query_parameter_name(h.http_query_parameter_name);
      } else {
        auto* cookie = ch->mutable_http_cookie();
        cookie->set_name(h.cookie_name);
        cookie->set_path(h.cookie_path);
        if (h.cookie_ttl) {
          SetDuration(cookie->mutable_ttl(), *h.cookie_ttl);
        }
      }
    } else if (in.simple == api::LoadBalancerSettings::Simple::kLeastRequest) {
      lb->set_policy(v1::LoadBalancer::LEAST_REQUEST);
    } else if (in.simple == api::LoadBalancerSettings::Simple::kRandom) {
      lb->set_policy(v1::LoadBalancer::RANDOM);
    }
  }
  if (const auto* cp_in = policy.connection_pool) {
    const auto& in = *cp_in;
    auto* cp = c->mutable_connection_pool();
    cp->set_max_connections(static_cast<uint32_t>(in.max_connections));
    cp->set_max_pending_requests(static_cast<uint32_t>(in.http1_max_pending_requests));
    cp->set_max_requests(static_cast<uint32_t>(in.http2_max_requests));
    cp->set_max_requests_per_connection(static_cast<uint32_t>(in.max_requests_per_connection));
    cp->set_max_retries(static_cast<uint32_t>(in.max_retries));
    cp->set_max_concurrent_streams(static_cast<uint32_t>(in.max_concurrent_streams));
    if (in.use_client_protocol) {
      // Istio's useClientProtocol: the request goes on in the client's HTTP version, even
      // to a port declared grpc or http2 (and h2UpgradePolicy no longer applies).
      c->set_protocol(v1::Cluster::USE_DOWNSTREAM);
    } else if (in.h2_upgrade) {
      c->set_protocol(v1::Cluster::HTTP2);  // h2UpgradePolicy: UPGRADE
    }
    if (in.connect_timeout) {
      SetDuration(cp->mutable_connect_timeout(), *in.connect_timeout);
    }
    if (in.idle_timeout) {
      SetDuration(cp->mutable_idle_timeout(), *in.idle_timeout);
    }
  }
  if (const auto* od_in = policy.outlier_detection) {
    const auto& in = *od_in;
    auto* od = c->mutable_outlier_detection();
    // As Istio: only the thresholds given are set, Envoy's defaults hold for the rest (5
    // consecutive 5xx; gateway errors not counted; 10s interval, 30s base ejection time,
    // 10% max ejection).
    od->set_consecutive_5xx_errors(
        in.consecutive_5xx_errors < 0 ? 5 : static_cast<uint32_t>(in.consecutive_5xx_errors));
    od->set_consecutive_gateway_errors(static_cast<uint32_t>(in.consecutive_gateway_errors));
    SetDuration(od->mutable_interval(), in.interval.value_or(std::chrono::seconds(10)));
    SetDuration(od->mutable_base_ejection_time(),
                in.base_ejection_time.value_or(std::chrono::seconds(30)));
    od->set_max_ejection_percent(
        static_cast<uint32_t>(in.max_ejection_percent ? in.max_ejection_percent : 10));
    od->set_min_health_percent(static_cast<uint32_t>(in.min_health_percent));
  }
}

void Builder::BuildClusters() {
  // Sorted by (fqdn, port, subset).
  struct Sorted {
    uint64_t prefix;  // of the FQDN, to sort without reading the strings (mostly)
    std::string_view name;
    std::string_view fqdn;
    uint32_t port;
    std::string_view subset;
    const Index::ServiceEntry* service;
  };
  std::vector<Sorted> sorted;
  sorted.reserve(clusters_.size());
  for (const auto& [name, key] : clusters_) {
    std::string_view fqdn = name.substr(name.size() - key.fqdn_size);
    sorted.push_back(
        {Prefix(fqdn), name, fqdn, key.port,
         name.substr(name.size() - key.fqdn_size - 1 - key.subset_size, key.subset_size),
         key.service});
  }
  std::sort(sorted.begin(), sorted.end(), [](const Sorted& a, const Sorted& b) {
    if (a.prefix != b.prefix) {
      return a.prefix < b.prefix;
    }
    return std::tie(a.fqdn, a.port, a.subset) < std::tie(b.fqdn, b.port, b.subset);
  });
  snapshot_->mutable_clusters()->Reserve(static_cast<int>(sorted.size()));
  snapshot_->mutable_endpoints()->Reserve(static_cast<int>(sorted.size()));
  const Object* dr = nullptr;  // of the last FQDN: clusters of one host are consecutive
  std::string_view dr_fqdn;
  bool have_dr = false;
  for (const auto& key : sorted) {
    auto* c = snapshot_->add_clusters();
    c->set_name(key.name.data(), key.name.size());
    c->set_service(key.fqdn.data(), key.fqdn.size());
    c->set_port(key.port);
    c->set_subset(key.subset.data(), key.subset.size());
    const Index::ServiceEntry* entry = key.service;
    const Object* svc = entry != nullptr ? entry->object : nullptr;
    if (svc != nullptr) {
      c->set_service_name(svc->meta.name);
      c->set_service_namespace(svc->meta.namespace_);
      for (const auto& sp : svc->As<api::Service>().ports) {
        if (sp.port == key.port && ServicePortProtocol(sp) == PortProtocol::kHttp2) {
          c->set_protocol(v1::Cluster::HTTP2);  // Istio's protocol selection: grpc, http2
        }
      }
    } else {
      auto parts = Split(key.fqdn, '.');
      if (parts.empty()) {
        c->set_service_name(key.fqdn.data(), key.fqdn.size());
      } else {
        c->set_service_name(parts[0]);
      }
      if (parts.size() > 1 && EndsWith(key.fqdn, kDomainSuffix)) {
        c->set_service_namespace(parts[1]);
      }
    }
    if (!have_dr || key.fqdn != dr_fqdn) {
      dr = index_.DestinationRuleFor(key.fqdn);
      dr_fqdn = key.fqdn;
      have_dr = true;
    }
    const api::Subset* subset = key.subset.empty() ? nullptr : Index::FindSubset(dr, key.subset);
    if (dr != nullptr) {
      c->set_destination_rule(dr->meta.namespace_ + "/" + dr->meta.name);
      const api::TrafficPolicy* base = dr->As<api::DestinationRule>().traffic_policy.get();
      const api::TrafficPolicy* sub = subset != nullptr ? subset->traffic_policy.get() : nullptr;
      const EffectivePolicy policy = PolicyFor(base, sub, key.port);
      ApplyPolicy(policy, c);
      ApplyClientTls(policy.tls, key.fqdn, c);
    }
    auto* cla = snapshot_->add_endpoints();
    cla->set_cluster_name(key.name.data(), key.name.size());
    if (svc != nullptr && (key.subset.empty() || subset != nullptr)) {
      AddEndpoints(*entry, key.port, subset, cla);
    }
  }
}

void Builder::ClusterEndpoints(const Index& index, const v1::Cluster& c,
                               v1::ClusterLoadAssignment* cla) {
  cla->set_cluster_name(c.name());
  const Index::ServiceEntry* entry = index.ServiceEntryFor(c.service());
  if (entry == nullptr) {
    return;
  }
  const api::Subset* subset =
      c.subset().empty() ? nullptr
                         : Index::FindSubset(index.DestinationRuleFor(c.service()), c.subset());
  if (c.subset().empty() || subset != nullptr) {
    AddEndpoints(*entry, c.port(), subset, cla);
  }
}

void Builder::AddEndpoints(const Index::ServiceEntry& entry, uint32_t port,
                           const api::Subset* subset, v1::ClusterLoadAssignment* cla) {
  const auto& svc = entry.object->As<api::Service>();
  const api::ServicePort* sp = nullptr;
  for (const auto& p : svc.ports) {
    if (p.port == port) {
      sp = &p;
    }
  }
  if (sp == nullptr) {
    return;
  }
  for (const auto& [slice_obj, pods] : entry.slices) {
    const auto& slice = slice_obj->As<api::EndpointSlice>();
    // The slice port that carries this service port: same name (or the only one).
    uint32_t target = 0;
    for (const auto& p : slice.ports) {
      if (p.name == sp->name || (slice.ports.size() == 1 && svc.ports.size() == 1)) {
        target = p.port;
        break;
      }
    }
    if (target == 0) {
      continue;
    }
    for (size_t i = 0; i < slice.endpoints.size(); ++i) {
      const auto& e = slice.endpoints[i];
      const Object* pod = pods[i];
      if (subset != nullptr && (pod == nullptr || !LabelsMatch(subset->labels, pod->meta.labels))) {
        continue;
      }
      for (const auto& addr : e.addresses) {
        auto* ep = cla->add_endpoints();
        ep->set_address(addr);
        ep->set_port(target);
        ep->set_healthy(e.ready);
        if (pod != nullptr && !pod->meta.name.empty()) {  // (a ServiceEntry's: labels only)
          std::string ref;
          ref.reserve(pod->meta.namespace_.size() + 1 + pod->meta.name.size());
          ref.append(pod->meta.namespace_).append("/").append(pod->meta.name);
          ep->set_pod(std::move(ref));
        }
        if (pod != nullptr) {
          for (const auto& [k, v] : pod->meta.labels) {
            auto* l = ep->add_labels();
            l->set_name(k);
            l->set_value(v);
          }
        }
      }
    }
  }
  auto* eps = cla->mutable_endpoints();
  std::sort(eps->pointer_begin(), eps->pointer_end(),
            [](const v1::Endpoint* a, const v1::Endpoint* b) {
              return std::forward_as_tuple(a->address(), a->port(), a->pod()) <
                     std::forward_as_tuple(b->address(), b->port(), b->pod());
            });
}

}  // namespace skiff::translate
