// Gateway TLS on the operator side: Secret decoding (TLS keys only, no values in
// messages), the translator's filter chains and Secrets per proxy group, status for a
// missing Secret, Secrets over xDS as their own type, and a Secret kind replaced per
// namespace in the store.
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/strings.h"
#include "operator/api/decode.h"
#include "operator/store/object_store.h"
#include "operator/translate/translate.h"
#include "operator/webhook/certs.h"
#include "proto/resources.h"

namespace {

// A real certificate (CN shop.example, EC P-256): the translator checks PEM with OpenSSL,
// so the test's Secret fails on its key, not on its certificate.
const char* kCert = R"(-----BEGIN CERTIFICATE-----
MIIBJzCBzgIUBQ/va6OFlVkK3O4F1yHNQhHUY7MwCgYIKoZIzj0EAwIwFDESMBAG
A1UEAwwJZ29sZGVuIENBMCAXDTI2MTIwMjAzMjEyOVoYDzIxMjYxMTA4MDMyMTI5
WjAXMRUwEwYDVQQDDAxzaG9wLmV4YW1wbGUwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAATWbyCjBCwkW/VwT2JXrAR4Qro2z/YN03R0OZu2MaOh67MV72Cbo5VMGwU0
N/prwnnpd46AE7l5MSEX5exmaxdwMAoGCCqGSM49BAMCA0gAMEUCICuh7z7VHg6O
dcu0/3Ken7VpYxqJrF5Do7zpdUB06G3+AiEAjaZsKN8TItTOzDyM0WDG7UgavokF
+sPA4xI0w0HSBJA=
-----END CERTIFICATE-----
)";

std::vector<skiff::api::Object> Decode(const std::string& yaml) {
  auto d = skiff::api::DecodeDocuments(yaml, "test.yaml");
  REQUIRE(d.errors.empty());
  return std::move(d.objects);
}

}  // namespace

TEST_CASE("secrets: TLS keys from data and stringData; other keys dropped; errors name the key") {
  auto objs = Decode(
      "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: shop}\n"
      "type: kubernetes.io/tls\ndata:\n  tls.crt: " +
      skiff::Base64Encode("CERT") + "\n  tls.key: " + skiff::Base64Encode("KEY") +
      "\n  password: " + skiff::Base64Encode("hunter2") +
      "\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b, namespace: shop}\n"
      "stringData: {cert: C2, key: K2, cacert: CA2}\n"
      "---\napiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: shop}\n"
      "data: {tls.key: \"%%not-base64%%\"}\n");
  REQUIRE(objs.size() == 3);
  const auto& a = objs[0].As<skiff::api::Secret>();
  CHECK(a.type == "kubernetes.io/tls");
  CHECK(a.cert == "CERT");
  CHECK(a.key == "KEY");
  CHECK(a.ca.empty());
  CHECK(objs[0].Valid());
  const auto& b = objs[1].As<skiff::api::Secret>();
  CHECK((b.cert == "C2" && b.key == "K2" && b.ca == "CA2"));
  REQUIRE_FALSE(objs[2].Valid());
  CHECK(objs[2].messages[0].Format() == "data[tls.key]: is not valid base64");
  for (const auto& o : objs) {
    for (const auto& m : o.messages) {
      CHECK(m.Format().find("hunter2") == std::string::npos);
      CHECK(m.Format().find("not-base64") == std::string::npos);
    }
  }
}

