#include "operator/source/kube/config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "operator/api/decode.h"

namespace skiff::kube {

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

bool Base64Decode(const std::string& in, std::string* out) {
  static const std::string kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out->clear();
  int val = 0;
  int bits = -8;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ') {
      continue;
    }
    auto pos = kChars.find(c);
    if (pos == std::string::npos) {
      return false;
    }
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out->push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return true;
}

// A PEM value given either inline (base64 "-data") or as a file path relative to the
// kubeconfig's directory.
bool PemValue(const nlohmann::json& obj, const std::string& key, const std::string& base_dir,
              std::string* out, std::string* error, const std::string& where) {
  if (obj.contains(key + "-data") && obj[key + "-data"].is_string()) {
    if (!Base64Decode(obj[key + "-data"].get<std::string>(), out)) {
      *error = where + "." + key + "-data: not valid base64";
      return false;
    }
    return true;
  }
  if (obj.contains(key) && obj[key].is_string()) {
    std::string path = obj[key].get<std::string>();
    if (!path.empty() && path[0] != '/') {
      path = base_dir + "/" + path;
    }
    if (!ReadFile(path, out)) {
      *error = where + "." + key + ": cannot read " + path;
      return false;
    }
  }
  return true;
}

const nlohmann::json* Named(const nlohmann::json& doc, const char* list, const std::string& name,
                            const char* field) {
  if (!doc.contains(list) || !doc[list].is_array()) {
    return nullptr;
  }
  for (const auto& item : doc[list]) {
    if (item.value("name", "") == name && item.contains(field)) {
      return &item[field];
    }
  }
  return nullptr;
}

}  // namespace

std::optional<ClusterConfig> InClusterConfig(const std::string& sa_dir, std::string* error) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0') {
    *error = "not running in a cluster (KUBERNETES_SERVICE_HOST/PORT are not set)";
    return std::nullopt;
  }
  ClusterConfig c;
  std::string h = host;
  if (h.find(':') != std::string::npos) {
    h = "[" + h + "]";  // IPv6
  }
  c.server = "https://" + h + ":" + port;
  c.token_file = sa_dir + "/token";
  if (!ReadFile(c.token_file, &c.token)) {
    *error = "in-cluster: cannot read the service-account token " + c.token_file;
    return std::nullopt;
  }
  c.token = Trim(c.token);
  if (!ReadFile(sa_dir + "/ca.crt", &c.ca_pem)) {
    *error = "in-cluster: cannot read the cluster CA " + sa_dir + "/ca.crt";
    return std::nullopt;
  }
  std::string ns;
  if (ReadFile(sa_dir + "/namespace", &ns)) {
    c.namespace_ = Trim(ns);
  }
  c.source = "in-cluster (" + sa_dir + ")";
  return c;
}

std::optional<ClusterConfig> KubeconfigConfig(const std::string& path, const std::string& context,
                                              std::string* error) {
  std::string text;
  if (!ReadFile(path, &text)) {
    *error = "kubeconfig " + path + ": cannot read the file";
    return std::nullopt;
  }
  nlohmann::json doc;
  try {
    doc = api::YamlToJson(text);
  } catch (const std::exception& e) {
    *error = "kubeconfig " + path + ": " + e.what();
    return std::nullopt;
  }
  std::string base_dir(".");
  if (size_t slash = path.find_last_of('/'); slash != std::string::npos && slash > 0) {
    base_dir.assign(path, 0, slash);
  }
  std::string ctx_name = context.empty() ? doc.value("current-context", "") : context;
  if (ctx_name.empty()) {
    *error = "kubeconfig " + path + ": no current-context (pass --kube-context)";
    return std::nullopt;
  }
  const nlohmann::json* ctx = Named(doc, "contexts", ctx_name, "context");
  if (ctx == nullptr) {
    *error = "kubeconfig " + path + ": context \"" + ctx_name + "\" is not defined";
    return std::nullopt;
  }
  std::string cluster_name = ctx->value("cluster", "");
  std::string user_name = ctx->value("user", "");
  const nlohmann::json* cluster = Named(doc, "clusters", cluster_name, "cluster");
  if (cluster == nullptr) {
    *error = "kubeconfig " + path + ": cluster \"" + cluster_name + "\" (of context \"" + ctx_name +
             "\") is not defined";
    return std::nullopt;
  }
  ClusterConfig c;
  c.server = cluster->value("server", "");
  if (c.server.empty()) {
    *error = "kubeconfig " + path + ": clusters[" + cluster_name + "].server is empty";
    return std::nullopt;
  }
  c.insecure_skip_verify = cluster->value("insecure-skip-tls-verify", false);
  if (!PemValue(*cluster, "certificate-authority", base_dir, &c.ca_pem, error,
                "kubeconfig " + path + ": clusters[" + cluster_name + "]")) {
    return std::nullopt;
  }
  if (const nlohmann::json* user = Named(doc, "users", user_name, "user")) {
    std::string where = "kubeconfig " + path + ": users[" + user_name + "]";
    if (user->contains("token") && (*user)["token"].is_string()) {
      c.token = (*user)["token"].get<std::string>();
    } else if (user->contains("tokenFile") && (*user)["tokenFile"].is_string()) {
      c.token_file = (*user)["tokenFile"].get<std::string>();
      if (!ReadFile(c.token_file, &c.token)) {
        *error = where + ".tokenFile: cannot read " + c.token_file;
        return std::nullopt;
      }
      c.token = Trim(c.token);
    }
    if (!PemValue(*user, "client-certificate", base_dir, &c.client_cert_pem, error, where) ||
        !PemValue(*user, "client-key", base_dir, &c.client_key_pem, error, where)) {
      return std::nullopt;
    }
    if (c.client_cert_pem.empty() != c.client_key_pem.empty()) {
      *error = where + ": client-certificate and client-key must be given together";
      return std::nullopt;
    }
  }
  c.namespace_ = ctx->value("namespace", "");
  c.source = "kubeconfig " + path + " (context " + ctx_name + ")";
  return c;
}

std::optional<ClusterConfig> LoadClusterConfig(const std::string& kubeconfig_flag,
                                               const std::string& context, std::string* error) {
  if (!kubeconfig_flag.empty()) {
    return KubeconfigConfig(kubeconfig_flag, context, error);
  }
  if (std::getenv("KUBERNETES_SERVICE_HOST") != nullptr) {
    const char* dir = std::getenv("SKIFF_SERVICEACCOUNT_DIR");  // tests of this code path
    return InClusterConfig(dir != nullptr ? dir : "/var/run/secrets/kubernetes.io/serviceaccount",
                           error);
  }
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    std::string first = env;
    first = first.substr(0, first.find(':'));
    return KubeconfigConfig(first, context, error);
  }
  if (const char* home = std::getenv("HOME"); home != nullptr) {
    return KubeconfigConfig(std::string(home) + "/.kube/config", context, error);
  }
  *error = "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a cluster";
  return std::nullopt;
}

}  // namespace skiff::kube
