#pragma once
// Validating admission (admission.k8s.io/v1 AdmissionReview) for networking.istio.io
// Gateway, VirtualService and DestinationRule: the same decoding and validation as the
// operator and `skiffctl validate`, so `kubectl apply` refuses what skiff would not serve,
// with the resource and the field path in the message. Pure: JSON in, JSON out.
#include <nlohmann/json.hpp>
#include <string>

#include "operator/inject/inject.h"

namespace skiff::webhook {

// The AdmissionReview response for an AdmissionReview request. Problems with the review
// itself (not JSON, no request) are returned as a denial naming them, with the uid if any.
nlohmann::json Review(const nlohmann::json& review);
// The same from the request body; `*status` is the HTTP status to answer with.
std::string ReviewBody(const std::string& body, int* status);

// Mutating admission for Pods (POST /inject), as istiod's injector: a created Pod gets the
// sidecar (inject::InjectPod) as a JSONPatch; a pod that opted out or is already injected
// is allowed unchanged; a pod that cannot be injected (an annotation that does not parse)
// is refused with the reason. Other kinds and operations are allowed unchanged.
nlohmann::json InjectReview(const nlohmann::json& review, const inject::InjectOptions& options);
std::string InjectReviewBody(const std::string& body, const inject::InjectOptions& options,
                             int* status);

}  // namespace skiff::webhook