TEST_CASE("translate: a missing Secret leaves its server out and names the field") {
  auto objs = Decode(
      "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\n"
      "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
      "  - port: {number: 443, name: a, protocol: HTTPS}\n    hosts: [a.example]\n"
      "    tls: {mode: SIMPLE, credentialName: nope}\n"
      "  - port: {number: 443, name: b, protocol: HTTPS}\n    hosts: [b.example]\n"
      "    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n");
  skiff::translate::Translator t(std::move(objs));
  skiff::translate::ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  auto snap = t.Build(group);
  REQUIRE(snap.listeners_size() == 1);
  REQUIRE(snap.listeners(0).filter_chains_size() == 1);  // the file-mode server only
  const auto& fc = snap.listeners(0).filter_chains(0);
  CHECK(fc.server_names(0) == "b.example");
  CHECK(fc.tls().certificate() == "file:///c.pem");
  REQUIRE(snap.secrets_size() == 1);
  CHECK(snap.secrets(0).certificate_chain_file() == "/c.pem");
  CHECK(snap.secrets(0).private_key_file() == "/k.pem");
  const auto& st = t.Statuses().at(0);
  REQUIRE(st.conditions.size() == 2);
  CHECK(st.conditions[1].status == "False");
  CHECK(st.conditions[1].reason == "InvalidCertificateRef");
  CHECK(st.conditions[1].message.find("spec.servers[0].tls.credentialName: Secret shop/nope "
                                      "does not exist") == 0);
  // Another group's proxies (no Gateway selects them) get no Secret at all.
  skiff::translate::ProxyGroup other;
  other.labels = {{"istio", "other"}};
  CHECK(t.Build(other).secrets_size() == 0);
}

TEST_CASE("translate: ecdhCurves reach the filter chain; ones skiff-proxy lacks are warned") {
  auto objs = Decode(
      "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\n"
      "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
      "  - port: {number: 443, name: a, protocol: HTTPS}\n    hosts: [a.example]\n"
      "    tls:\n      mode: SIMPLE\n      serverCertificate: /c.pem\n      privateKey: /k.pem\n"
      "      ecdhCurves: [X25519MLKEM768, P-384, X25519, curve9, P-384]\n");
  REQUIRE(objs.size() == 1);
  CHECK(objs[0].Valid());
  std::vector<std::string> warnings;
  for (const auto& m : objs[0].messages) {
    warnings.push_back(m.Format());
  }
  CHECK(warnings == std::vector<std::string>{
                        "spec.servers[0].tls.ecdhCurves[0]: ECDH curve \"X25519MLKEM768\" is not "
                        "supported by skiff-proxy; left out",
                        "spec.servers[0].tls.ecdhCurves[3]: unknown ECDH curve \"curve9\" "
                        "(X25519, P-256, P-384, P-521); left out",
                        "spec.servers[0].tls.ecdhCurves[4]: ECDH curve \"P-384\" is listed twice"});
  skiff::translate::Translator t(std::move(objs));
  skiff::translate::ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  auto snap = t.Build(group);
  REQUIRE(snap.listeners_size() == 1);
  const auto& tls = snap.listeners(0).filter_chains(0).tls();
  REQUIRE(tls.ecdh_curves_size() == 2);
  CHECK(tls.ecdh_curves(0) == "P-384");
  CHECK(tls.ecdh_curves(1) == "X25519");
}

TEST_CASE("translate: credentialName is the proxy's Secret (as Istio), else the Gateway's") {
  // Istio's secure-ingress task: the Gateway in default, the Secret next to the ingress
  // gateway's pods in istio-system.
  std::string error;
  auto bundle = skiff::webhook::GenerateCerts(
      {{"httpbin.example.com"}, {}}, std::chrono::hours(240), std::chrono::hours(24), &error);
  REQUIRE(error.empty());
  auto secret = [&](const std::string& ns) {
    return "---\napiVersion: v1\nkind: Secret\nmetadata: {name: httpbin-credential, namespace: " +
           ns +
           "}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: " + skiff::Base64Encode(bundle.cert_pem) +
           "\n  tls.key: " + skiff::Base64Encode(bundle.key_pem) + "\n";
  };
  const std::string gateway =
      "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
      "default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n"
      "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [httpbin.example.com]\n"
      "    tls: {mode: SIMPLE, credentialName: httpbin-credential}\n";
  auto served_from = [](const skiff::translate::Translator& t, const std::string& ns) {
    skiff::translate::ProxyGroup group;
    group.labels = {{"istio", "ingressgateway"}};
    group.namespace_ = ns;
    auto snap = t.Build(group);
    if (snap.listeners_size() == 0) {
      return std::string("not served");
    }
    return snap.listeners(0).filter_chains(0).tls().certificate();
  };
  {
    skiff::translate::Translator t(Decode(gateway + secret("istio-system")));
    CHECK(served_from(t, "istio-system") == "kubernetes://istio-system/httpbin-credential");
    CHECK(served_from(t, "other") == "not served");  // neither its namespace nor the Gateway's
    const auto& st = t.Statuses().at(0);
    REQUIRE(st.conditions.size() == 2);
    INFO(st.conditions[1].message);
    CHECK(st.conditions[1].status == "True");  // a proxy's namespace has it
  }
  {
    // In both: the proxy's own wins; a proxy of another namespace gets the Gateway's.
    skiff::translate::Translator t(Decode(gateway + secret("istio-system") + secret("default")));
    CHECK(served_from(t, "istio-system") == "kubernetes://istio-system/httpbin-credential");
    CHECK(served_from(t, "other") == "kubernetes://default/httpbin-credential");
  }
  {
    skiff::translate::Translator t(Decode(gateway));
    const auto& st = t.Statuses().at(0);
    CHECK(st.conditions.at(1).status == "False");
    CHECK(st.conditions.at(1).message.find("Secret default/httpbin-credential does not exist") !=
          std::string::npos);
  }
}

