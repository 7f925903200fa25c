#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "operator/source/kube/config.h"

namespace {
std::string TempDir() {
  char tmpl[] = "/tmp/skiff-kubecfg-XXXXXX";
  return ::mkdtemp(tmpl);
}
void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
}  // namespace

TEST_CASE("kubeconfig: current context, inline CA and client certificate, namespace") {
  std::string dir = TempDir();
  // "CA" and "CERT" and "KEY" in base64.
  Write(dir + "/config", R"(apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: c1, user: u1, namespace: shop}
- name: other
  context: {cluster: c2, user: u2}
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Q0E=}
- name: c2
  cluster: {server: "https://10.0.0.1", insecure-skip-tls-verify: true}
users:
- name: u1
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
- name: u2
  user: {token: abc123}
)");
  std::string error;
  auto c = skiff::kube::KubeconfigConfig(dir + "/config", "", &error);
  REQUIRE(c);
  CHECK(c->server == "https://127.0.0.1:6443");
  CHECK(c->ca_pem == "CA");
  CHECK(c->client_cert_pem == "CERT");
  CHECK(c->client_key_pem == "KEY");
  CHECK(c->namespace_ == "shop");
  auto o = skiff::kube::KubeconfigConfig(dir + "/config", "other", &error);
  REQUIRE(o);
  CHECK(o->token == "abc123");
  CHECK(o->insecure_skip_verify);
  std::filesystem::remove_all(dir);
}

TEST_CASE("kubeconfig: files relative to the kubeconfig, and clear errors") {
  std::string dir = TempDir();
  Write(dir + "/ca.pem", "FILECA");
  Write(dir + "/config", R"(current-context: a
contexts: [{name: a, context: {cluster: a, user: a}}]
clusters: [{name: a, cluster: {server: "https://k:6443", certificate-authority: ca.pem}}]
users: [{name: a, user: {client-certificate: missing.crt, client-key: missing.key}}]
)");
  std::string error;
  auto c = skiff::kube::KubeconfigConfig(dir + "/config", "", &error);
  CHECK_FALSE(c);
  CHECK(error.find("users[a].client-certificate: cannot read " + dir + "/missing.crt") !=
        std::string::npos);
  CHECK_FALSE(skiff::kube::KubeconfigConfig(dir + "/config", "nope", &error));
  CHECK(error.find("context \"nope\" is not defined") != std::string::npos);
  CHECK_FALSE(skiff::kube::KubeconfigConfig(dir + "/absent", "", &error));
  CHECK(error.find("cannot read the file") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("in-cluster config from the service-account directory and the environment") {
  std::string dir = TempDir();
  Write(dir + "/token", "tok\n");
  Write(dir + "/ca.crt", "PEM");
  Write(dir + "/namespace", "skiff-system");
  ::setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  std::string error;
  auto c = skiff::kube::InClusterConfig(dir, &error);
  REQUIRE(c);
  CHECK(c->server == "https://10.96.0.1:443");
  CHECK(c->token == "tok");
  CHECK(c->ca_pem == "PEM");
  CHECK(c->namespace_ == "skiff-system");
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  CHECK_FALSE(skiff::kube::InClusterConfig(dir, &error));
  CHECK(error.find("KUBERNETES_SERVICE_HOST") != std::string::npos);
  ::unsetenv("KUBERNETES_SERVICE_PORT");
  std::filesystem::remove_all(dir);
}
