#pragma once
// Request and response header operations of a route and of its weighted destination
// (Istio's headers.request / headers.response: set, add, remove).
#include <string>
#include <string_view>

#include "skiff/v1/config.pb.h"

namespace skiff::policy {

// The operations of `headers` for one direction, or nullptr when it has none.
const v1::HeaderOperations* RequestOps(const v1::Headers& headers, bool present);
const v1::HeaderOperations* ResponseOps(const v1::Headers& headers, bool present);

// Is a received header named `name` removed or replaced by either set of operations?
bool Overridden(std::string_view name, const v1::HeaderOperations* a,
                const v1::HeaderOperations* b);

// Appends the set and add operations as "name: value\r\n" lines (pseudo-headers skipped, and
// `skip` when given: a response's Server is the proxy's own, as Envoy's OVERWRITE).
void AppendOps(std::string* fields, const v1::HeaderOperations* ops, std::string_view skip = {});

// The value an operation sets for ":authority" (Istio's way to change Host), or nullptr.
const std::string* SetAuthority(const v1::HeaderOperations* a, const v1::HeaderOperations* b);

}  // namespace skiff::policy
