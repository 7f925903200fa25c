#include "proxy/net/buffer.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace skiff::net {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

void Buffer::Reserve(size_t extra) {
  if (cap_ - end_ >= extra) {
    return;
  }
  size_t used = end_ - start_;
  if (start_ > 0 && cap_ - used >= extra && start_ >= used) {
    std::memmove(data_.get(), data_.get() + start_, used);  // cheap: little is left
    start_ = 0;
    end_ = used;
    return;
  }
  size_t cap = cap_ == 0 ? 16384 : cap_;
  while (cap - used < extra) {
    cap *= 2;
  }
  // Not make_unique<char[]>: it value-initializes, zeroing every new 16 KiB buffer (a fifth
  // of a new TLS connection's instructions went to that memset).
  std::unique_ptr<char[]> grown(new char[cap]);
  if (used > 0) {
    std::memcpy(grown.get(), data_.get() + start_, used);
  }
  data_ = std::move(grown);
  cap_ = cap;
  start_ = 0;
  end_ = used;
}

void Buffer::Append(std::string_view s) {
  if (s.empty()) {
    return;
  }
  Reserve(s.size());
  std::memcpy(data_.get() + end_, s.data(), s.size());
  end_ += s.size();
}

void Buffer::Consume(size_t n) {
  start_ += n;
  if (start_ >= end_) {
    start_ = end_ = 0;
  }
}

void Buffer::Release() {
  data_.reset();
  cap_ = start_ = end_ = 0;
}

ssize_t Buffer::ReadFrom(int fd, bool* filled) {
  Reserve(kReadChunk / 4);
  size_t space = cap_ - end_;
  ssize_t n = ::read(fd, data_.get() + end_, space);
  if (n < 0) {
    *filled = false;
    return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -1 : -2;
  }
  end_ += static_cast<size_t>(n);
  *filled = static_cast<size_t>(n) == space;
  return n;
}

ssize_t Buffer::WriteTo(int fd) {
  ssize_t total = 0;
  while (!empty()) {
    auto v = view();
    ssize_t n = ::send(fd, v.data(), v.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return total;
      }
      if (errno == EINTR) {
        continue;
      }
      return -1;
    }
    total += n;
    Consume(static_cast<size_t>(n));
  }
  return total;
}

BufferWriter& BufferWriter::Number(uint64_t v) {
  auto [end, ec] = std::to_chars(p_, p_ + 20, v);
  (void)ec;
  p_ = end;
  return *this;
}

}  // namespace skiff::net
