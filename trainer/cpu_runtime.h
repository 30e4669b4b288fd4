// The process-wide CPU settings a trainer runs under: its threads and its memory allocator.
//
// Threads: LibTorch runs elementwise ops and oneDNN (bf16) matmuls on its OpenMP intra-op pool,
// and fp32 matmuls in the system BLAS (OpenBLAS here), which keeps a pool of its own; both at
// full width oversubscribe the cores (measured on 2 cores: fp32 steps 1.6x slower). With more
// than one intra-op thread, OpenBLAS is kept to one.
//
// Allocator: a training step allocates and frees the same large activation buffers every step.
// glibc serves blocks above its mmap threshold (128 KiB, adapting) with fresh mmaps and trims
// freed heap tops, so every step pays page faults to zero the same memory again (measured: a
// bf16 step 3-4x slower). Blocks up to 32 MiB come from the heap and freed memory is kept for
// the next step; the peak resident memory is what the step needs either way.
#ifndef PAFT_TRAINER_CPU_RUNTIME_H_
#define PAFT_TRAINER_CPU_RUNTIME_H_

namespace paft::trainer {

// Sets LibTorch's intra-op threads to `threads` (0: OMP_NUM_THREADS when set, as a worker agent
// sets it to share the host's cores among its slots, else every core), the BLAS's own pool to one
// thread when that is more than one, and the allocator as above. Returns the intra-op thread
// count.
int ConfigureCpuRuntime(int threads);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_CPU_RUNTIME_H_
