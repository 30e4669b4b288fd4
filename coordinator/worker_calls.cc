// The WorkerService side: registration (and the ranks an agent still runs), heartbeats, which
// identity may act as which worker, and progress reports with the ETA.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

absl::StatusOr<paft::v1::RegisterWorkerResponse> JobManager::RegisterWorker(
    const paft::v1::RegisterWorkerRequest& request) {
  if (request.name().empty()) return absl::InvalidArgumentError("name: is required");
  if (request.pool().empty()) return absl::InvalidArgumentError("pool: is required");
  if (request.devices() < 1 || request.devices() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("devices: must be between 1 and 1024, got ", request.devices()));
  }
  if (request.device_info_size() != 0 && request.device_info_size() != request.devices()) {
    return absl::InvalidArgumentError(absl::StrCat("device_info: has ", request.device_info_size(),
                                                   " entries for ", request.devices(), " devices"));
  }
  for (int i = 0; i < request.device_info_size(); ++i) {
    const auto& device = request.device_info(i);
    if (device.name().size() > 64 || device.model().size() > 256 || device.memory_bytes() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device_info[", i, "]: name over 64 or model over 256 characters, or negative memory"));
    }
  }
  if (request.address().empty()) return absl::InvalidArgumentError("address: is required");
  MutexLock lock(&mu_);
  // Tasks of the agent's previous registration that it does not report any more are lost.
  std::vector<std::string> vanished;
  for (auto& [id, task] : tasks_) {
    const bool same_agent = task.slot.worker_name == request.name() && !task.succeeded;
    const bool reported =
        std::find(request.running_task_ids().begin(), request.running_task_ids().end(), id) !=
        request.running_task_ids().end();
    if (same_agent && !reported) vanished.push_back(id);
  }
  const std::string worker_id = registry_->Register(request, clock_->Now());
  const int capacity = registry_->PoolCapacity(request.pool());
  if (capacity > pool_high_water_[request.pool()]) {
    if (absl::Status s = store_->RaisePoolCapacity(request.pool(), capacity); !s.ok()) {
      PAFT_LOG(ERROR) << "cannot store the capacity of pool " << request.pool() << ": " << s;
    } else {
      pool_high_water_[request.pool()] = capacity;
    }
  }
  paft::v1::RegisterWorkerResponse response;
  response.set_worker_id(worker_id);
  response.set_lease_ttl_ms(absl::ToInt64Milliseconds(registry_->lease_ttl()));
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  std::map<std::string, int> devices;
  for (const auto& running : request.running_tasks()) devices[running.task_id()] = running.device();
  for (const std::string& id : request.running_task_ids()) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
      // Unknown: a rank of a gang recovered from the store (adopt it), or of nothing (stop it).
      auto device = devices.find(id);
      if (device == devices.end() || !AdoptLocked(id, worker_id, request.name(), device->second)) {
        response.add_stop_task_ids(id);
      }
      continue;
    }
    if (!it->second.slot.worker_name.empty() && it->second.slot.worker_name != request.name()) {
      PAFT_LOG(WARNING) << "worker " << request.name() << " claims rank " << id << " of worker "
                        << it->second.slot.worker_name << ": told to stop it";
      response.add_stop_task_ids(id);
      continue;
    }
    if (it->second.succeeded) continue;  // exited 0, its report pending: holds no device
    if (it->second.stopping) {
      response.add_stop_task_ids(id);
      continue;
    }
    it->second.slot.worker_id = worker_id;  // the running rank, under the agent's new id
    it->second.slot.worker_name = request.name();
    auto device = devices.find(id);
    if (it->second.slot.device < 0 && device != devices.end()) {
      it->second.slot.device = device->second;  // adopted from a report, before its agent
    }
    registry_->Occupy(worker_id, it->second.slot.device);
  }
  for (const std::string& id : vanished) {
    auto it = tasks_.find(id);
    if (it != tasks_.end()) {
      HandleTaskEndLocked(it->second, false, false, "WorkerRestarted",
                          "the worker agent restarted without this rank");
    }
  }
  PAFT_LOG(INFO) << "worker " << worker_id << " registered: pool " << request.pool() << ", "
                 << request.devices() << " device(s), address " << request.address();
  ScheduleLocked();
  return response;
}

absl::StatusOr<paft::v1::HeartbeatResponse> JobManager::Heartbeat(
    const paft::v1::HeartbeatRequest& request) {
  PAFT_RETURN_IF_ERROR(registry_->Heartbeat(request.worker_id(), clock_->Now()));
  paft::v1::HeartbeatResponse response;
  response.set_lease_ttl_ms(absl::ToInt64Milliseconds(registry_->lease_ttl()));
  return response;
}

