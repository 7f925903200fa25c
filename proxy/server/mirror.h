#pragma once
// Mirrored ("shadow") copies of requests, for one worker: each is sent to one endpoint of
// the mirror cluster (round robin) on its own connection, its response read and dropped.
// Nothing about it reaches the client of the original request; a copy ends at the first
// response bytes, EOF, an error or a timeout. At most 1,024 are in flight per worker.
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/server/options.h"
#include "proxy/server/shadow_writer.h"

namespace skiff::proxy {

class MirrorWriter;

class MirrorRequest final : public net::IoHandler {
 public:
  // Takes ownership of `fd` (a non-blocking connect in progress).
  MirrorRequest(MirrorWriter& writer, int fd, std::string request);
  ~MirrorRequest() override;
  MirrorRequest(const MirrorRequest&) = delete;
  MirrorRequest& operator=(const MirrorRequest&) = delete;
  void OnEvents(uint32_t events) override;

 private:
  void Done(bool failed);

  MirrorWriter& writer_;
  int fd_;
  net::Buffer out_;
  bool connected_ = false;
  bool done_ = false;
  net::Timer timer_;
};

class MirrorWriter final : public ShadowWriter {
 public:
  MirrorWriter(net::Dispatcher& dispatcher, WorkerStats& stats)
      : dispatcher_(dispatcher), stats_(stats) {}
  ~MirrorWriter() override;
  MirrorWriter(const MirrorWriter&) = delete;
  MirrorWriter& operator=(const MirrorWriter&) = delete;

  void Shadow(const upstream::Cluster& cluster, std::string request) override;
  // The config changed: cluster pointers are new.
  void OnConfigChange() { rr_.clear(); }

 private:
  friend class MirrorRequest;
  void Finished(MirrorRequest* mirror);

  net::Dispatcher& dispatcher_;
  WorkerStats& stats_;
  std::unordered_set<MirrorRequest*> in_flight_;
  std::unordered_map<const upstream::Cluster*, size_t> rr_;
};

}  // namespace skiff::proxy
