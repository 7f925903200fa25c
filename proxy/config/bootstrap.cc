#include "proxy/config/bootstrap.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>

namespace skiff::proxy {

bool ParseSnapshotJson(const std::string& json, skiff::v1::Snapshot* out, std::string* error) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, out, options);
  if (!status.ok()) {
    *error = "invalid snapshot JSON: " + std::string(status.message());
    return false;
  }
  return true;
}

bool LoadSnapshotFile(const std::string& path, skiff::v1::Snapshot* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot read " + path;
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (!ParseSnapshotJson(ss.str(), out, error)) {
    *error = path + ": " + *error;
    return false;
  }
  return true;
}

}  // namespace skiff::proxy
