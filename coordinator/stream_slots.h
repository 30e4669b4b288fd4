// How many WatchJob/StreamLogs streams each authenticated client holds open, against a limit.
#ifndef PAFT_COORDINATOR_STREAM_SLOTS_H_
#define PAFT_COORDINATOR_STREAM_SLOTS_H_

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace paft::coordinator {

class StreamSlots {
 public:
  // One open stream's slot, given back when it is destroyed.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)), identity_(std::move(other.identity_)) {}
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }

   private:
    friend class StreamSlots;
    Slot(StreamSlots* owner, std::string identity)
        : owner_(owner), identity_(std::move(identity)) {}
    void Release();

    StreamSlots* owner_ = nullptr;  // null: nothing to give back
    std::string identity_;
  };

  // 0: no limit.
  void set_limit(int per_identity) { limit_ = per_identity; }
  // A slot for one more stream of `identity` (anonymous callers: no limit); RESOURCE_EXHAUSTED
  // when it holds `limit` already.
  absl::StatusOr<Slot> Acquire(const std::string& identity);
  int open(const std::string& identity) const;

 private:
  int limit_ = 0;
  mutable std::mutex mu_;
  std::map<std::string, int> open_;  // guarded by mu_
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_STREAM_SLOTS_H_
