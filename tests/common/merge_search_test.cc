// merge.search: its defaults and checks on real spec text, the grid it spans, and the scores and
// choice against numbers worked out by hand.
#include "common/merge_search.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>

#include "common/file_util.h"
#include "common/job_spec.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;
using paft::v1::JobSpec;
using paft::v1::MergeSearchResult;
using paft::v1::MergeSearchRow;

constexpr char kSpec[] = R"yaml(
base_model: /models/base
output_dir: /jobs/demo
sft:
  pool: sft
  world_size: 2
  dataset: {path: /data/sft.jsonl, eval_path: /data/sft_val.jsonl}
alignment:
  pool: align
  world_size: 1
  dataset: {path: /data/pref.jsonl, eval_path: /data/pref_val.jsonl}
merge:
  method: ties
  sft: {weight: 1.0, density: 0.3}
  alignment: {weight: 0.7, density: 0.3}
)yaml";

JobSpec Resolved(const std::string& search_yaml) {
  auto spec = ParseJobSpec(std::string(kSpec) + search_yaml);
  EXPECT_TRUE(spec.ok()) << spec.status();
  ApplyJobSpecDefaults(&*spec);
  return *spec;
}

TEST(MergeSearchTest, AnEmptySearchIsTheFixedMergeAsItsOneCandidate) {
  const JobSpec spec = Resolved("  search: {}\n");
  ASSERT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  const auto& search = spec.merge().search();
  EXPECT_EQ(search.rule(), "min");
  EXPECT_EQ(search.sft_metric(), "answer_nll");
  EXPECT_EQ(search.alignment_metric(), "reward_accuracy");
  EXPECT_EQ(search.pool(), "sft");
  EXPECT_EQ(search.world_size(), 1);
  const auto candidates = MergeCandidates(spec.merge());
  ASSERT_EQ(candidates.size(), 1u);
  // The one candidate is the job's merge as given, field for field.
  paft::v1::MergeSpec fixed = spec.merge();
  fixed.clear_search();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(candidates[0], fixed))
      << candidates[0].DebugString() << " vs " << fixed.DebugString();
  EXPECT_EQ(CandidateLabel(candidates[0]), "ties density 0.3 weights 1/0.7");
}

TEST(MergeSearchTest, TheGridIsMethodsTimesDensitiesTimesWeightsInOrder) {
  const JobSpec spec = Resolved(R"yaml(
  lambda: 0.9
  search:
    methods: [ties, task_arithmetic, dare_ties]
    densities: [0.2, 0.5]
    weights: [{sft: 1.0, alignment: 1.0}, {alignment: 0.5}]
)yaml");
  ASSERT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  const auto c = MergeCandidates(spec.merge());
  // task_arithmetic keeps the whole delta: one density, not two.
  ASSERT_EQ(c.size(), 2u * 2 + 1 * 2 + 2 * 2);
  std::vector<std::string> labels;
  for (const auto& m : c) labels.push_back(CandidateLabel(m));
  EXPECT_THAT(labels, ::testing::ElementsAre(
                          "ties density 0.2 weights 1/1", "ties density 0.2 weights 1/0.5",
                          "ties density 0.5 weights 1/1", "ties density 0.5 weights 1/0.5",
                          "task_arithmetic weights 1/1", "task_arithmetic weights 1/0.5",
                          "dare_ties density 0.2 weights 1/1", "dare_ties density 0.2 weights 1/0.5",
                          "dare_ties density 0.5 weights 1/1", "dare_ties density 0.5 weights 1/0.5"));
  for (const auto& m : c) {
    EXPECT_EQ(m.sft().density(), m.alignment().density());
    EXPECT_DOUBLE_EQ(m.lambda(), 0.9);  // the merge's other fields are shared
    EXPECT_FALSE(m.has_search());
  }
}

TEST(MergeSearchTest, BadSearchesAreRefusedNamingTheField) {
  JobSpec spec = Resolved(R"yaml(
  merge_space: adapter
  search:
    methods: [breadcrumbs_ties]
    densities: [0, 0.5]
    rule: best
    sft_metric: bleu
    world_size: 100
)yaml");
  spec.mutable_alignment()->mutable_dataset()->clear_eval_path();
  const std::string message(ValidateJobSpec(spec).message());
  EXPECT_THAT(message, HasSubstr("merge.search.methods[0]: 'breadcrumbs_ties' in merge_space adapter"));
  EXPECT_THAT(message, HasSubstr("merge.search.densities[0]: must be in (0, 1], got 0"));
  EXPECT_THAT(message, HasSubstr("merge.search.rule: one of min, weighted"));
  EXPECT_THAT(message, HasSubstr("merge.search.sft_metric: one of answer_nll, exact_match"));
  EXPECT_THAT(message, HasSubstr("merge.search.world_size: must be between 1 and 64"));
  EXPECT_THAT(message, HasSubstr("alignment.dataset.eval_path: is required by merge.search"));

  const JobSpec big = Resolved(R"yaml(
  search:
    methods: [ties, dare_ties, breadcrumbs_ties]
    densities: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    weights: [{sft: 1}, {sft: 0.5}, {sft: 0.25}]
)yaml");
  EXPECT_THAT(std::string(ValidateJobSpec(big).message()),
              HasSubstr("merge.search.methods: the grid spans 81 candidates; at most 64"));
}