TEST_CASE("translate: TLS origination without sni sends the destination's host") {
  // Istio's egress TLS origination task: no sni in the DestinationRule; Envoy's auto_sni
  // sends the host and checks the server's certificate against it.
  auto objs = Decode(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com, '*.wikipedia.org']
  ports: [{number: 80, name: http-port, protocol: HTTP, targetPort: 443}]
  resolution: DNS
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cnn, namespace: default}
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      tls: {mode: SIMPLE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wiki, namespace: default}
spec:
  host: '*.wikipedia.org'
  trafficPolicy: {tls: {mode: SIMPLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: named, namespace: default}
spec:
  host: named.example.com
  trafficPolicy: {tls: {mode: SIMPLE, sni: front.example.com}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: named, namespace: default}
spec:
  hosts: [named.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
)");
  skiff::translate::Translator t(std::move(objs));
  skiff::translate::ProxyGroup group;
  group.role = "sidecar";
  auto snap = t.Build(group);
  std::map<std::string, std::string> sni;
  for (const auto& c : snap.clusters()) {
    if (c.has_tls()) {
      sni[c.name()] = c.tls().sni();
    }
  }
  CHECK(sni["outbound|80||edition.cnn.com"] == "edition.cnn.com");
  CHECK(sni["outbound|443||named.example.com"] == "front.example.com");  // as written
  for (const auto& [name, value] : sni) {
    if (name.find("wikipedia") != std::string::npos) {
      CHECK(value.empty());  // a wildcard has no name to send
    }
  }
}

TEST_CASE("translate: outlier detection thresholds as Istio sets them") {
  // Istio sets only the thresholds a DestinationRule gives: 5xx detection stays on at
  // Envoy's default 5 unless consecutive5xxErrors says otherwise (0 turns it off); gateway
  // errors count only when consecutiveGatewayErrors is set; the deprecated
  // consecutiveErrors has no effect.
  auto thresholds = [](const std::string& od) {
    auto objs = Decode(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, "
        "namespace: shop}\nspec:\n  host: reviews.shop.svc.cluster.local\n  trafficPolicy:\n"
        "    outlierDetection: " +
        od +
        "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\n"
        "spec:\n  ports: [{port: 9080, name: http}]\n");
    skiff::translate::Translator t(std::move(objs));
    skiff::translate::ProxyGroup group;
    group.role = "sidecar";
    group.namespace_ = "shop";
    auto snap = t.Build(group);
    for (const auto& c : snap.clusters()) {
      if (c.name() == "outbound|9080||reviews.shop.svc.cluster.local") {
        return std::make_pair(c.outlier_detection().consecutive_5xx_errors(),
                              c.outlier_detection().consecutive_gateway_errors());
      }
    }
    FAIL("no cluster");
    return std::make_pair(0u, 0u);
  };
  CHECK(thresholds("{interval: 1s}") == std::make_pair(5u, 0u));
  CHECK(thresholds("{consecutive5xxErrors: 1}") == std::make_pair(1u, 0u));
  CHECK(thresholds("{consecutiveGatewayErrors: 2}") == std::make_pair(5u, 2u));
  CHECK(thresholds("{consecutiveGatewayErrors: 2, consecutive5xxErrors: 0}") ==
        std::make_pair(0u, 2u));
  CHECK(thresholds("{consecutiveErrors: 1}") == std::make_pair(5u, 0u));
}

