#include "proxy/server/mirror.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/net/socket.h"

namespace skiff::proxy {

namespace {
constexpr std::chrono::milliseconds kMirrorTimeout{10000};
constexpr size_t kMaxMirrorsInFlight = 1024;
}  // namespace

MirrorRequest::MirrorRequest(MirrorWriter& writer, int fd, std::string request)
    : writer_(writer), fd_(fd) {
  out_.Append(request);
  timer_.SetCallback([this] { Done(true); });
  writer_.dispatcher_.Add(fd_, EPOLLOUT | EPOLLIN | EPOLLRDHUP, this);
  writer_.dispatcher_.Schedule(&timer_, kMirrorTimeout);
}

MirrorRequest::~MirrorRequest() {
  timer_.Cancel();
  if (fd_ >= 0) {
    writer_.dispatcher_.Remove(fd_);
    ::close(fd_);
  }
}

void MirrorRequest::Done(bool failed) {
  if (done_) {
    return;
  }
  done_ = true;
  timer_.Cancel();
  if (failed) {
    writer_.stats_.mirror_requests_failed.fetch_add(1, std::memory_order_relaxed);
  }
  writer_.dispatcher_.Remove(fd_);
  ::close(fd_);
  fd_ = -1;
  writer_.Finished(this);
}

void MirrorRequest::OnEvents(uint32_t events) {
  if (done_) {
    return;
  }
  if (!connected_) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      Done(true);
      return;
    }
    if ((events & EPOLLOUT) == 0) {
      return;
    }
    connected_ = true;
  }
  if (!out_.empty()) {
    if (out_.WriteTo(fd_) < 0) {
      Done(true);
      return;
    }
    if (out_.empty()) {
      writer_.dispatcher_.Modify(fd_, EPOLLIN | EPOLLRDHUP, this);
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    // The response (or the end of the connection): the copy was delivered; drop the rest.
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    }
    Done(n < 0 || !out_.empty());
  }
}

MirrorWriter::~MirrorWriter() {
  for (auto* m : in_flight_) {
    delete m;
  }
}

void MirrorWriter::Shadow(const upstream::Cluster& cluster, std::string request) {
  if (cluster.endpoints.empty() || in_flight_.size() >= kMaxMirrorsInFlight) {
    stats_.mirror_requests_skipped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const auto& ep = cluster.endpoints[rr_[&cluster]++ % cluster.endpoints.size()];
  std::string error;
  int fd = net::ConnectNonBlocking(ep.address, ep.port, &error);
  if (fd < 0) {
    stats_.mirror_requests_failed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  stats_.mirror_requests_total.fetch_add(1, std::memory_order_relaxed);
  in_flight_.insert(new MirrorRequest(*this, fd, std::move(request)));
}

void MirrorWriter::Finished(MirrorRequest* mirror) {
  if (in_flight_.erase(mirror) > 0) {
    dispatcher_.Defer([mirror] { delete mirror; });
  }
}

}  // namespace skiff::proxy
