#include "operator/store/last_good.h"

#include <catch2/catch.hpp>

#include "operator/translate/translate.h"

using skiff::store::LastGood;

namespace {

skiff::source::LoadResult Input(const std::string& yaml, const std::string& file = "vs.yaml") {
  auto decoded = skiff::api::DecodeDocuments(yaml, file);
  skiff::source::LoadResult r;
  r.objects = std::move(decoded.objects);
  r.errors = std::move(decoded.errors);
  if (!r.errors.empty()) {
    r.broken_files.push_back(file);
  }
  return r;
}

std::string Vs(const std::string& host, const std::string& timeout) {
  return "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
         "metadata: {name: catalog, namespace: shop}\nspec:\n  hosts: [catalog]\n  http:\n"
         "  - route: [{destination: {host: " +
         host + "}}]\n    timeout: " + timeout + "\n";
}

const skiff::api::VirtualService& OnlyVs(const skiff::source::LoadResult& r) {
  REQUIRE(r.objects.size() == 1);
  return r.objects[0].As<skiff::api::VirtualService>();
}

}  // namespace

TEST_CASE("an edit that makes a resource invalid keeps its last valid version") {
  LastGood lg;
  auto first = lg.Apply(Input(Vs("catalog-v1", "5s")));
  CHECK(OnlyVs(first).http[0].route[0].destination.host == "catalog-v1");
  CHECK(lg.Status().resources.empty());

  auto bad = lg.Apply(Input(Vs("catalog-v2", "5x")));
  const auto& kept = bad.objects.at(0);
  CHECK(kept.Valid());  // what is translated is the last valid version
  CHECK(OnlyVs(bad).http[0].route[0].destination.host == "catalog-v1");
  REQUIRE(kept.rejected);
  REQUIRE(kept.rejected->errors.size() == 1);
  CHECK(kept.rejected->errors[0].Format() == "spec.http[0].timeout: invalid duration \"5x\"");
  auto st = lg.Status();
  REQUIRE(st.resources.size() == 1);
  CHECK(st.resources[0].Ref() == "VirtualService shop/catalog");
  CHECK(st.resources[0].serving_last_good);
  CHECK(st.resources[0].last_good_origin == "vs.yaml document 1");
  // Its status says so: Accepted=False with the field path, served all the same.
  skiff::translate::Translator t(bad.objects);
  REQUIRE(t.Statuses().size() == 1);
  const auto& cond = t.Statuses()[0].conditions[0];
  CHECK(cond.status == "False");
  CHECK(cond.message.find("spec.http[0].timeout: invalid duration \"5x\"") == 0);
  CHECK(cond.message.find("still served") != std::string::npos);

  auto fixed = lg.Apply(Input(Vs("catalog-v2", "5s")));
  CHECK(OnlyVs(fixed).http[0].route[0].destination.host == "catalog-v2");
  CHECK(!fixed.objects[0].rejected);
  CHECK(lg.Status().resources.empty());

  auto deleted = lg.Apply(Input(""));
  CHECK(deleted.objects.empty());  // only deletion removes it
  auto invalid_new = lg.Apply(Input(Vs("catalog-v3", "5x")));
  REQUIRE(invalid_new.objects.size() == 1);
  CHECK(!invalid_new.objects[0].Valid());  // no last good after a deletion: not served
  REQUIRE(lg.Status().resources.size() == 1);
  CHECK(!lg.Status().resources[0].serving_last_good);
}

TEST_CASE("a file that does not decode keeps the last good version of everything in it") {
  LastGood lg;
  lg.Apply(Input(Vs("catalog-v1", "5s") + "---\napiVersion: v1\nkind: Service\n"
                                          "metadata: {name: catalog, namespace: shop}\n"));
  auto broken = lg.Apply(Input(Vs("catalog-v2", "5s") + "---\nkind: [\n"));
  // The VirtualService still decodes (its new version is taken); the Service's document
  // does not, so its last good version stays.
  REQUIRE(broken.objects.size() == 2);
  CHECK(broken.objects[0].As<skiff::api::VirtualService>().http[0].route[0].destination.host ==
        "catalog-v2");
  CHECK(broken.objects[1].Ref() == "Service shop/catalog");
  REQUIRE(lg.Status().kept_from_broken.size() == 1);
  CHECK(lg.Status().documents.size() == 1);
  // A typo in the kind is an error, not a deletion: the VirtualService stays too.
  std::string typo = Vs("catalog-v3", "5s");
  typo.replace(typo.find("VirtualService"), 14, "VirtualSevice");
  auto kinds = lg.Apply(Input(typo));
  REQUIRE(kinds.objects.size() == 2);
  CHECK(kinds.objects[0].Ref() == "VirtualService shop/catalog");
  CHECK(kinds.objects[0].As<skiff::api::VirtualService>().http[0].route[0].destination.host ==
        "catalog-v2");
  // Once the file decodes again, what it no longer holds is gone.
  auto clean = lg.Apply(Input(Vs("catalog-v4", "5s")));
  REQUIRE(clean.objects.size() == 1);
  CHECK(OnlyVs(clean).http[0].route[0].destination.host == "catalog-v4");
}
