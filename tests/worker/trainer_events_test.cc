// What an agent accepts from its trainers' stdout: events checked field by field (each bad one
// refused naming the field, never thrown), and lines capped in length.
#include "worker/trainer_events.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace paft::worker {
namespace {

using ::testing::HasSubstr;

std::string Error(const std::string& line) {
  auto event = ParseTrainerEvent(line);
  EXPECT_FALSE(event.ok()) << line;
  return event.ok() ? "" : std::string(event.status().message());
}

TEST(TrainerEventsTest, WellFormedEvents) {
  auto log = ParseTrainerEvent("step 3: loss 1.2");
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE(std::holds_alternative<NotAnEvent>(*log));

  auto progress = ParseTrainerEvent(
      R"(PAFT_EVENT {"type":"progress","step":3,"total_steps":10,"loss":1.5,"tokens_per_second":9,"learning_rate":0.001,"note":"x"})");
  ASSERT_TRUE(progress.ok()) << progress.status();
  const auto& p = std::get<ProgressEvent>(*progress);
  EXPECT_EQ(p.step, 3);
  EXPECT_EQ(p.total_steps, 10);
  EXPECT_DOUBLE_EQ(p.loss, 1.5);
  EXPECT_EQ(p.metrics.size(), 1u);  // learning_rate; the string "note" is not a metric
  EXPECT_DOUBLE_EQ(p.metrics.at("learning_rate"), 0.001);

  auto checkpoint = ParseTrainerEvent(
      R"(PAFT_EVENT {"type":"checkpoint","step":20,"path":"/c/checkpoint-20","size_bytes":123,"digest":"ab","final":true})");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const auto& c = std::get<CheckpointEvent>(*checkpoint);
  EXPECT_EQ(c.step, 20);
  EXPECT_EQ(c.path, "/c/checkpoint-20");
  EXPECT_TRUE(c.final);

  auto error = ParseTrainerEvent(R"(PAFT_EVENT {"type":"error","message":"out of data"})");
  ASSERT_TRUE(error.ok());
  EXPECT_EQ(std::get<ErrorEvent>(*error).message, "out of data");
}

// The line that took an agent down (a type error on its reader thread) and its relatives.
TEST(TrainerEventsTest, MalformedEventsAreRefusedByField) {
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"checkpoint","step":"x","path":5})"),
              HasSubstr("checkpoint.step: must be an integer >= 0"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"checkpoint","step":5,"path":5})"),
              HasSubstr("checkpoint.path: must be a string"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"checkpoint","step":5})"), HasSubstr("checkpoint.path: is required"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"checkpoint","step":-1,"path":"/p"})"),
              HasSubstr("checkpoint.step"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"checkpoint","step":1,"path":"/p","final":"yes"})"),
              HasSubstr("checkpoint.final"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"checkpoint","step":18446744073709551615,"path":"/p"})"),
              HasSubstr("checkpoint.step: is too large"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"progress","step":2.5})"), HasSubstr("progress.step"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"progress","loss":"low"})"), HasSubstr("progress.loss"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"error","message":7})"), HasSubstr("error.message"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":"restart"})"), HasSubstr("unknown type 'restart'"));
  EXPECT_THAT(Error(R"(PAFT_EVENT {"type":3})"), HasSubstr("event.type"));
  EXPECT_THAT(Error("PAFT_EVENT [1, 2]"), HasSubstr("not a JSON object"));
  EXPECT_THAT(Error("PAFT_EVENT {\"type\":\"progress\""), HasSubstr("not a JSON object"));
  EXPECT_THAT(Error("PAFT_EVENT \xff\xfe"), HasSubstr("not a JSON object"));
}

TEST(LineSplitterTest, SplitsAcrossChunksAndCutsLongLines) {
  std::vector<std::pair<std::string, bool>> lines;
  LineSplitter splitter(8, [&](const std::string& line, bool truncated) {
    lines.emplace_back(line, truncated);
  });
  splitter.Feed("ab");
  splitter.Feed("c\nexactly8\n0123456789");  // the third line is over the cap...
  splitter.Feed("ABCDEF");                    // ... and goes on (discarded)
  splitter.Feed("GH\nok\nlast");
  splitter.Finish();
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0], std::make_pair(std::string("abc"), false));
  EXPECT_EQ(lines[1], std::make_pair(std::string("exactly8"), false));
  EXPECT_EQ(lines[2], std::make_pair(std::string("01234567"), true));
  EXPECT_EQ(lines[3], std::make_pair(std::string("ok"), false));
  EXPECT_EQ(lines[4], std::make_pair(std::string("last"), false));
}

}  // namespace
}  // namespace paft::worker
