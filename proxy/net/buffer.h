#pragma once
// A byte buffer with a read offset. Reads go straight into spare capacity (no zero-fill);
// consumed bytes are dropped lazily by moving the rest to the front.
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

namespace skiff::net {

class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  [[nodiscard]] std::string_view view() const { return {data_.get() + start_, end_ - start_}; }
  [[nodiscard]] size_t size() const { return end_ - start_; }
  [[nodiscard]] bool empty() const { return end_ == start_; }
  [[nodiscard]] size_t capacity() const { return cap_; }
  void Append(std::string_view s);
  // Room for at least `n` more bytes at the end, to fill in place and then Commit().
  char* Prepare(size_t n) {
    Reserve(n);
    return data_.get() + end_;
  }
  void Commit(size_t n) { end_ += n; }
  void Consume(size_t n);
  void Clear() { start_ = end_ = 0; }
  // Frees the memory (an idle connection keeps none).
  void Release();
  // Reads once from fd into the buffer; returns bytes read, 0 on EOF, -1 on EAGAIN, -2 on
  // error. `*filled` is set when the read used all the space offered.
  ssize_t ReadFrom(int fd, bool* filled);
  // Writes as much as possible; returns the bytes written, or -1 on a socket error.
  ssize_t WriteTo(int fd);

 private:
  void Reserve(size_t extra);
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0;
  size_t start_ = 0;
  size_t end_ = 0;
};

// Appends pieces to a Buffer in place, after one Prepare() for an upper bound of their
// total size (the caller's promise; see Bound()).
class BufferWriter {
 public:
  BufferWriter(Buffer* buf, size_t bound) : buf_(buf), start_(buf->Prepare(bound)), p_(start_) {}
  ~BufferWriter() { buf_->Commit(static_cast<size_t>(p_ - start_)); }
  BufferWriter(const BufferWriter&) = delete;
  BufferWriter& operator=(const BufferWriter&) = delete;
  BufferWriter& operator<<(std::string_view s) {
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
    return *this;
  }
  BufferWriter& operator<<(char c) {
    *p_++ = c;
    return *this;
  }
  // Decimal digits of v (at most 20 bytes).
  BufferWriter& Number(uint64_t v);
  [[nodiscard]] size_t written() const { return static_cast<size_t>(p_ - start_); }

 private:
  Buffer* buf_;
  char* start_;
  char* p_;
};

}  // namespace skiff::net
