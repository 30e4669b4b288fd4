// Data parallelism over real processes (Gloo on loopback): 2 ranks with global batch B follow
// the loss curve of 1 rank with batch B, and a dead peer makes the survivor fail fast.
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/token_dataset.h"
#include "nlohmann/json.hpp"
#include "paft/v1/worker.pb.h"
#include "tests/testing/adapters.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;


// Loss of each progress event in a trainer's output.
std::vector<double> Losses(const std::string& output) {
  std::vector<double> out;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (line.substr(0, 11) != "PAFT_EVENT ") continue;
    auto j = nlohmann::json::parse(line.substr(11), nullptr, false);
    if (!j.is_discarded() && j["type"] == "progress") out.push_back(j["loss"]);
  }
  return out;
}

class DdpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    ASSERT_EQ(testing::RunCommand({PAFT_MAKE_TOY_MODEL, "--out=" + dir_.Join("base"),
                                   "--vocab_size=48", "--hidden_size=32", "--intermediate_size=64",
                                   "--layers=2", "--heads=4", "--kv_heads=2", "--dtype=float32"},
                                  &out),
              0)
        << out;
    // Equal-length examples: per-rank token means average to the global token mean exactly.
    std::vector<TokenExample> examples;
    for (uint32_t i = 0; i < 32; ++i) {
      examples.push_back({{3 + i % 7, 4 + i % 5, 5 + i % 3}, {10 + i % 9, 20 + i % 4, 2}, {}});
    }
    ASSERT_TRUE(WriteTokenDataset(dir_.Join("train.paftds"), DatasetKind::kSft, examples).ok());
  }

  std::string WriteTask(const std::string& name, int rank, int world, int batch, int port,
                        int steps, int every = 0, double dropout = 0.0,
                        const std::string& resume_from = "") {
    return SaveTask(MakeTask(name, rank, world, batch, port, steps, every, dropout, resume_from));
  }

  v1::Task MakeTask(const std::string& name, int rank, int world, int batch, int port, int steps,
                    int every = 0, double dropout = 0.0, const std::string& resume_from = "") {
    v1::Task task;
    task.set_task_id(name);
    task.set_rank(rank);
    task.set_world_size(world);
    task.set_master_addr("127.0.0.1");
    task.set_master_port(port);
    task.set_base_model(dir_.Join("base"));
    task.set_checkpoint_dir(dir_.Join(name + "/checkpoints"));
    task.set_branch(v1::BRANCH_KIND_SFT);
    auto* spec = task.mutable_spec();
    spec->mutable_sft();
    spec->mutable_dataset()->set_path(dir_.Join("train.paftds"));
    spec->mutable_lora()->set_r(4);
    spec->mutable_lora()->set_alpha(8);
    spec->mutable_lora()->add_target_modules("q_proj");
    spec->mutable_lora()->add_target_modules("v_proj");
    spec->mutable_lora()->add_target_modules("down_proj");
    spec->mutable_optimizer()->set_learning_rate(1e-2);
    spec->mutable_optimizer()->set_lr_schedule("constant");
    spec->mutable_batch()->set_per_device_batch_size(batch);
    spec->mutable_batch()->set_gradient_accumulation_steps(2);
    spec->set_max_steps(steps);
    spec->set_seed(5);
    spec->mutable_checkpoint()->set_every_steps(every);
    spec->mutable_checkpoint()->set_keep_last(2);
    spec->mutable_lora()->set_dropout(dropout);
    spec->set_precision("fp32");
    task.set_resume_from(resume_from);
    return task;
  }

  std::string SaveTask(const v1::Task& task) {
    const std::string& name = task.task_id();
    const int rank = task.rank();
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(task, &json);
    const std::string path = dir_.Join(absl::StrCat(name, "-rank", rank, ".json"));
    EXPECT_TRUE(WriteFileAtomic(path, json).ok());
    return path;
  }

  testing::TempDir dir_;
};

