// Data parallelism across processes with c10d, as torchrun + DDP would do it: a TCPStore
// rendezvous, ProcessGroupNCCL when built with CUDA and on a GPU, else ProcessGroupGloo; and
// gradient synchronisation in buckets whose all-reduce starts during backward.
#ifndef PAFT_TRAINER_DISTRIBUTED_H_
#define PAFT_TRAINER_DISTRIBUTED_H_

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"


namespace paft::trainer {

struct RendezvousOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Bounds the rendezvous and every collective: a lost peer surfaces as an error this soon.
  std::chrono::milliseconds timeout{60000};
  bool cuda = false;  // use NCCL (CUDA builds only)
  // Every key of the rendezvous lives under it: one per gang attempt, so that a rank which finds
  // another gang's store on its port (rank 0's port taken) cannot mix its keys into that gang's.
  std::string store_prefix = "paft";
};

// A connected process group of world_size ranks.
class ProcessGroupHandle {
 public:
  static absl::StatusOr<std::unique_ptr<ProcessGroupHandle>> Connect(const RendezvousOptions& options);
  ~ProcessGroupHandle();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  std::string backend() const { return backend_; }
  // Sums tensors across ranks in place, asynchronously; the returned callable waits.
  std::function<void()> AllReduceAsync(torch::Tensor tensor);
  void AllReduce(torch::Tensor tensor) { AllReduceAsync(std::move(tensor))(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_size_ = 1;
  std::string backend_;
};

// Averages (DDP) or sums the gradients of `params` across ranks: parameters are packed into buckets
// of about `bucket_bytes` in reverse registration order (the order backward produces them);
// hooks copy each gradient into its bucket as autograd computes it and launch the bucket's
// all-reduce as soon as the bucket is full. Call Prepare(sync) before each backward and
// Finish() after it; with sync = false (an accumulation micro-step) nothing is communicated.
// kSum is for losses that are already each rank's share of the global loss (see
// objectives.h); kAverage is DDP's convention for per-rank mean losses.
class GradientSynchronizer {
 public:
  enum class Reduction { kAverage, kSum };
  GradientSynchronizer(ProcessGroupHandle* group, std::vector<torch::Tensor> params,
                       int64_t bucket_bytes = 25 << 20, Reduction reduction = Reduction::kAverage);
  void Prepare(bool sync);
  // Waits for every bucket (launching those whose parameters got no gradient) and writes the
  // averaged gradients into .grad.
  void Finish();
  size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    torch::Tensor flat;
    size_t ready = 0;
    std::function<void()> wait;
  };
  void OnGradient(size_t param, const torch::Tensor& grad);
  void Launch(Bucket& bucket);

  ProcessGroupHandle* group_;
  Reduction reduction_;
  std::vector<torch::Tensor> params_;
  std::vector<std::pair<size_t, size_t>> where_;  // param -> (bucket, slot)
  std::vector<Bucket> buckets_;
  std::vector<bool> got_;  // this step
  bool sync_ = false;
};

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_DISTRIBUTED_H_
