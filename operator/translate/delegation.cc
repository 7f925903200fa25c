#include "operator/translate/delegation.h"

#include <algorithm>
#include <vector>

#include "common/strings.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

namespace {

// Can a request match both `root` and `leaf` string matches, with `leaf` the narrower one?
bool StringMatchConflict(const api::StringMatch* root, const api::StringMatch* leaf) {
  using T = api::StringMatch::Type;
  if (root == nullptr || leaf == nullptr || root->type == T::kUnset || leaf->type == T::kUnset) {
    return false;
  }
  if (root->type == T::kRegex || leaf->type == T::kRegex) {
    return true;  // no way to tell whether a regex narrows another match
  }
  if (root->type == T::kExact) {
    return leaf->type != T::kExact || leaf->value != root->value;
  }
  return !StartsWith(leaf->value, root->value);  // root is a prefix
}

template <typename Box>
const api::StringMatch* MatchPtr(const Box& b) {
  return b ? &*b : nullptr;
}

const api::StringMatch* Lookup(const std::vector<std::pair<std::string, api::StringMatch>>& list,
                               const std::string& key) {
  for (const auto& [k, v] : list) {
    if (k == key) {
      return &v;
    }
  }
  return nullptr;
}

// Gateway references made explicit ("ns/name"), so that a merged match holds references
// from two namespaces.
std::vector<std::string> GatewayKeys(const std::vector<std::string>& refs, const std::string& ns) {
  std::vector<std::string> out;
  out.reserve(refs.size());
  for (const auto& r : refs) {
    out.push_back(GatewayKey(r, ns));
  }
  return out;
}

bool MatchConflict(const api::HTTPMatchRequest& root, const api::HTTPMatchRequest& leaf,
                   const std::string& root_ns, const std::string& leaf_ns) {
  if (StringMatchConflict(MatchPtr(root.uri), MatchPtr(leaf.uri)) ||
      StringMatchConflict(MatchPtr(root.scheme), MatchPtr(leaf.scheme)) ||
      StringMatchConflict(MatchPtr(root.method), MatchPtr(leaf.method)) ||
      StringMatchConflict(MatchPtr(root.authority), MatchPtr(leaf.authority))) {
    return true;
  }
  for (const auto* list : {&leaf.headers, &leaf.without_headers, &leaf.query_params}) {
    const auto& root_list = list == &leaf.headers           ? root.headers
                            : list == &leaf.without_headers ? root.without_headers
                                                            : root.query_params;
    for (const auto& [k, v] : *list) {
      if (StringMatchConflict(Lookup(root_list, k), &v)) {
        return true;
      }
    }
  }
  if (root.ignore_uri_case != leaf.ignore_uri_case ||
      (root.port != 0 && leaf.port != 0 && root.port != leaf.port) ||
      (!root.source_namespace.empty() && leaf.source_namespace != root.source_namespace)) {
    return true;
  }
  for (const auto& [k, v] : leaf.source_labels) {
    auto it = root.source_labels.find(k);
    if (it != root.source_labels.end() && it->second != v) {
      return true;
    }
  }
  if (!root.gateways.empty() && !leaf.gateways.empty()) {
    auto root_keys = GatewayKeys(root.gateways, root_ns);
    for (const auto& g : GatewayKeys(leaf.gateways, leaf_ns)) {
      if (std::find(root_keys.begin(), root_keys.end(), g) == root_keys.end()) {
        return true;  // the root must allow every gateway the leaf names
      }
    }
  }
  return false;
}

// `base` with the entries of `over` added, or replacing those of the same key.
void MergeList(std::vector<std::pair<std::string, api::StringMatch>>* base,
               const std::vector<std::pair<std::string, api::StringMatch>>& over) {
  for (const auto& [k, v] : over) {
    auto it = std::find_if(base->begin(), base->end(), [&](const auto& e) { return e.first == k; });
    if (it != base->end()) {
      it->second = v;
    } else {
      base->emplace_back(k, v);
    }
  }
}

api::HTTPMatchRequest MergeMatch(const api::HTTPMatchRequest& root,
                                 const api::HTTPMatchRequest& leaf, const std::string& root_ns,
                                 const std::string& leaf_ns) {
  api::HTTPMatchRequest out = leaf;
  if (out.name.empty()) {
    out.name = root.name;
  } else if (!root.name.empty()) {
    out.name = root.name + "-" + out.name;
  }
  if (!out.uri) {
    out.uri = root.uri;
  }
  if (!out.scheme) {
    out.scheme = root.scheme;
  }
  if (!out.method) {
    out.method = root.method;
  }
  if (!out.authority) {
    out.authority = root.authority;
  }
  out.headers = root.headers;
  MergeList(&out.headers, leaf.headers);
  out.without_headers = root.without_headers;
  MergeList(&out.without_headers, leaf.without_headers);
  out.query_params = root.query_params;
  MergeList(&out.query_params, leaf.query_params);
  if (out.port == 0) {
    out.port = root.port;
  }
  for (const auto& [k, v] : root.source_labels) {
    out.source_labels.emplace(k, v);  // the leaf's own values win
  }
  if (out.source_namespace.empty()) {
    out.source_namespace = root.source_namespace;
  }
  out.gateways = leaf.gateways.empty() ? GatewayKeys(root.gateways, root_ns)
                                       : GatewayKeys(leaf.gateways, leaf_ns);
  return out;
}

}  // namespace

bool MergeRoute(const api::HTTPRoute& root, const api::HTTPRoute& leaf, const std::string& root_ns,
                const std::string& leaf_ns, api::HTTPRoute* out, bool* mirrors_from_root) {
  *out = leaf;
  if (!root.name.empty()) {
    out->name = leaf.name.empty() ? root.name : root.name + "-" + leaf.name;
  }
  if (root.match.empty()) {
    for (auto& m : out->match) {
      m.gateways = GatewayKeys(m.gateways, leaf_ns);
    }
  } else if (leaf.match.empty()) {
    out->match.clear();
    for (const auto& m : root.match) {
      out->match.push_back(m);
      out->match.back().gateways = GatewayKeys(m.gateways, root_ns);
    }
  } else {
    out->match.clear();
    for (const auto& lm : leaf.match) {
      for (const auto& rm : root.match) {
        if (!MatchConflict(rm, lm, root_ns, leaf_ns)) {
          out->match.push_back(MergeMatch(rm, lm, root_ns, leaf_ns));
        }
      }
    }
    if (out->match.empty()) {
      return false;
    }
  }
  if (!out->rewrite) {
    out->rewrite = root.rewrite;
  }
  if (!out->timeout) {
    out->timeout = root.timeout;
  }
  if (!out->retries) {
    out->retries = root.retries;
  }
  if (!out->fault) {
    out->fault = root.fault;
  }
  *mirrors_from_root = false;
  if (out->mirrors.empty() && !root.mirrors.empty()) {
    out->mirrors = root.mirrors;
    *mirrors_from_root = true;
  }
  if (!out->cors_policy) {
    out->cors_policy = root.cors_policy;
  }
  if (!out->headers) {
    out->headers = root.headers;
  }
  return true;
}

}  // namespace skiff::translate
