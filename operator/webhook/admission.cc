#include "operator/webhook/admission.h"

#include "common/strings.h"
#include "operator/api/decode.h"

namespace skiff::webhook {

namespace {

constexpr size_t kMaxWarnings = 20;
constexpr size_t kMaxWarningLength = 400;

nlohmann::json Answer(const std::string& uid, bool allowed, const std::string& message,
                      const std::vector<std::string>& warnings,
                      const nlohmann::json& patch = nullptr) {
  nlohmann::json response = {{"uid", uid}, {"allowed", allowed}};
  if (!allowed) {
    response["status"] = {{"code", 400}, {"reason", "BadRequest"}, {"message", message}};
  }
  if (!patch.is_null()) {
    response["patchType"] = "JSONPatch";
    response["patch"] = Base64Encode(patch.dump());
  }
  if (!warnings.empty()) {
    response["warnings"] = warnings;
  }
  return {
      {"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}, {"response", response}};
}

std::string Text(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

nlohmann::json Review(const nlohmann::json& review) {
  if (!review.is_object() || !review.contains("request") || !review["request"].is_object()) {
    return Answer("", false, "not an AdmissionReview: no request", {});
  }
  const auto& req = review["request"];
  std::string uid = Text(req, "uid");
  std::string operation = Text(req, "operation");
  if (operation != "CREATE" && operation != "UPDATE") {
    return Answer(uid, true, "", {});  // DELETE, CONNECT: nothing to validate
  }
  if (!req.contains("object") || !req["object"].is_object()) {
    return Answer(uid, false, "the AdmissionReview request has no object", {});
  }
  nlohmann::json obj = req["object"];
  std::string api_version = Text(obj, "apiVersion");
  std::string kind = Text(obj, "kind");
  api::Kind k;
  if (!api::IsSupportedKind(api_version, kind, &k) ||
      (k != api::Kind::kGateway && k != api::Kind::kVirtualService &&
       k != api::Kind::kDestinationRule && k != api::Kind::kServiceEntry)) {
    return Answer(uid, true, "", {});  // not ours to judge
  }
  // The API server names the object in the request; the object may not say it yet
  // (generateName, or a namespace from the request path).
  if (!obj.contains("metadata") || !obj["metadata"].is_object()) {
    obj["metadata"] = nlohmann::json::object();
  }
  auto& meta = obj["metadata"];
  if (Text(meta, "namespace").empty() && !Text(req, "namespace").empty()) {
    meta["namespace"] = Text(req, "namespace");
  }
  if (Text(meta, "name").empty()) {
    if (!Text(req, "name").empty()) {
      meta["name"] = Text(req, "name");
    } else if (!Text(meta, "generateName").empty()) {
      meta["name"] = Text(meta, "generateName") + "x";  // what it will be, for validation
    }
  }
  api::Object o;
  api::DecodeObject(obj, "admission", &o);
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
  for (const auto& m : o.messages) {
    if (m.level == api::Message::Level::kError) {
      errors.push_back(m.Format());
    } else if (warnings.size() < kMaxWarnings) {
      std::string w = o.Ref() + ": " + m.Format();
      if (w.size() > kMaxWarningLength) {
        w = w.substr(0, kMaxWarningLength - 3) + "...";
      }
      warnings.push_back(ToValidUtf8(w));
    }
  }
  if (!errors.empty()) {
    return Answer(uid, false, o.Ref() + ": " + Join(errors, "; "), warnings);
  }
  return Answer(uid, true, "", warnings);
}

nlohmann::json InjectReview(const nlohmann::json& review, const inject::InjectOptions& options) {
  if (!review.is_object() || !review.contains("request") || !review["request"].is_object()) {
    return Answer("", false, "not an AdmissionReview: no request", {});
  }
  const auto& req = review["request"];
  std::string uid = Text(req, "uid");
  const nlohmann::json& kind = req.contains("kind") ? req["kind"] : nlohmann::json();
  if (Text(req, "operation") != "CREATE" || Text(kind, "kind") != "Pod" ||
      !Text(kind, "group").empty() || !req.contains("object") || !req["object"].is_object()) {
    return Answer(uid, true, "", {});  // only created Pods get sidecars
  }
  const nlohmann::json& pod = req["object"];
  inject::InjectResult r = inject::InjectPod(pod, options);
  std::string name = pod.contains("metadata") ? Text(pod["metadata"], "name") : "";
  if (name.empty() && pod.contains("metadata")) {
    name = Text(pod["metadata"], "generateName") + "*";
  }
  std::string ref = "Pod " + Text(req, "namespace") + "/" + name;
  switch (r.outcome) {
    case inject::InjectResult::Outcome::kInjected:
      return Answer(uid, true, "", {}, nlohmann::json::diff(pod, r.pod));
    case inject::InjectResult::Outcome::kSkipped:
      return Answer(uid, true, "", {});
    case inject::InjectResult::Outcome::kError:
      break;
  }
  return Answer(uid, false, ToValidUtf8("sidecar injection: " + ref + ": " + r.reason), {});
}

std::string InjectReviewBody(const std::string& body, const inject::InjectOptions& options,
                             int* status) {
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *status = 400;
    return Answer("", false, "the request body is not JSON", {}).dump();
  }
  *status = 200;
  return InjectReview(j, options).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string ReviewBody(const std::string& body, int* status) {
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *status = 400;
    return Answer("", false, "the request body is not JSON", {}).dump();
  }
  *status = 200;
  // Messages are valid UTF-8 (the decoder repairs what is not) and dump() escapes the rest.
  return Review(j).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace skiff::webhook
