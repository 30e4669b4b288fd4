// The part the job streams (WatchJob, StreamLogs) share on gRPC's callback API: an open stream
// costs no thread. It is pumped on the WatchHub's thread — when its job is notified, when its
// last write went out, or when it asked to be woken later — and writes what its Fill() queued,
// one message at a time.
#ifndef PAFT_COORDINATOR_HUB_STREAM_H_
#define PAFT_COORDINATOR_HUB_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "common/grpc_status.h"
#include "coordinator/stream_slots.h"
#include "coordinator/watch_hub.h"

namespace paft::coordinator {

template <typename Message>
class HubStream : public grpc::ServerWriteReactor<Message> {
 public:
  // What a stream needs besides its own request.
  struct Context {
    WatchHub* hub;
    const std::atomic<bool>* shutting_down;
    StreamSlots::Slot slot;
    // Whether the caller may read this job (may block: run on the hub's thread, first).
    std::function<absl::Status()> admit;
    std::function<void(const absl::Status&)> done;  // called once with the final status
  };
  // `key`: what the stream is woken by (its job id). `resume_hint` ends the UNAVAILABLE message
  // a shutdown finishes the stream with.
  HubStream(Context context, std::string key, std::string resume_hint)
      : hub_(context.hub),
        key_(std::move(key)),
        shutting_down_(context.shutting_down),
        resume_hint_(std::move(resume_hint)),
        slot_(std::move(context.slot)),
        admit_(std::move(context.admit)),
        done_(std::move(context.done)),
        core_(std::make_shared<Core>()) {}

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(core_->mu);
    writing_ = false;
    if (!ok || cancelled_) {  // a write can complete ok after the call was cancelled
      FinishLocked(absl::CancelledError("client went away"));
      return;
    }
    queue_.pop_front();
    if (!queue_.empty()) {
      StartWriteLocked();
      return;
    }
    hub_->Wake(handle_);  // Fill() may read files or SQLite: on the hub's thread, not this one
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(core_->mu);
    cancelled_ = true;
    // A write in flight completes and finishes the stream from OnWriteDone.
    if (!writing_) FinishLocked(absl::CancelledError("client went away"));
  }

  void OnDone() override {
    hub_->Unwatch(handle_);
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      core_->stream = nullptr;
    }
    delete this;
  }

 protected:
  // Called by the subclass's constructor, last: registers with the hub and asks for the first
  // pump.
  void Start() {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->stream = this;
    std::weak_ptr<Core> weak = core_;
    handle_ = hub_->Watch(key_, [weak] {
      if (auto core = weak.lock()) {
        std::lock_guard<std::mutex> lock(core->mu);
        if (core->stream != nullptr) core->stream->PumpLocked();
      }
    });
    hub_->Wake(handle_);
  }

  // Queues what is to be written next (or finishes the stream, or asks for a later wake-up with
  // WakeLater, or does nothing: the next notification of the key pumps again). Called with the
  // stream's lock held, on the hub's thread, only when nothing is queued.
  virtual void FillLocked() = 0;

  void WakeLater(absl::Duration delay) { hub_->Wake(handle_, delay); }

  void FinishLocked(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    queue_.clear();
    slot_ = StreamSlots::Slot();  // given back before the client can see the end and reopen
    done_(status);
    this->Finish(ToGrpcStatus(status));
  }

  std::deque<Message> queue_;  // guarded by the stream's lock

 private:
  // What the hub's wake-up reaches; outlives the reactor (a wake-up may race OnDone).
  struct Core {
    std::mutex mu;
    HubStream* stream = nullptr;  // null until started and once done
  };

  void PumpLocked() {
    if (finished_ || writing_) return;  // a finished write pumps again
    if (cancelled_) {
      FinishLocked(absl::CancelledError("client went away"));
      return;
    }
    if (shutting_down_->load()) {
      FinishLocked(absl::UnavailableError("coordinator shutting down; " + resume_hint_));
      return;
    }
    if (admit_) {
      const absl::Status admitted = std::exchange(admit_, nullptr)();
      if (!admitted.ok()) {
        FinishLocked(admitted);
        return;
      }
    }
    if (queue_.empty()) FillLocked();
    if (!finished_ && !queue_.empty()) StartWriteLocked();
  }

  void StartWriteLocked() {
    writing_ = true;
    this->StartWrite(&queue_.front());
  }

  WatchHub* const hub_;
  const std::string key_;
  const std::atomic<bool>* const shutting_down_;
  const std::string resume_hint_;
  StreamSlots::Slot slot_;               // given back when the stream finishes
  std::function<absl::Status()> admit_;  // run once, by the first pump
  std::function<void(const absl::Status&)> done_;
  std::shared_ptr<Core> core_;
  uint64_t handle_ = 0;
  bool writing_ = false;    // guarded by the stream's lock
  bool finished_ = false;   // guarded by the stream's lock
  bool cancelled_ = false;  // guarded by the stream's lock
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_HUB_STREAM_H_
