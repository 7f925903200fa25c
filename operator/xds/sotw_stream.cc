// State-of-the-world ADS: per type the version sent, ACKed and NACKed; a NACKed version is
// not sent again until the type's content changes; stale nonces are ignored.
#include "operator/xds/stream.h"

namespace skiff::xds {

namespace {

void DeleteSharedString(void* p) { delete static_cast<std::shared_ptr<const std::string>*>(p); }

// Field 5 (nonce), length-delimited, of DiscoveryResponse.
std::string NonceField(const std::string& nonce) {
  std::string out;
  out.push_back(static_cast<char>((5 << 3) | 2));
  size_t n = nonce.size();
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  out += nonce;
  return out;
}

}  // namespace

grpc::Status SotwStream::HandleRequest() {
  v1::DiscoveryRequest req;
  if (!grpc::SerializationTraits<v1::DiscoveryRequest>::Deserialize(&in_, &req).ok()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "malformed DiscoveryRequest"};
  }
  if (!has_node_ && req.has_node()) {
    if (grpc::Status status = SetNode(req.node()); !status.ok()) {
      return status;
    }
  }
  if (TypeIndex(req.type_url()) < 0) {
    return grpc::Status::OK;  // a type this server does not serve: no state kept for it
  }
  TypeState& ts = StateOf(req.type_url());
  if (!ts.subscribed) {
    // A proxy that reconnects says which version it has: nothing to send if current.
    ts.subscribed = true;
    ts.sent_version = req.version_info();
    ts.acked_version = req.version_info();
    return grpc::Status::OK;
  }
  if (req.response_nonce() != ts.sent_nonce) {
    return grpc::Status::OK;  // stale: answers a response that a newer one replaced
  }
  if (req.has_error_detail()) {
    ts.nacked_version = ts.sent_version;
    ts.error = req.error_detail().message();
    ctx_.metrics->nacks.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("proxy {} rejected {} version {}: {}", node_.id(), ShortType(req.type_url()),
                 ts.sent_version, ts.error);
  } else {
    ts.acked_version = req.version_info();
    ts.error.clear();
    ts.nacked_version.clear();
    ctx_.metrics->acks.fetch_add(1, std::memory_order_relaxed);
  }
  return grpc::Status::OK;
}

// Push what changed, in Envoy's ADS order, one response at a time.
void SotwStream::Push() {
  if (!has_node_) {
    return;
  }
  const GroupSnapshot* snap = CurrentSnapshot();
  if (snap == nullptr) {
    return;  // the group's first snapshot is being built; the builder kicks the stream
  }
  for (size_t i = 0; i < kTypeOrder.size(); ++i) {
    if (by_order_[i] == nullptr || !by_order_[i]->subscribed) {
      continue;
    }
    TypeState& ts = *by_order_[i];
    const TypeSnapshot& type = snap->type(i);
    const std::string& version = type.version;
    if (version == ts.sent_version) {
      continue;  // up to date, or this very version was NACKed
    }
    ts.sent_version = version;
    ts.sent_nonce = NextNonce();
    // The group's shared bytes (no copy) followed by this stream's nonce.
    const std::shared_ptr<const std::string>& bytes = type.sotw_bytes;
    std::string nonce = NonceField(ts.sent_nonce);
    grpc::Slice slices[2] = {
        grpc::Slice(const_cast<char*>(bytes->data()), bytes->size(), &DeleteSharedString,
                    new std::shared_ptr<const std::string>(bytes)),
        grpc::Slice(nonce)};
    out_ = grpc::ByteBuffer(slices, 2);
    Write(&out_, i);
    return;
  }
}

}  // namespace skiff::xds
