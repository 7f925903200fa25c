// DownstreamConnection over a transport that keeps bytes of its own (as TLS keeps records the
// socket did not take), on the fake dispatcher: it must keep asking for EPOLLOUT until the
// transport has written them, or the tail of a response waits for ever.
#include "proxy/server/downstream_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "tests/unit/proxy/fakes.h"

namespace {

using skiff::net::Buffer;

// Reads the socket as it is; a write takes all the plaintext into its own pending bytes
// and sends only `room` of them (a full socket), as TlsTransport does with TLS records.
class HoardingTransport final : public skiff::net::Transport {
 public:
  explicit HoardingTransport(int fd) : fd_(fd) {}
  ~HoardingTransport() override { ::close(fd_); }
  [[nodiscard]] int fd() const override { return fd_; }
  ssize_t Read(Buffer* buf, bool* filled) override { return buf->ReadFrom(fd_, filled); }
  ssize_t Write(Buffer* buf) override {
    auto v = buf->view();
    pending_.append(v.data(), v.size());
    buf->Consume(v.size());
    size_t n = std::min(room, pending_.size());
    sent_ += pending_.substr(0, n);
    pending_.erase(0, n);
    room -= n;
    return static_cast<ssize_t>(v.size());
  }
  void ShutdownWrite() override {}
  [[nodiscard]] bool wants_write() const override { return !pending_.empty(); }
  [[nodiscard]] const std::string& sent() const { return sent_; }
  size_t room = 0;

 private:
  int fd_;
  std::string pending_;
  std::string sent_;
};

}  // namespace

TEST_CASE("downstream: asks for EPOLLOUT while the transport still holds response bytes") {
  skiff::testing::FakeContext context(
      skiff::testing::Snapshot(R"([{"directResponse":{"status":200,"body":"hello"}}])"));
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
  auto transport = std::make_unique<HoardingTransport>(fds[0]);
  HoardingTransport* t = transport.get();
  skiff::proxy::DownstreamInfo info;
  info.peer = "10.0.0.9";
  info.listener_address = "0.0.0.0";
  info.listener_bind_port = 80;
  info.listener_port = 80;
  auto conn =
      std::make_unique<skiff::proxy::DownstreamConnection>(context, std::move(transport), info);
  const std::string req = "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n";
  REQUIRE(::write(fds[1], req.data(), req.size()) == static_cast<ssize_t>(req.size()));
  t->room = 10;  // the socket takes 10 bytes of the response, then is full
  conn->OnEvents(EPOLLIN);
  context.dispatcher_.RunDeferred();
  REQUIRE(t->sent().size() == 10);
  REQUIRE(t->wants_write());
  CHECK((context.dispatcher_.interest[fds[0]] & EPOLLOUT) != 0);
  // The socket drains: the writable event sends the rest, and then no more EPOLLOUT.
  t->room = 1 << 20;
  conn->OnEvents(EPOLLOUT);
  context.dispatcher_.RunDeferred();
  CHECK(t->sent().find("hello") != std::string::npos);
  CHECK_FALSE(t->wants_write());
  CHECK((context.dispatcher_.interest[fds[0]] & EPOLLOUT) == 0);
  conn.reset();
  context.dispatcher_.RunDeferred();
  ::close(fds[1]);
}
