#include "proxy/server/mirror.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/net/socket.h"
#include "proxy/server/worker.h"

namespace skiff::proxy {

namespace {
constexpr std::chrono::milliseconds kMirrorTimeout{10000};
constexpr size_t kMaxMirrorsInFlight = 1024;
}  // namespace

MirrorRequest::MirrorRequest(Worker* worker, int fd, std::string request)
    : worker_(worker), fd_(fd) {
  out_.Append(request);
  timer_.SetCallback([this] { Done(true); });
  worker_->loop().Add(fd_, EPOLLOUT | EPOLLIN | EPOLLRDHUP, this);
  worker_->loop().Schedule(&timer_, kMirrorTimeout);
}

MirrorRequest::~MirrorRequest() {
  timer_.Cancel();
  if (fd_ >= 0) {
    worker_->loop().Remove(fd_);
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
    worker_->mutable_stats().mirror_requests_failed.fetch_add(1, std::memory_order_relaxed);
  }
  worker_->loop().Remove(fd_);
  ::close(fd_);
  fd_ = -1;
  worker_->MirrorDone(this);
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
    if (!out_.WriteTo(fd_)) {
      Done(true);
      return;
    }
    if (out_.empty()) {
      worker_->loop().Modify(fd_, EPOLLIN | EPOLLRDHUP, this);
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

void Worker::StartMirror(const upstream::Cluster& cluster, const std::string& request) {
  if (cluster.endpoints.empty() || mirrors_.size() >= kMaxMirrorsInFlight) {
    stats_.mirror_requests_skipped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const auto& ep = cluster.endpoints[mirror_rr_[&cluster]++ % cluster.endpoints.size()];
  std::string error;
  int fd = net::ConnectNonBlocking(ep.address, ep.port, &error);
  if (fd < 0) {
    stats_.mirror_requests_failed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  stats_.mirror_requests_total.fetch_add(1, std::memory_order_relaxed);
  mirrors_.insert(new MirrorRequest(this, fd, request));
}

void Worker::MirrorDone(MirrorRequest* mirror) {
  if (mirrors_.erase(mirror) > 0) {
    loop_.Defer([mirror] { delete mirror; });
  }
}

}  // namespace skiff::proxy