TEST_F(DdpTest, TwoRanksFollowTheSingleRankLossCurve) {
  std::string single;
  ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                 "--task_file=" + WriteTask("one", 0, 1, 4, 0, 5)},
                                &single),
            0)
      << single;
  const int port = testing::FreePort();
  const std::string t0 = WriteTask("two", 0, 2, 2, port, 5), t1 = WriteTask("two", 1, 2, 2, port, 5);
  testing::ChildProcess r0({PAFT_WORKER, "train", "--threads=1", "--task_file=" + t0}, {},
                           dir_.Join("r0.log"));
  testing::ChildProcess r1({PAFT_WORKER, "train", "--threads=1", "--task_file=" + t1}, {},
                           dir_.Join("r1.log"));
  for (auto* r : {&r0, &r1}) {
    auto status = r->Wait(absl::Seconds(120));
    ASSERT_TRUE(status.has_value());
    ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << *ReadFileToString(dir_.Join("r0.log")) << *ReadFileToString(dir_.Join("r1.log"));
  }
  auto a = Losses(single), b = Losses(*ReadFileToString(dir_.Join("r0.log")));
  ASSERT_EQ(a.size(), 5u) << single;
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::max(1.0, a[i])) << "step " << i;
  EXPECT_NE(a.front(), a.back());  // it trained
  std::cerr << "losses (1 rank): " << nlohmann::json(a).dump() << "\nlosses (2 ranks): " << nlohmann::json(b).dump() << "\n";
  // Same final adapter, within float tolerance.
  EXPECT_LT(testing::MaxAdapterDifference(dir_.Join("one/checkpoints/checkpoint-5"),
                                          dir_.Join("two/checkpoints/checkpoint-5")),
            1e-5);
  // Only rank 0 writes checkpoints.
  EXPECT_FALSE(PathExists(dir_.Join("two/checkpoints/checkpoint-5.staging")));
}

// On examples of different lengths, the loss of a step is normalised by the completion tokens
// of the whole global batch (every rank, every accumulation step): 1 rank x batch 4, 2 ranks x
// batch 2 and 1 rank x batch 2 x accumulation 2 train the same adapter, with and without L1.
TEST_F(DdpTest, GlobalBatchOfVariableLengthsTrainsTheSameWeightsHoweverSplit) {
  std::vector<TokenExample> examples;
  for (uint32_t i = 0; i < 24; ++i) {
    std::vector<uint32_t> prompt, completion;
    for (uint32_t k = 0; k < 1 + (i * 7) % 5; ++k) prompt.push_back(3 + (i + k) % 11);
    for (uint32_t k = 0; k < 1 + (i * 5) % 9; ++k) completion.push_back(14 + (i * 3 + k) % 13);
    completion.push_back(2);
    examples.push_back({prompt, completion, {}});
  }
  ASSERT_TRUE(WriteTokenDataset(dir_.Join("ragged.paftds"), DatasetKind::kSft, examples).ok());
  constexpr int kSteps = 4;
  for (double l1 : {0.0, 1e-3}) {
    const std::string tag = l1 > 0 ? "l1" : "plain";
    auto task = [&](const std::string& name, int rank, int world, int batch, int accum, int port) {
      v1::Task t = MakeTask(name + "-" + tag, rank, world, batch, port, kSteps);
      t.mutable_spec()->mutable_dataset()->set_path(dir_.Join("ragged.paftds"));
      t.mutable_spec()->mutable_batch()->set_gradient_accumulation_steps(accum);
      t.mutable_spec()->mutable_sft()->set_l1_lambda(l1);
      return SaveTask(t);
    };
    std::string single, out;
    ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                   "--task_file=" + task("b4", 0, 1, 4, 1, 0)}, &single), 0)
        << single;
    ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                   "--task_file=" + task("b2a2", 0, 1, 2, 2, 0)}, &out), 0) << out;
    // The reported step losses agree too.
    auto losses = Losses(single), accumulated_losses = Losses(out);
    ASSERT_EQ(losses.size(), static_cast<size_t>(kSteps)) << single;
    ASSERT_EQ(accumulated_losses.size(), losses.size()) << out;
    for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], accumulated_losses[i], 1e-6);
    EXPECT_NE(losses.front(), losses.back());  // it trained
    const int port = testing::FreePort();
    testing::ChildProcess r0({PAFT_WORKER, "train", "--threads=1",
                              "--task_file=" + task("w2", 0, 2, 2, 1, port)}, {}, dir_.Join("w0.log"));
    testing::ChildProcess r1({PAFT_WORKER, "train", "--threads=1",
                              "--task_file=" + task("w2", 1, 2, 2, 1, port)}, {}, dir_.Join("w1.log"));
    for (auto* r : {&r0, &r1}) {
      auto status = r->Wait(absl::Seconds(120));
      ASSERT_TRUE(status.has_value());
      ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << *ReadFileToString(dir_.Join("w0.log")) << *ReadFileToString(dir_.Join("w1.log"));
    }
    auto final_of = [&](const std::string& name) {
      return dir_.Join(absl::StrCat(name, "-", tag, "/checkpoints/checkpoint-", kSteps));
    };
    const double two_ranks = testing::MaxAdapterDifference(final_of("b4"), final_of("w2"));
    const double accumulated = testing::MaxAdapterDifference(final_of("b4"), final_of("b2a2"));
    std::cerr << tag << ": max |b4 - 2 ranks x b2| = " << two_ranks
              << ", max |b4 - b2 x accumulation 2| = " << accumulated << "\n";
    EXPECT_LT(two_ranks, 1e-6) << tag;
    EXPECT_LT(accumulated, 1e-6) << tag;
    auto two_rank_losses = Losses(*ReadFileToString(dir_.Join("w0.log")));
    ASSERT_EQ(two_rank_losses.size(), losses.size());
    for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], two_rank_losses[i], 1e-6);
  }
}

