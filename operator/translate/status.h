#pragma once
// The status of every Istio resource: Accepted (valid, or served in part: the parts skiff
// does not serve) and ResolvedRefs (Gateways, Services, subsets and delegates it names).
#include <vector>

#include "operator/translate/index.h"
#include "operator/translate/translate.h"

namespace skiff::translate {

// One status per Gateway, VirtualService and DestinationRule, in the index's kind/ns/name
// order.
std::vector<ResourceStatus> MakeStatuses(const Index& index);

}  // namespace skiff::translate