MergeSearchRow Row(const std::string& label, double nll, double accuracy) {
  MergeSearchRow row;
  row.set_label(label);
  (*row.mutable_metrics())[kSftAnswerNll] = nll;
  (*row.mutable_metrics())[kAlignmentRewardAccuracy] = accuracy;
  (*row.mutable_metrics())[kAlignmentRewardMargin] = accuracy * 2;
  return row;
}

// base: NLL 3.0, accuracy 0; the sft adapter alone: NLL 1.0; the alignment adapter: 0.8.
MergeSearchResult Table(std::vector<MergeSearchRow> candidates) {
  MergeSearchResult result;
  *result.add_references() = Row("base", 3.0, 0.0);
  *result.add_references() = Row("sft", 1.0, 0.1);
  *result.add_references() = Row("alignment", 2.9, 0.8);
  for (auto& c : candidates) *result.add_candidates() = std::move(c);
  return result;
}

TEST(MergeSearchTest, ScoresAreTheShareOfEachBranchsImprovementKept) {
  // A keeps (3-1.5)/2 = 0.75 of the SFT gain and 0.4/0.8 = 0.5 of the DPO gain; B 0.5 and 1.0;
  // C 0.9 and 0.75.
  MergeSearchResult result = Table({Row("A", 1.5, 0.4), Row("B", 2.0, 0.8), Row("C", 1.2, 0.6)});
  paft::v1::MergeSearch search;
  search.set_rule("min");
  search.set_sft_metric("answer_nll");
  search.set_alignment_metric("reward_accuracy");
  ASSERT_TRUE(ScoreMergeSearch(search, &result).ok());
  EXPECT_DOUBLE_EQ(result.candidates(0).sft_score(), 0.75);
  EXPECT_DOUBLE_EQ(result.candidates(0).alignment_score(), 0.5);
  EXPECT_DOUBLE_EQ(result.candidates(0).score(), 0.5);
  EXPECT_DOUBLE_EQ(result.candidates(1).score(), 0.5);
  EXPECT_DOUBLE_EQ(result.candidates(2).score(), 0.75);
  EXPECT_EQ(result.chosen(), 2);  // the worse of the two is best for C

  // Weighted towards the alignment branch (0.2 / 0.8): A 0.55, B 0.9, C 0.78.
  search.set_rule("weighted");
  search.set_sft_share(0.2);
  ASSERT_TRUE(ScoreMergeSearch(search, &result).ok());
  EXPECT_DOUBLE_EQ(result.candidates(1).score(), 0.2 * 0.5 + 0.8 * 1.0);
  EXPECT_EQ(result.chosen(), 1);
  EXPECT_EQ(result.rule(), "weighted");
}

TEST(MergeSearchTest, TiesGoToTheEarlierCandidateAndNaNLoses) {
  MergeSearchResult result =
      Table({Row("nan", std::nan(""), 0.4), Row("A", 1.5, 0.4), Row("B", 2.0, 0.4)});
  paft::v1::MergeSearch search;
  search.set_rule("min");
  ASSERT_TRUE(ScoreMergeSearch(search, &result).ok());
  EXPECT_DOUBLE_EQ(result.candidates(1).score(), 0.5);
  EXPECT_DOUBLE_EQ(result.candidates(2).score(), 0.5);
  EXPECT_EQ(result.chosen(), 1);
}

TEST(MergeSearchTest, ABranchThatDidNotImproveLeavesNothingToScore) {
  MergeSearchResult result = Table({Row("A", 1.5, 0.4)});
  result.mutable_references(2)->mutable_metrics()->at(kAlignmentRewardAccuracy) = 0.0;
  paft::v1::MergeSearch search;
  search.set_rule("min");
  const absl::Status s = ScoreMergeSearch(search, &result);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("the alignment branch's adapter does not improve alignment_reward_accuracy"));
}

TEST(MergeSearchTest, TheCoordinatorReadsOnlyATableOfTheJobsGrid) {
  testing::TempDir dir;
  const JobSpec spec = Resolved("  search: {methods: [ties, linear]}\n");
  MergeSearchResult result = Table({Row("a", 1.5, 0.4), Row("b", 1.2, 0.6)});
  const auto candidates = MergeCandidates(spec.merge());
  for (int i = 0; i < 2; ++i) *result.mutable_candidates(i)->mutable_merge() = candidates[i];
  result.set_chosen(1);
  auto write = [&](const MergeSearchResult& r) {
    std::string text;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(r, &text).ok());
    ASSERT_TRUE(WriteFileAtomic(dir.Join("table.json"), text).ok());
  };
  write(result);
  auto read = ReadMergeSearchTable(dir.Join("table.json"), spec.merge());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->chosen(), 1);

  result.set_chosen(2);
  write(result);
  EXPECT_THAT(std::string(ReadMergeSearchTable(dir.Join("table.json"), spec.merge()).status().message()),
              HasSubstr("chosen 2 is not a candidate"));
  result.set_chosen(0);
  result.mutable_candidates(1)->mutable_merge()->set_method("dare_ties");
  write(result);
  EXPECT_THAT(std::string(ReadMergeSearchTable(dir.Join("table.json"), spec.merge()).status().message()),
              HasSubstr("is not the job's candidate linear weights 1/0.7"));
  EXPECT_EQ(ReadMergeSearchTable(dir.Join("missing.json"), spec.merge()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace paft
