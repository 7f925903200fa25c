#pragma once
// Reading a snapshot in the protobuf JSON that `skiffctl translate` prints.
#include <string>

#include "skiff/v1/config.pb.h"

namespace skiff::proxy {

// Parses snapshot JSON. On failure returns false and sets `error` to a message naming the
// problem (field and position as protobuf reports them).
bool ParseSnapshotJson(const std::string& json, skiff::v1::Snapshot* out, std::string* error);
bool LoadSnapshotFile(const std::string& path, skiff::v1::Snapshot* out, std::string* error);

}  // namespace skiff::proxy
