#pragma once
// A mirrored ("shadow") copy of a request: sent to one endpoint of the mirror cluster on
// its own connection, its response read and dropped. Nothing about it reaches the client
// of the original request; it ends at the first response bytes, EOF, an error or a timeout.
#include <string>

#include "proxy/net/event_loop.h"
#include "proxy/server/connection.h"

namespace skiff::proxy {

class MirrorRequest : public net::IoHandler {
 public:
  // Takes ownership of `fd` (a non-blocking connect in progress).
  MirrorRequest(Worker* worker, int fd, std::string request);
  ~MirrorRequest() override;
  MirrorRequest(const MirrorRequest&) = delete;
  MirrorRequest& operator=(const MirrorRequest&) = delete;
  void OnEvents(uint32_t events) override;

 private:
  void Done(bool failed);

  Worker* worker_;
  int fd_;
  Buffer out_;
  bool connected_ = false;
  bool done_ = false;
  net::Timer timer_;
};

}  // namespace skiff::proxy