absl::Status JobManager::AuthorizeWorker(const Principal& caller, const std::string& worker_id) {
  const std::optional<std::string> name = registry_->NameOf(worker_id);
  if (!name) {
    // Answered here, not by the call: ids are predictable, and the call must not find one that
    // appears meanwhile.
    if (caller.role == Role::kAdmin) return absl::OkStatus();
    return absl::NotFoundError(
        absl::StrCat("worker '", worker_id, "' is not registered (lease expired?): re-register"));
  }
  if (caller.MayActAs(*name)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("identity '", caller.identity, "' may not act as worker '", *name, "'"));
}

absl::Status JobManager::AuthorizeTask(const Principal& caller, const std::string& task_id) {
  if (caller.role == Role::kAdmin) return absl::OkStatus();
  MutexLock lock(&mu_);
  auto it = tasks_.find(task_id);
  std::string name;
  if (it != tasks_.end()) {
    name = it->second.slot.worker_name;
  } else {
    // Not adopted yet: only its agent's registration may adopt it for an authenticated worker.
    // Unknown: NOT_FOUND here, so that a rank scheduled meanwhile cannot be reported for.
    const std::optional<TaskKey> key = ParseTaskId(task_id);
    if (!key || !awaiting_adoption_.count({key->job_id, key->branch})) {
      return absl::NotFoundError(absl::StrCat("task '", task_id, "' is not active"));
    }
  }
  if (name.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "rank '", task_id, "' is not bound to a worker yet: its agent must re-register first"));
  }
  if (caller.MayActAs(name)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("identity '", caller.identity,
                                                  "' may not report for rank '", task_id,
                                                  "' of worker '", name, "'"));
}

absl::StatusOr<JobManager::TaskRecord*> JobManager::FindTaskLocked(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  // A report from a rank of a recovered gang (after a coordinator restart) adopts it: its exit
  // or checkpoint may arrive before its agent re-registers, or after the rank ended.
  if (it == tasks_.end() && AdoptLocked(task_id, "", "", -1)) it = tasks_.find(task_id);
  if (it == tasks_.end()) {
    return absl::NotFoundError(absl::StrCat("task '", task_id, "' is not active"));
  }
  return &it->second;
}

absl::Status JobManager::ReportProgress(const paft::v1::ReportProgressRequest& request) {
  MutexLock lock(&mu_);
  PAFT_ASSIGN_OR_RETURN(TaskRecord * task, FindTaskLocked(request.task_id()));
  PAFT_ASSIGN_OR_RETURN(JobRecord * record, FindLocked(task->job_id));
  if (task->stopping || Branch(record->job, task->branch).attempt() != task->attempt) {
    return absl::OkStatus();  // a rank on its way out
  }
  task->last_progress = clock_->Now();
  if (Branch(record->job, task->branch).state() == paft::v1::BRANCH_STATE_SCHEDULED) {
    Change change = BeginChange(*record);
    const bool search = task->branch == paft::v1::BRANCH_KIND_MERGE_SEARCH;
    SetBranchState(change, task->branch, paft::v1::BRANCH_STATE_RUNNING,
                   search ? "Searching" : "Training",
                   search ? "ranks started evaluating merge candidates" : "ranks started training");
    PAFT_RETURN_IF_ERROR(CommitLocked(*record, std::move(change)));
  }
  if (task->rank != 0) return absl::OkStatus();  // rank 0 speaks for the gang
  // Progress is not a transition: it changes the record in place and is flushed periodically.
  BranchStatus* b = MutableBranch(record->job, task->branch);
  b->set_step(request.step());
  b->set_total_steps(request.total_steps());
  b->set_loss(request.loss());
  b->set_tokens_per_second(request.tokens_per_second());
  b->mutable_metrics()->clear();
  b->mutable_metrics()->insert(request.metrics().begin(), request.metrics().end());
  // ETA from the step rate since the attempt's first report (which excludes start-up time).
  const absl::Time now = clock_->Now();
  RateOrigin& origin = record->rate[task->branch];
  if (origin.attempt != task->attempt || request.step() < origin.step) {
    origin = RateOrigin{task->attempt, request.step(), now};
  }
  const int64_t done = request.step() - origin.step;
  const int64_t left = std::max<int64_t>(0, request.total_steps() - request.step());
  b->set_eta_seconds(done > 0 ? absl::ToDoubleSeconds(now - origin.time) / done * left : 0.0);
  record->progress_dirty = true;
  ++record->progress_version;
  NotifyWatchers(task->job_id);
  return absl::OkStatus();
}

}  // namespace paft::coordinator
