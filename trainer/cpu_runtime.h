// The process-wide CPU settings a trainer runs under: its threads and its memory allocator.
//
// Threads: LibTorch (the PyPI wheel) runs elementwise ops, oneDNN (bf16) matmuls and its bundled
// MKL's fp32 matmuls on one OpenMP intra-op pool (its own libgomp), sized here.
//
// Allocator: a training step allocates and frees the same large activation buffers every step.
// glibc serves blocks above its mmap threshold (128 KiB, adapting) with fresh mmaps and trims
// freed heap tops, so every step pays page faults to zero the same memory again (measured: a
// bf16 step 3-4x slower). Blocks up to 32 MiB come from the heap and freed memory is kept for
// the next step; the peak resident memory is what the step needs either way.
#ifndef PAFT_TRAINER_CPU_RUNTIME_H_
#define PAFT_TRAINER_CPU_RUNTIME_H_

#include <cstdint>

namespace paft::trainer {

// Blocks up to this size come from the heap and are reused; larger ones are fresh mmaps, paid
// for in page faults at every allocation (glibc's largest mmap threshold, HEAP_MAX_SIZE / 2 on
// 64-bit). Buffers allocated again and again, such as the loss's chunks, stay below it.
constexpr int64_t kCpuHeapBlockBytes = int64_t{32} << 20;

// Sets LibTorch's intra-op threads to `threads` (0: OMP_NUM_THREADS when set, as a worker agent
// sets it to share the host's cores among its slots, else every core) and the allocator as
// above. Returns the intra-op thread count.
int ConfigureCpuRuntime(int threads);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_CPU_RUNTIME_H_
