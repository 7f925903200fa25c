// Arena blocks for snapshots: large blocks 2 MiB-aligned so that huge pages can back them.
#include <google/protobuf/arena.h>
#include <sys/mman.h>

#include <cstdint>
#include <new>

#include "operator/translate/translate.h"

namespace skiff::translate {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

void* AllocateArenaBlock(size_t size) {
  if (size < kHugePage) {
    return ::operator new(size);
  }
  // Map a 2 MiB-aligned range, so that the kernel can back it with huge pages.
  size_t length = size + kHugePage;
  void* mapped = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) {
    throw std::bad_alloc();
  }
  auto start = reinterpret_cast<uintptr_t>(mapped);
  uintptr_t block = (start + kHugePage - 1) & ~(kHugePage - 1);
  uintptr_t block_end = (block + size + 4095) & ~uintptr_t{4095};
  if (block > start) {
    munmap(mapped, block - start);
  }
  if (start + length > block_end) {
    munmap(reinterpret_cast<void*>(block_end), start + length - block_end);
  }
  (void)madvise(reinterpret_cast<void*>(block), size, MADV_HUGEPAGE);  // a hint only
  return reinterpret_cast<void*>(block);
}

void DeallocateArenaBlock(void* block, size_t size) {
  if (size < kHugePage) {
    ::operator delete(block);
  } else {
    munmap(block, size);
  }
}

}  // namespace

google::protobuf::ArenaOptions SnapshotArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 4096;
  options.max_block_size = kHugePage;
  options.block_alloc = AllocateArenaBlock;
  options.block_dealloc = DeallocateArenaBlock;
  return options;
}

}  // namespace skiff::translate
