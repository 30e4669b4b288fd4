// The JobService's streams (WatchJob, StreamLogs) over a real in-process gRPC server, on a real
// JobManager and store: what they deliver, when they end, and that open streams cost no thread.
#include <dirent.h>

#include <fstream>
#include <memory>
#include <thread>

#include "common/file_util.h"
#include "common/grpc_server.h"
#include "coordinator/log_stream.h"
#include "coordinator/services.h"
#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

int ThreadCount() {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/task");
  while (dirent* e = ::readdir(dir)) n += e->d_name[0] != '.';
  ::closedir(dir);
  return n;
}

class JobStreamsTest : public JobManagerTest {
 protected:
  void SetUp() override {
    JobManagerTest::SetUp();
    manager_->set_watch_hub(&hub_);
    service_ = std::make_unique<JobServiceImpl>(manager_.get(), registry_.get(), &hub_,
                                                metrics_.get(), &shutting_down_);
    auto server = StartGrpcServer("127.0.0.1:0", {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    stub_ = paft::v1::JobService::NewStub(MakeChannel("127.0.0.1:" + std::to_string(server->port)));
  }

  void TearDown() override {
    shutting_down_ = true;
    hub_.NotifyAll();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // A job whose output folder exists (StreamLogs reads its ranks' logs there).
  Job SubmitWithOutput(const std::string& request_id) {
    paft::v1::SubmitJobRequest request;
    request.set_request_id(request_id);
    *request.mutable_spec() = *ParseJobSpec(kSpec);
    request.mutable_spec()->set_output_dir(dir_.Join("out"));
    auto job = manager_->SubmitJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return *job;
  }

  std::unique_ptr<grpc::ClientReader<paft::v1::JobEvent>> Watch(grpc::ClientContext* context,
                                                                const std::string& job_id,
                                                                int64_t after_seq = 0) {
    paft::v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_seq(after_seq);
    return stub_->WatchJob(context, request);
  }

  WatchHub hub_;
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<JobServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<paft::v1::JobService::Stub> stub_;
};

TEST_F(JobStreamsTest, WatchReplaysTheHistoryFollowsTheJobAndEndsWithIt) {
  const Job job = Submit("r1");
  const int64_t stored = manager_->EventsAfter(job.job_id(), 0, 1000)->back().seq();
  grpc::ClientContext context;
  auto reader = Watch(&context, job.job_id());
  paft::v1::JobEvent event;
  for (int64_t seq = 1; seq <= stored; ++seq) {  // the history, in order
    ASSERT_TRUE(reader->Read(&event));
    EXPECT_EQ(event.seq(), seq);
  }
  // Then what happens next: the scheduler places the SFT branch once its pool has workers.
  Register("s1", "sft", 2);
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.seq(), stored + 1);
  EXPECT_EQ(event.branch(), paft::v1::BRANCH_KIND_SFT);
  // Cancelling ends the job, and the watch after its last event.
  paft::v1::CancelJobRequest cancel;
  cancel.set_job_id(job.job_id());
  ASSERT_TRUE(manager_->CancelJob(cancel).ok());
  int64_t last = event.seq();
  while (reader->Read(&event)) {
    EXPECT_EQ(event.seq(), last + 1);
    last = event.seq();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(event.job_state(), paft::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(last, manager_->EventsAfter(job.job_id(), 0, 1000)->back().seq());
}

TEST_F(JobStreamsTest, ProgressFollowsTheHistoryAndAnUnknownJobIsNotFound) {
  const Job job = Submit("r1");
  const std::string sft = Register("s1", "sft", 2);
  const auto starts = Take(sft);
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_TRUE(Progress(starts[0].start().task_id(), 3, 10, 1.5).ok());
  const int64_t stored = manager_->EventsAfter(job.job_id(), 0, 1000)->back().seq();
  grpc::ClientContext context;
  auto reader = Watch(&context, job.job_id(), stored);
  paft::v1::JobEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.type(), "Progress");
  EXPECT_EQ(event.seq(), stored);
  EXPECT_EQ(event.progress().step(), 3);
  ASSERT_TRUE(Progress(starts[0].start().task_id(), 4, 10, 1.25).ok());  // woken by the report
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.type(), "Progress");
  EXPECT_EQ(event.progress().step(), 4);
  context.TryCancel();
  while (reader->Read(&event)) {
  }

  grpc::ClientContext unknown_context;
  auto unknown = Watch(&unknown_context, "no-such-job");
  EXPECT_FALSE(unknown->Read(&event));
  EXPECT_EQ(unknown->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(JobStreamsTest, OpenWatchesCostNoThreads) {
  const Job job = Submit("r1");
  const int64_t stored = manager_->EventsAfter(job.job_id(), 0, 1000)->back().seq();
  constexpr int kWatches = 300;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<paft::v1::JobEvent>>> readers;
  const int before = ThreadCount();
  paft::v1::JobEvent event;
  for (int i = 0; i < kWatches; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(Watch(contexts.back().get(), job.job_id(), stored - 1));
    ASSERT_TRUE(readers.back()->Read(&event));  // open and served
  }
  EXPECT_EQ(hub_.watchers(), static_cast<size_t>(kWatches));
  // A synchronous handler holds a thread per open stream (300 more); these hold none.
  EXPECT_LT(ThreadCount() - before, 16);
  // One event wakes every watcher of the job.
  Register("s1", "sft", 2);
  for (auto& reader : readers) {
    ASSERT_TRUE(reader->Read(&event));
    EXPECT_EQ(event.seq(), stored + 1);
  }
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
}

TEST_F(JobStreamsTest, ShutdownEndsOpenStreamsWithUnavailable) {
  const Job job = Submit("r1");
  const int64_t stored = manager_->EventsAfter(job.job_id(), 0, 1000)->back().seq();
  grpc::ClientContext context;
  auto reader = Watch(&context, job.job_id(), stored);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let it reach the waiting state
  shutting_down_ = true;
  hub_.NotifyAll();
  paft::v1::JobEvent event;
  EXPECT_FALSE(reader->Read(&event));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("resume the watch"));
}

TEST_F(JobStreamsTest, LogsAreFollowedInOrderUntilTheAttemptEnds) {
  const Job job = SubmitWithOutput("r1");
  paft::v1::StreamLogsRequest request;
  request.set_job_id(job.job_id());
  request.set_branch(paft::v1::BRANCH_KIND_SFT);
  request.set_rank(1);
  request.set_follow(true);
  grpc::ClientContext context;
  auto reader = stub_->StreamLogs(&context, request);  // before the branch has started: waits

  const std::string sft = Register("s1", "sft", 2);
  const auto starts = Take(sft);
  ASSERT_EQ(starts.size(), 2u);
  const std::string log = dir_.Join("out/sft/logs/attempt-1/rank-1.log");
  ASSERT_TRUE(MakeDirs(dir_.Join("out/sft/logs/attempt-1")).ok());
  // More than one chunk, then more written while it is followed.
  std::string first(LogStream::kChunkBytes + 1000, 'a');
  for (size_t i = 0; i < first.size(); i += 97) first[i] = static_cast<char>('0' + i % 10);
  { std::ofstream(log, std::ios::binary) << first; }
  std::string received;
  paft::v1::LogChunk chunk;
  while (received.size() < first.size() && reader->Read(&chunk)) {
    EXPECT_EQ(chunk.attempt(), 1);
    EXPECT_EQ(chunk.offset(), static_cast<int64_t>(received.size()));
    received += chunk.data();
  }
  EXPECT_EQ(received, first);
  { std::ofstream(log, std::ios::binary | std::ios::app) << "step 10 done\n"; }
  ASSERT_TRUE(reader->Read(&chunk));
  EXPECT_EQ(chunk.data(), "step 10 done\n");
  // The attempt ends: what was written before is delivered, then the stream ends.
  { std::ofstream(log, std::ios::binary | std::ios::app) << "last words\n"; }
  Complete(starts);
  ASSERT_TRUE(reader->Read(&chunk));
  EXPECT_EQ(chunk.data(), "last words\n");
  EXPECT_FALSE(reader->Read(&chunk));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(JobStreamsTest, LogsOfARankThatWroteNothingAreNotFoundOnceItsAttemptEnded) {
  const Job job = SubmitWithOutput("r1");
  const std::string sft = Register("s1", "sft", 2);
  Complete(Take(sft));
  paft::v1::StreamLogsRequest request;
  request.set_job_id(job.job_id());
  request.set_branch(paft::v1::BRANCH_KIND_SFT);
  request.set_follow(true);
  grpc::ClientContext context;
  auto reader = stub_->StreamLogs(&context, request);
  paft::v1::LogChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("rank-0.log"));
}

}  // namespace
}  // namespace paft::coordinator