TEST_CASE("translate: a Secret whose PEM does not parse is refused with its reason") {
  auto objs = Decode(
      "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\n"
      "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
      "  - port: {number: 443, name: a, protocol: HTTPS}\n    hosts: [a.example]\n"
      "    tls: {mode: MUTUAL, credentialName: broken}\n"
      "---\napiVersion: v1\nkind: Secret\nmetadata: {name: broken, namespace: shop}\n"
      "stringData:\n  tls.crt: |\n" +
      [] {
        std::string indented;
        for (const auto& line : skiff::Split(kCert, '\n')) {
          if (!line.empty()) {
            indented += "    " + line + "\n";
          }
        }
        return indented;
      }() +
      "  tls.key: not a key\n");
  skiff::translate::Translator t(std::move(objs));
  skiff::translate::ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  auto snap = t.Build(group);
  CHECK(snap.listeners_size() == 0);  // its only server cannot be served: no listener
  CHECK(snap.secrets_size() == 0);
  const auto& msg = t.Statuses().at(0).conditions.at(1).message;
  INFO(msg);
  CHECK(msg.find("spec.servers[0].tls.credentialName: Secret shop/broken: key or tls.key holds "
                 "no PEM private key") == 0);
  CHECK(msg.find("not a key") == std::string::npos);  // never the material itself
}

TEST_CASE("xds: Secrets are a resource type of their own, sent first") {
  skiff::v1::Snapshot s;
  auto* sec = s.add_secrets();
  sec->set_name("kubernetes://shop/a");
  sec->set_certificate_chain("chain");
  s.add_clusters()->set_name("c");
  auto split = skiff::xds::SplitSnapshot(s);
  CHECK(std::string(skiff::xds::kTypeOrder[0]) == skiff::xds::kSecretType);
  REQUIRE(split.at(skiff::xds::kSecretType).size() == 1);
  CHECK(skiff::xds::ResourceName(split.at(skiff::xds::kSecretType).begin()->second) ==
        "kubernetes://shop/a");
  skiff::v1::Snapshot back;
  std::string error;
  REQUIRE(skiff::xds::AssembleSnapshot(split, &back, &error));
  REQUIRE(back.secrets_size() == 1);
  CHECK(back.secrets(0).certificate_chain() == "chain");
  CHECK(skiff::xds::ShortType(skiff::xds::kSecretType) == "Secret");
}

TEST_CASE("store: a kind listed per namespace replaces only that namespace's objects") {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<skiff::store::StoreUpdate> updates;
  skiff::store::StoreOptions options;
  options.holdoff = std::chrono::milliseconds(0);
  skiff::store::ObjectStore store(options, [&](skiff::store::StoreUpdate u) {
    std::lock_guard<std::mutex> lock(mu);
    updates.push_back(std::move(u));
    cv.notify_all();
  });
  auto secret = [](const std::string& ns, const std::string& name) {
    auto objs = Decode("apiVersion: v1\nkind: Secret\nmetadata: {name: " + name +
                       ", namespace: " + ns + "}\nstringData: {cert: C, key: K}\n");
    return std::move(objs.at(0));
  };
  std::vector<skiff::api::Object> a, b;
  a.push_back(secret("a", "one"));
  b.push_back(secret("b", "two"));
  store.ReplaceKind(skiff::api::Kind::kSecret, std::move(a), "a");
  store.ReplaceKind(skiff::api::Kind::kSecret, std::move(b), "b");
  store.ReplaceKind(skiff::api::Kind::kSecret, {}, "a");  // a relist of a: "one" is gone
  store.Synced();
  std::unique_lock<std::mutex> lock(mu);
  REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return !updates.empty(); }));
  const auto& objs = updates.back().inputs.objects;
  REQUIRE(objs.size() == 1);
  CHECK(objs[0].meta.namespace_ == "b");
  CHECK(objs[0].meta.name == "two");
}