// A model folder without tokenizer files (as Llama-3 and Qwen ship theirs: tokenizer.json only)
// trains on pre-tokenized JSONL; an id outside the model's vocabulary is refused (exit 2, a user
// error) naming the line.
TEST_F(DdpTest, PreTokenizedJsonlTrainsWithoutTokenizerFiles) {
  ASSERT_FALSE(PathExists(dir_.Join("base/tokenizer.model")));
  std::string jsonl;
  for (int i = 0; i < 8; ++i) {
    jsonl += absl::StrCat(R"({"prompt_ids": [)", 3 + i % 5, R"(, 4], "completion_ids": [)",
                          10 + i % 7, ", 2]}\n");
  }
  ASSERT_TRUE(WriteFileAtomic(dir_.Join("ids.jsonl"), jsonl).ok());
  const std::string prepare = std::string("--prepare=") + PAFT_PREPARE;
  v1::Task task = MakeTask("ids", 0, 1, 2, 0, 2);
  task.mutable_spec()->mutable_dataset()->set_path(dir_.Join("ids.jsonl"));
  std::string out;
  EXPECT_EQ(testing::RunCommand(
                {PAFT_WORKER, "train", "--threads=1", prepare, "--task_file=" + SaveTask(task)}, &out),
            0)
      << out;
  EXPECT_TRUE(IsRegularFile(dir_.Join("ids/checkpoints/checkpoint-2/paft_checkpoint.json"))) << out;

  const std::string outside = jsonl + R"({"prompt_ids": [3], "completion_ids": [48]})" + "\n";
  ASSERT_TRUE(WriteFileAtomic(dir_.Join("outside.jsonl"), outside).ok());
  task = MakeTask("outside", 0, 1, 2, 0, 2);
  task.mutable_spec()->mutable_dataset()->set_path(dir_.Join("outside.jsonl"));
  out.clear();
  EXPECT_EQ(testing::RunCommand(
                {PAFT_WORKER, "train", "--threads=1", prepare, "--task_file=" + SaveTask(task)}, &out),
            2)
      << out;
  EXPECT_THAT(out, HasSubstr("line 9: 'completion_ids' id 48 is outside the vocabulary of 48"));
}

