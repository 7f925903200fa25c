#pragma once
// Delegation: a root VirtualService's http[i].delegate inlines the routes of a delegate
// VirtualService, with Istio's merge rules (networking/core/route: mergeHTTPRoute).
#include <string>

#include "operator/api/types.h"

namespace skiff::translate {

// A delegate's route as the root's rule makes it: matches merged (each delegate match
// with each root match it does not conflict with), and the root's rewrite, timeout,
// retries, fault, mirrors, CORS policy and headers where the delegate's route has none.
// `*mirrors_from_root`: the mirrors are the root's (their hosts resolve in its namespace).
// False when every combination of matches conflicts: the route never applies.
bool MergeRoute(const api::HTTPRoute& root, const api::HTTPRoute& leaf, const std::string& root_ns,
                const std::string& leaf_ns, api::HTTPRoute* out, bool* mirrors_from_root);

}  // namespace skiff::translate
