#include "trainer/distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/failure.h"

namespace paft::trainer {

namespace {

// Whether another process listens on `port` on this host: the bind c10d's store server is about to
// make (all addresses, SO_REUSEADDR as libuv sets it), made and released first. The store's own
// bind can still lose a race; its EADDRINUSE is told below.
bool PortTaken(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool taken =
      ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 && errno == EADDRINUSE;
  ::close(fd);
  return taken;
}

absl::Status PortInUse(const RendezvousOptions& options, absl::string_view detail) {
  return MarkFailure(
      absl::UnavailableError(absl::StrCat("rank 0 cannot listen on rendezvous port ",
                                          options.master_port, " of ", options.master_addr,
                                          ": another process on this host holds it", detail)),
      Failure::kPortInUse);
}

}  // namespace

struct ProcessGroupHandle::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  // ProcessGroupGloo and ProcessGroupNCCL are c10d Backends; collectives are called on them
  // directly (a c10d::ProcessGroup would only dispatch to one of them).
  c10::intrusive_ptr<c10d::Backend> group;
};

ProcessGroupHandle::~ProcessGroupHandle() = default;

absl::StatusOr<std::unique_ptr<ProcessGroupHandle>> ProcessGroupHandle::Connect(
    const RendezvousOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is not within world size ", options.world_size));
  }
  auto handle = std::unique_ptr<ProcessGroupHandle>(new ProcessGroupHandle());
  handle->impl_ = std::make_unique<Impl>();
  handle->rank_ = options.rank;
  handle->world_size_ = options.world_size;
  if (options.rank == 0 && PortTaken(options.master_port)) return PortInUse(options, "");
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(options.master_port);
    store_options.isServer = options.rank == 0;
    store_options.numWorkers = static_cast<size_t>(options.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = options.timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
    handle->impl_->store = c10::make_intrusive<c10d::PrefixStore>(options.store_prefix, tcp);
#ifdef USE_C10D_NCCL
    if (options.cuda) {
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout;
      handle->impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          handle->impl_->store, options.rank, options.world_size, nccl_options);
      handle->backend_ = "nccl";
      return handle;
    }
#endif
    auto gloo_options = c10d::ProcessGroupGloo::Options::create();
    gloo_options->timeout = options.timeout;
    const bool loopback = options.master_addr == "127.0.0.1" || options.master_addr == "localhost";
    gloo_options->devices.push_back(
        loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                 : c10d::ProcessGroupGloo::createDefaultDevice());
    handle->impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
        handle->impl_->store, options.rank, options.world_size, gloo_options);
    handle->backend_ = "gloo";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (options.rank == 0 && (absl::StrContains(what, "EADDRINUSE") ||
                              absl::StrContains(what, "address already in use"))) {
      return PortInUse(options, absl::StrCat(" (", what.substr(0, what.find('\n')), ")"));
    }
    return absl::UnavailableError(absl::StrCat("rendezvous of rank ", options.rank, " of ",
                                               options.world_size, " at ", options.master_addr,
                                               ":", options.master_port, " failed: ", what));
  }
  return handle;
}

std::function<void()> ProcessGroupHandle::AllReduceAsync(torch::Tensor tensor) {
  std::vector<at::Tensor> tensors = {tensor};
  auto work = impl_->group->allreduce(tensors);
  return [work]() { work->wait(); };
}

GradientSynchronizer::GradientSynchronizer(ProcessGroupHandle* group,
                                           std::vector<torch::Tensor> params,
                                           int64_t bucket_bytes, Reduction reduction)
    : group_(group), reduction_(reduction), params_(std::move(params)) {
  where_.resize(params_.size());
  got_.assign(params_.size(), false);
  // Reverse order: the last layers' gradients come first in backward.
  int64_t bytes = bucket_bytes;
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t size = params_[k].numel() * params_[k].element_size();
    if (buckets_.empty() || bytes + size > bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    where_[k] = {buckets_.size() - 1, b.params.size()};
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(k);
    bytes += size;
  }
  for (auto& b : buckets_) {
    const int64_t total = b.offsets.back() + params_[b.params.back()].numel();
    b.flat = torch::zeros({total}, params_[b.params[0]].options().requires_grad(false));
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    params_[k].register_hook([this, k](torch::Tensor grad) {
      OnGradient(k, grad);
      return grad;
    });
  }
}

void GradientSynchronizer::Prepare(bool sync) {
  sync_ = sync && group_->world_size() > 1;
  std::fill(got_.begin(), got_.end(), false);
  for (auto& b : buckets_) {
    b.ready = 0;
    b.wait = nullptr;
  }
}

void GradientSynchronizer::OnGradient(size_t k, const torch::Tensor& grad) {
  if (!sync_ || got_[k]) return;
  got_[k] = true;
  auto [bucket_index, slot] = where_[k];
  Bucket& b = buckets_[bucket_index];
  torch::NoGradGuard no_grad;
  // The gradient that .grad will hold after this backward: what earlier micro-steps accumulated
  // plus this one.
  torch::Tensor full = params_[k].grad().defined() ? params_[k].grad() + grad : grad;
  b.flat.narrow(0, b.offsets[slot], full.numel()).copy_(full.reshape({-1}));
  if (++b.ready == b.params.size()) Launch(b);
}

void GradientSynchronizer::Launch(Bucket& bucket) {
  if (reduction_ == Reduction::kAverage) bucket.flat.div_(group_->world_size());
  bucket.wait = group_->AllReduceAsync(bucket.flat);
}

void GradientSynchronizer::Finish() {
  if (!sync_) return;
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    if (!b.wait) {
      // Some parameters got no gradient this step: contribute what .grad holds (or zeros).
      for (size_t slot = 0; slot < b.params.size(); ++slot) {
        const size_t k = b.params[slot];
        if (got_[k]) continue;
        auto view = b.flat.narrow(0, b.offsets[slot], params_[k].numel());
        if (params_[k].grad().defined()) {
          view.copy_(params_[k].grad().reshape({-1}));
        } else {
          view.zero_();
        }
      }
      Launch(b);
    }
  }
  for (auto& b : buckets_) {
    b.wait();
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      const size_t k = b.params[slot];
      auto reduced = b.flat.narrow(0, b.offsets[slot], params_[k].numel()).view(params_[k].sizes());
      if (params_[k].grad().defined()) {
        params_[k].mutable_grad().copy_(reduced);
      } else {
        params_[k].mutable_grad() = reduced.clone();
      }
    }
  }
  sync_ = false;
}

}  // namespace paft::trainer