TEST_F(DdpTest, ADeadPeerFailsTheSurvivorWithinTheTimeout) {
  const int port = testing::FreePort();
  const std::string t0 = WriteTask("dead", 0, 2, 2, port, 100000);
  const std::string t1 = WriteTask("dead", 1, 2, 2, port, 100000);
  testing::ChildProcess r0({PAFT_WORKER, "train", "--threads=1", "--collective_timeout_s=10",
                            "--task_file=" + t0},
                           {}, dir_.Join("r0.log"));
  testing::ChildProcess r1({PAFT_WORKER, "train", "--threads=1", "--collective_timeout_s=10",
                            "--task_file=" + t1},
                           {}, dir_.Join("r1.log"));
  // Wait until rank 1 is training, then kill it.
  bool training = false;
  for (int i = 0; i < 600 && !training; ++i) {
    auto log = ReadFileToString(dir_.Join("r1.log"));
    training = log.ok() && log->find("\"type\":\"progress\"") != std::string::npos;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(training) << *ReadFileToString(dir_.Join("r1.log"));
  r1.Signal(SIGKILL);
  const absl::Time killed = absl::Now();
  auto status = r0.Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << "rank 0 hung after its peer died";
  EXPECT_LT(absl::Now() - killed, absl::Seconds(15));
  ASSERT_TRUE(WIFEXITED(*status));
  // A lost peer: its own class, restarted by the coordinator.
  EXPECT_EQ(FailureOfExitCode(WEXITSTATUS(*status)), Failure::kPeerLost);
  EXPECT_FALSE(InfoOf(Failure::kPeerLost).permanent);
  EXPECT_THAT(*ReadFileToString(dir_.Join("r0.log")), HasSubstr("a peer rank died or timed out"));
}

// A task file with neither a learning rate nor a tuning method set, as a hand-written one may be:
// the trainer resolves it with the job spec's defaults (common/job_spec.h), so full fine-tuning
// trains at 2e-5 and LoRA at 2e-4 (the trainer once fell back to 2e-4 for both on its own).
TEST_F(DdpTest, AnUnresolvedTaskTrainsAtTheJobSpecsDefaultLearningRate) {
  for (const bool full : {true, false}) {
    v1::Task task = MakeTask(full ? "full" : "lora", 0, 1, 2, 0, 2);
    task.mutable_spec()->clear_optimizer();
    task.mutable_spec()->mutable_optimizer()->set_lr_schedule("constant");
    if (full) task.mutable_spec()->mutable_full();  // replaces the lora oneof member
    std::string out;
    ASSERT_EQ(testing::RunCommand(
                  {PAFT_WORKER, "train", "--threads=1", "--task_file=" + SaveTask(task)}, &out),
              0)
        << out;
    std::vector<double> rates;
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      if (line.substr(0, 11) != "PAFT_EVENT ") continue;
      auto j = nlohmann::json::parse(line.substr(11), nullptr, false);
      if (!j.is_discarded() && j["type"] == "progress") rates.push_back(j["learning_rate"]);
    }
    ASSERT_EQ(rates.size(), 2u) << out;
    for (double rate : rates) EXPECT_DOUBLE_EQ(rate, full ? 2e-5 : 2e-4) << (full ? "full" : "lora");
  }
}

// Another process listening on the rendezvous port of rank 0's host: rank 0 exits at once with
// its own class (the coordinator restarts the branch on another port without using the budget).
TEST_F(DdpTest, ATakenRendezvousPortIsItsOwnFailureNamingThePort) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const std::string t0 = WriteTask("taken", 0, 2, 2, port, 5);
  testing::ChildProcess r0({PAFT_WORKER, "train", "--threads=1", "--collective_timeout_s=30",
                            "--task_file=" + t0},
                           {}, dir_.Join("r0.log"));
  auto status = r0.Wait(absl::Seconds(20));
  ::close(fd);
  ASSERT_TRUE(status.has_value()) << "rank 0 waited on a port it could not hold";
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(FailureOfExitCode(WEXITSTATUS(*status)), Failure::kPortInUse);
  EXPECT_THAT(*ReadFileToString(dir_.Join("r0.log")),
              HasSubstr(absl::StrCat("cannot listen on rendezvous port ", port)));
}

