#pragma once
// What every ADS stream (state of the world or delta) shares: the per-type bookkeeping,
// the proxy's node and group, and the reactor half (read loop, one write at a time, finish).
// Internal to the xDS server.
//
// What one stream knows is guarded by its own lock. Reactions of one stream run one at a
// time for reads and for writes; updates and shutdown reach a stream from other threads
// through Kick and Stop. gRPC never runs a read or write reaction inline in Start*, so
// Start* and Finish are called with the stream's lock held: no Start* after Finish, and the
// reactor is alive (OnDone comes only after Finish).
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "operator/xds/metrics.h"
#include "operator/xds/snapshot_cache.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace skiff::xds {

class ProxyRegistry;

struct TypeState {
  bool subscribed = false;
  std::string sent_nonce;
  std::string error;  // the last NACK's message, cleared by an ACK
  // State of the world.
  std::string sent_version;
  std::string acked_version;
  std::string nacked_version;
  // Delta: what the proxy has (ACKed), and what the response in flight would give it.
  std::map<std::string, std::string> confirmed;
  std::map<std::string, std::string> pending;
  bool awaiting = false;
  bool responded = false;  // a response of this type was sent on this stream
  uint64_t sent_generation = 0;
  uint64_t nacked_generation = ~0ULL;  // not sent again while the snapshot is this one
};

// The index of a type URL in kTypeOrder, or -1.
int TypeIndex(const std::string& type_url);
// The proxy group of a node: role (default gateway), labels, namespace (default "default").
translate::ProxyGroup GroupOf(const v1::Node& node);

// What a stream uses of its server.
struct StreamContext {
  SnapshotCache* cache = nullptr;
  ProxyRegistry* registry = nullptr;
  ServerMetrics* metrics = nullptr;
};

class StreamBase {
 public:
  StreamBase(StreamContext context, bool delta) : ctx_(context), delta_(delta) {}
  virtual ~StreamBase() = default;
  StreamBase(const StreamBase&) = delete;
  StreamBase& operator=(const StreamBase&) = delete;

  // Sends what changed, unless a write is in flight (its completion sends it).
  void Kick() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_ && !writing_) {
      Push();
    }
  }
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_) {
      FinishLocked(grpc::Status::OK);
    }
  }

  struct View {
    v1::Node node;
    translate::ProxyGroup group;
    bool delta = false;
    std::map<std::string, TypeState> types;
  };
  // False until the proxy has said who it is.
  bool Describe(View* out);

  uint64_t id_ = 0;
  std::shared_ptr<StreamBase> self_;  // keeps the reactor alive until OnDone

 protected:
  // With mu_ held, !writing_ and !finished_: starts the next write, if anything is to send.
  virtual void Push() = 0;
  virtual void FinishLocked(const grpc::Status& status) = 0;

  // The proxy says who it is: its group gets (or shares) an entry in the snapshot cache.
  // Not OK when the node is too large or the cache is full: the stream is then refused.
  grpc::Status SetNode(const v1::Node& node);
  // With mu_ held: gives the group's cache entry back (the stream is done).
  void ReleaseGroupLocked();
  // The group's published snapshot; null until its first one is built (the builder then
  // kicks the stream).
  const GroupSnapshot* CurrentSnapshot() {
    snap_ = SnapshotCache::Published(entry_);
    return snap_.get();
  }
  // The state of a request's type; known types are indexed for the push path.
  TypeState& StateOf(const std::string& type_url) {
    TypeState& ts = types_[type_url];
    if (int i = TypeIndex(type_url); i >= 0) {
      by_order_[static_cast<size_t>(i)] = &ts;
    }
    return ts;
  }
  void CountPush() {
    ctx_.metrics->pushes.fetch_add(1, std::memory_order_relaxed);
    ctx_.metrics->type_pushes[writing_type_].fetch_add(1, std::memory_order_relaxed);
  }
  void Unregister();
  std::string NextNonce() { return std::to_string(id_) + "-" + std::to_string(++nonce_); }

  std::mutex mu_;
  const StreamContext ctx_;
  const bool delta_;
  bool has_node_ = false;
  v1::Node node_;
  translate::ProxyGroup group_;
  SnapshotCache::Handle entry_;  // the group's cache entry, while held
  std::map<std::string, TypeState> types_;
  std::array<TypeState*, kTypeOrder.size()> by_order_{};  // subscribed known types, in types_
  uint64_t nonce_ = 0;
  bool writing_ = false;
  size_t writing_type_ = 0;  // index in kTypeOrder of the write in flight
  bool finished_ = false;
  std::shared_ptr<const GroupSnapshot> snap_;
};

// The reactor half shared by both stream kinds: read loop, one write at a time, finish.
template <typename Request, typename Response>
class Reactor : public StreamBase, public grpc::ServerBidiReactor<Request, Response> {
 public:
  using StreamBase::StreamBase;

  // `refuse` not OK: finish at once with it (shutting down, too many streams).
  void Start(const grpc::Status& refuse) {
    std::lock_guard<std::mutex> lock(this->mu_);
    if (!refuse.ok()) {
      FinishLocked(refuse);
      return;
    }
    this->StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::mutex> lock(this->mu_);
    if (this->finished_) {
      return;
    }
    if (!ok) {
      FinishLocked(grpc::Status::OK);  // the proxy closed its side or went away
      return;
    }
    if (grpc::Status status = HandleRequest(); !status.ok()) {
      FinishLocked(status);
      return;
    }
    if (!this->writing_) {
      this->Push();
    }
    this->StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(this->mu_);
    this->writing_ = false;
    if (ok) {
      this->CountPush();
    }
    if (this->finished_) {
      return;
    }
    if (!ok) {
      FinishLocked(grpc::Status::OK);
      return;
    }
    this->Push();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(this->mu_);
    if (!this->finished_) {
      FinishLocked(grpc::Status::CANCELLED);
    }
  }

  void OnDone() override {
    this->Unregister();
    std::shared_ptr<StreamBase> self;  // the last reference, perhaps: deletes this on return
    std::lock_guard<std::mutex> lock(this->mu_);
    if (this->has_node_) {
      spdlog::info("proxy {} disconnected", this->node_.id());
    }
    this->ReleaseGroupLocked();
    this->snap_.reset();
    self = std::move(this->self_);
  }

 protected:
  // With mu_ held: the bookkeeping for in_; not OK ends the stream with that status.
  virtual grpc::Status HandleRequest() = 0;

  void FinishLocked(const grpc::Status& status) override {
    this->finished_ = true;
    this->Finish(status);
  }
  // With mu_ held and no write in flight; `type` is its index in kTypeOrder.
  void Write(const Response* response, size_t type) {
    this->writing_ = true;
    this->writing_type_ = type;
    this->StartWrite(response);
  }

  Request in_;
};

// State of the world, served raw: the group's pre-serialized bytes and this stream's nonce.
class SotwStream final : public Reactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit SotwStream(StreamContext context) : Reactor(context, false) {}

 private:
  grpc::Status HandleRequest() override;
  void Push() override;
  grpc::ByteBuffer out_;
};

// Delta: what changed resource by resource, with typed messages.
class DeltaStream final : public Reactor<v1::DeltaDiscoveryRequest, v1::DeltaDiscoveryResponse> {
 public:
  explicit DeltaStream(StreamContext context) : Reactor(context, true) {}

 private:
  grpc::Status HandleRequest() override;
  void Push() override;
  v1::DeltaDiscoveryResponse out_;
};

}  // namespace skiff::xds
