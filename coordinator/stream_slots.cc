#include "coordinator/stream_slots.h"

#include "absl/strings/str_cat.h"

namespace paft::coordinator {

absl::StatusOr<StreamSlots::Slot> StreamSlots::Acquire(const std::string& identity) {
  if (identity.empty() || limit_ <= 0) return Slot();
  std::lock_guard<std::mutex> lock(mu_);
  int& open = open_[identity];
  if (open >= limit_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(identity, " already holds ", open, " open watch/log streams, the limit"));
  }
  ++open;
  return Slot(this, identity);
}

int StreamSlots::open(const std::string& identity) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(identity);
  return it == open_.end() ? 0 : it->second;
}

StreamSlots::Slot& StreamSlots::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    identity_ = std::move(other.identity_);
  }
  return *this;
}

void StreamSlots::Slot::Release() {
  if (owner_ == nullptr) return;
  std::lock_guard<std::mutex> lock(owner_->mu_);
  if (--owner_->open_[identity_] <= 0) owner_->open_.erase(identity_);
  owner_ = nullptr;
}

}  // namespace paft::coordinator