// SIGTERM to one rank (as when its agent stops it or its pod goes away): both ranks stop after the
// same step, rank 0 first writes a checkpoint of it, and a rerun resumes from there.
TEST_F(DdpTest, SigtermCheckpointsTheStepReachedAndStopsEveryRank) {
  constexpr int kSteps = 100000;
  const int port = testing::FreePort();
  const std::string t0 = WriteTask("term", 0, 2, 2, port, kSteps);  // checkpoints: only final
  const std::string t1 = WriteTask("term", 1, 2, 2, port, kSteps);
  testing::ChildProcess r0({PAFT_WORKER, "train", "--threads=1", "--task_file=" + t0}, {},
                           dir_.Join("t0.log"));
  testing::ChildProcess r1({PAFT_WORKER, "train", "--threads=1", "--task_file=" + t1}, {},
                           dir_.Join("t1.log"));
  bool training = false;
  for (int i = 0; i < 600 && !training; ++i) {
    auto log = ReadFileToString(dir_.Join("t0.log"));
    training = log.ok() && log->find("\"step\":5,") != std::string::npos;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(training) << *ReadFileToString(dir_.Join("t0.log"));
  r1.Signal(SIGTERM);
  for (auto* rank : {&r0, &r1}) {
    auto status = rank->Wait(absl::Seconds(30));
    ASSERT_TRUE(status.has_value()) << "a rank did not stop";
    ASSERT_TRUE(WIFEXITED(*status)) << *status;
    EXPECT_EQ(WEXITSTATUS(*status), 3);  // retryable
  }
  const std::string log0 = *ReadFileToString(dir_.Join("t0.log"));
  EXPECT_THAT(log0, HasSubstr("stopped on request after step"));
  auto names = ListDir(dir_.Join("term/checkpoints"));
  ASSERT_TRUE(names.ok());
  ASSERT_EQ(names->size(), 1u);
  int64_t step = 0;
  ASSERT_TRUE(absl::SimpleAtoi(names->front().substr(11), &step)) << names->front();
  EXPECT_GE(step, 5);
  EXPECT_LT(step, kSteps);
  EXPECT_TRUE(IsRegularFile(dir_.Join("term/checkpoints/" + names->front() + "/paft_checkpoint.json")));
  EXPECT_THAT(log0, HasSubstr(absl::StrCat("stopped on request after step ", step, " of")));
  // Both ranks stopped after that same step (rank 1's last progress is that step too).
  const std::string log1 = *ReadFileToString(dir_.Join("t1.log"));
  EXPECT_THAT(log1, HasSubstr(absl::StrCat("\"step\":", step, ",")));
  EXPECT_THAT(log1, Not(HasSubstr(absl::StrCat("\"step\":", step + 1, ","))));
}

// Bytes of every tensor of an adapter, by name.
std::map<std::string, std::string> AdapterBytes(const std::string& dir) {
  std::map<std::string, std::string> out;
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  for (const auto& t : (*file)->tensors()) {
    auto d = (*file)->Data(t);
    out[t.name] = std::string(reinterpret_cast<const char*>(d.data()), d.size());
  }
  return out;
}

TEST_F(DdpTest, KilledRunResumesBitIdentically) {
  constexpr int kSteps = 300, kEvery = 25;
  // LoRA dropout makes the RNG state part of what must be restored.
  std::string out;
  ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                 "--task_file=" + WriteTask("straight", 0, 1, 2, 0, kSteps, kEvery, 0.1)},
                                &out),
            0)
      << out;
  const std::string task = WriteTask("killed", 0, 1, 2, 0, kSteps, kEvery, 0.1);
  {
    testing::ChildProcess run({PAFT_WORKER, "train", "--threads=1", "--task_file=" + task}, {},
                              dir_.Join("killed.log"));
    bool committed = false;
    for (int i = 0; i < 2000 && !committed; ++i) {
      committed = IsRegularFile(dir_.Join("killed/checkpoints/checkpoint-100/paft_checkpoint.json"));
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_TRUE(committed);
    run.Signal(SIGKILL);
    auto status = run.Wait(absl::Seconds(10));
    ASSERT_TRUE(status.has_value() && WIFSIGNALED(*status)) << "finished before the kill";
  }
  EXPECT_FALSE(IsRegularFile(dir_.Join("killed/checkpoints/checkpoint-300/paft_checkpoint.json")));
  out.clear();
  ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1", "--task_file=" + task}, &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("resuming from"));
  auto a = AdapterBytes(dir_.Join("straight/checkpoints/checkpoint-300"));
  auto b = AdapterBytes(dir_.Join("killed/checkpoints/checkpoint-300"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "the resumed run's final adapter differs from the uninterrupted run's";
  // Retention kept the last two.
  auto names = ListDir(dir_.Join("straight/checkpoints"));
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"checkpoint-275", "checkpoint-300"}));
}

TEST_F(DdpTest, TornCheckpointsAreSkippedOrRefused) {
  std::string out;
  ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                 "--task_file=" + WriteTask("torn", 0, 1, 2, 0, 4, 2)},
                                &out),
            0)
      << out;
  const std::string ckpt = dir_.Join("torn/checkpoints");
  // checkpoint-6: no manifest (an interrupted save); checkpoint-8: a truncated file.
  ASSERT_EQ(testing::RunCommand({"/bin/cp", "-r", ckpt + "/checkpoint-4", ckpt + "/checkpoint-6"}, &out), 0);
  ASSERT_TRUE(RemoveAll(ckpt + "/checkpoint-6/paft_checkpoint.json").ok());
  ASSERT_EQ(testing::RunCommand({"/bin/cp", "-r", ckpt + "/checkpoint-4", ckpt + "/checkpoint-8"}, &out), 0);
  auto bytes = ReadFileToString(ckpt + "/checkpoint-8/adapter_model.safetensors");
  ASSERT_TRUE(WriteFileAtomic(ckpt + "/checkpoint-8/adapter_model.safetensors",
                              bytes->substr(0, bytes->size() - 7)).ok());
  // checkpoint-10: the same size, one bit flipped (the streamed sha256 sees it).
  ASSERT_EQ(testing::RunCommand({"/bin/cp", "-r", ckpt + "/checkpoint-4", ckpt + "/checkpoint-10"}, &out), 0);
  std::string flipped = *bytes;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x04);
  ASSERT_TRUE(WriteFileAtomic(ckpt + "/checkpoint-10/adapter_model.safetensors", flipped).ok());
  // Explicitly named, each is refused with the reason.
  for (const auto& [dir, reason] : {std::pair<std::string, std::string>{"checkpoint-6", "no manifest"},
                                    {"checkpoint-8", "missing or truncated"},
                                    {"checkpoint-10", "does not match its sha256"}}) {
    out.clear();
    EXPECT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                   "--task_file=" + WriteTask("torn", 0, 1, 2, 0, 6, 2, 0.0,
                                                              ckpt + "/" + dir)},
                                  &out),
              2)
        << out;
    EXPECT_THAT(out, HasSubstr(reason));
  }
  // Found automatically, they are skipped and the newest valid one is used.
  out.clear();
  ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "train", "--threads=1",
                                 "--task_file=" + WriteTask("torn", 0, 1, 2, 0, 6, 2)},
                                &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("skipping checkpoint"));
  EXPECT_THAT(out, HasSubstr("resuming from " + ckpt + "/checkpoint-4 at step 4"));
}

// A checkpoint that does not fit is a full disk, not an exhausted memory: its own exit code,
// with the folder and the bytes in the message. A real small file system (tmpfs in a user and
// mount namespace; skipped where the machine does not allow one).
TEST_F(DdpTest, AFullDiskIsItsOwnFailureNamingTheFolderAndTheBytes) {
  std::string probe;
  if (testing::RunCommand({"/usr/bin/unshare", "-rm", "true"}, &probe) != 0) {
    GTEST_SKIP() << "no user/mount namespaces here (unshare -rm): " << probe;
  }
  const std::string small = dir_.Join("full");
  ASSERT_TRUE(MakeDirs(small).ok());
  const std::string task = WriteTask("full", 0, 1, 4, 0, 2, /*every=*/1);
  std::string output;
  const int code = testing::RunCommand(
      {"/usr/bin/unshare", "-rm", "sh", "-c",
       absl::StrCat("mount -t tmpfs -o size=1m tmpfs ", small, " && exec ", PAFT_WORKER,
                    " train --threads=1 --task_file=", task)},
      &output);
  EXPECT_EQ(FailureOfExitCode(code), Failure::kDiskFull) << code << "\n" << output;
  EXPECT_TRUE(InfoOf(Failure::kDiskFull).permanent);
  EXPECT_THAT(output, HasSubstr("not enough free space for a checkpoint in " + small +
                                "/checkpoints"));
  EXPECT_THAT(output, HasSubstr("bytes free"));
  EXPECT_THAT(output, HasSubstr("needed"));
}

}  // namespace
}  // namespace paft
