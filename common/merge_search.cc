#include "common/merge_search.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <cmath>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/allowed_values.h"
#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/status.h"

namespace paft {
namespace {

using paft::v1::MergeSearch;
using paft::v1::MergeSearchResult;
using paft::v1::MergeSearchRow;
using paft::v1::MergeSpec;

constexpr std::initializer_list<const char*> kRules = {"min", "weighted"};
constexpr std::initializer_list<const char*> kSftMetrics = {"answer_nll", "exact_match"};
constexpr std::initializer_list<const char*> kAlignmentMetrics = {"reward_accuracy",
                                                                  "reward_margin"};

// Methods that keep only a density's share of each delta (the others ignore density).
bool Sparsifies(const std::string& method) {
  return method != "linear" && method != "task_arithmetic";
}

const MergeSearchRow* Reference(const MergeSearchResult& result, const std::string& label) {
  for (const MergeSearchRow& row : result.references()) {
    if (row.label() == label) return &row;
  }
  return nullptr;
}

}  // namespace

void ApplyMergeSearchDefaults(paft::v1::JobSpec* spec) {
  if (!spec->merge().has_search()) return;
  const MergeSpec& merge = spec->merge();
  MergeSearch* search = spec->mutable_merge()->mutable_search();
  if (search->methods().empty()) search->add_methods(merge.method());
  if (search->densities().empty()) search->add_densities(merge.sft().density());
  if (search->weights().empty()) {
    auto* w = search->add_weights();
    w->set_sft(merge.sft().weight());
    w->set_alignment(merge.alignment().weight());
  }
  for (auto& w : *search->mutable_weights()) {
    if (!w.has_sft()) w.set_sft(1.0);
    if (!w.has_alignment()) w.set_alignment(1.0);
  }
  if (search->rule().empty()) search->set_rule("min");
  if (!search->has_sft_share()) search->set_sft_share(0.5);
  if (search->sft_metric().empty()) search->set_sft_metric("answer_nll");
  if (search->alignment_metric().empty()) search->set_alignment_metric("reward_accuracy");
  if (search->pool().empty()) search->set_pool(spec->sft().pool());
  if (search->world_size() == 0) search->set_world_size(1);
  if (search->max_new_tokens() == 0) search->set_max_new_tokens(64);
}

std::vector<std::string> MergeSearchErrors(const paft::v1::JobSpec& spec) {
  std::vector<std::string> errors;
  if (!spec.merge().has_search()) return errors;
  const MergeSearch& search = spec.merge().search();
  auto add = [&](const std::string& field, const std::string& what) {
    errors.push_back(absl::StrCat("merge.search.", field, ": ", what));
  };
  const std::string& space = spec.merge().merge_space();
  for (int i = 0; i < search.methods_size(); ++i) {
    const std::string& m = search.methods(i);
    const auto& allowed = space == "delta" ? kDeltaMergeMethods : kAdapterMergeMethods;
    if (!OneOf(m, allowed)) {
      add(absl::StrCat("methods[", i, "]"),
          absl::StrCat("'", m, "' in merge_space ", space, " must be ", Allowed(allowed)));
    }
  }
  for (int i = 0; i < search.densities_size(); ++i) {
    const double d = search.densities(i);
    if (!std::isfinite(d) || d <= 0 || d > 1) {
      add(absl::StrCat("densities[", i, "]"), absl::StrCat("must be in (0, 1], got ", d));
    }
  }
  for (int i = 0; i < search.weights_size(); ++i) {
    for (const auto& [name, w] : {std::make_pair("sft", search.weights(i).sft()),
                                  std::make_pair("alignment", search.weights(i).alignment())}) {
      if (!std::isfinite(w) || w < -kMaxMergeWeight || w > kMaxMergeWeight) {
        add(absl::StrCat("weights[", i, "].", name),
            absl::StrCat("must be in [", -kMaxMergeWeight, ", ", kMaxMergeWeight, "], got ", w));
      }
    }
  }
  const size_t candidates = MergeCandidates(spec.merge()).size();
  if (candidates > static_cast<size_t>(kMaxMergeCandidates)) {
    add("methods", absl::StrCat("the grid spans ", candidates, " candidates; at most ",
                                kMaxMergeCandidates));
  }
  if (!OneOf(search.rule(), kRules)) add("rule", Allowed(kRules));
  if (!(search.sft_share() >= 0 && search.sft_share() <= 1)) {
    add("sft_share", absl::StrCat("must be in [0, 1], got ", search.sft_share()));
  }
  if (!OneOf(search.sft_metric(), kSftMetrics)) add("sft_metric", Allowed(kSftMetrics));
  if (!OneOf(search.alignment_metric(), kAlignmentMetrics)) {
    add("alignment_metric", Allowed(kAlignmentMetrics));
  }
  if (search.pool().size() > 63) add("pool", "is longer than 63 characters");
  if (search.world_size() < 1 || search.world_size() > kMaxMergeCandidates) {
    add("world_size", absl::StrCat("must be between 1 and ", kMaxMergeCandidates, ", got ",
                                   search.world_size()));
  }
  if (search.max_new_tokens() < 1 || search.max_new_tokens() > 4096) {
    add("max_new_tokens", absl::StrCat("must be between 1 and 4096, got ", search.max_new_tokens()));
  }
  for (const auto& [name, branch] : {std::make_pair("sft", &spec.sft()),
                                     std::make_pair("alignment", &spec.alignment())}) {
    if (branch->dataset().eval_path().empty()) {
      errors.push_back(absl::StrCat(name, ".dataset.eval_path: is required by merge.search (the "
                                          "candidates are scored on the validation sets)"));
    }
  }
  return errors;
}

std::vector<MergeSpec> MergeCandidates(const MergeSpec& merge) {
  std::vector<MergeSpec> out;
  const MergeSearch& search = merge.search();
  for (const std::string& method : search.methods()) {
    std::vector<double> densities(search.densities().begin(), search.densities().end());
    if (!Sparsifies(method)) densities = {1.0};
    for (double density : densities) {
      for (const auto& weights : search.weights()) {
        MergeSpec candidate = merge;
        candidate.clear_search();
        candidate.set_method(method);
        candidate.mutable_sft()->set_weight(weights.sft());
        candidate.mutable_alignment()->set_weight(weights.alignment());
        candidate.mutable_sft()->set_density(density);
        candidate.mutable_alignment()->set_density(density);
        out.push_back(std::move(candidate));
      }
    }
  }
  return out;
}

std::string CandidateLabel(const MergeSpec& candidate) {
  std::string label = candidate.method();
  if (Sparsifies(candidate.method())) absl::StrAppend(&label, " density ", candidate.sft().density());
  absl::StrAppend(&label, " weights ", candidate.sft().weight(), "/", candidate.alignment().weight());
  return label;
}

std::string SftMetricKey(const MergeSearch& search) {
  return search.sft_metric() == "exact_match" ? kSftExactMatch : kSftAnswerNll;
}

std::string AlignmentMetricKey(const MergeSearch& search) {
  return search.alignment_metric() == "reward_margin" ? kAlignmentRewardMargin
                                                      : kAlignmentRewardAccuracy;
}

absl::Status ScoreMergeSearch(const MergeSearch& search, MergeSearchResult* result) {
  result->set_rule(search.rule());
  result->set_sft_share(search.sft_share());
  result->set_sft_metric(search.sft_metric());
  result->set_alignment_metric(search.alignment_metric());
  const MergeSearchRow* base = Reference(*result, "base");
  const MergeSearchRow* sft = Reference(*result, "sft");
  const MergeSearchRow* alignment = Reference(*result, "alignment");
  if (base == nullptr || sft == nullptr || alignment == nullptr) {
    return absl::InvalidArgumentError("merge search: the base, sft and alignment rows are required");
  }
  // Share of a branch's own improvement over the base that a candidate keeps, in the metric's
  // better direction (answer NLL: lower is better).
  struct Scale {
    std::string key;
    double base, branch, sign;
  };
  auto scale = [&](const MergeSearchRow& branch_row, const std::string& key, double sign,
                   const std::string& branch_name) -> absl::StatusOr<Scale> {
    const auto b = base->metrics().find(key), r = branch_row.metrics().find(key);
    if (b == base->metrics().end() || r == branch_row.metrics().end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge search: no ", key, " for the base or the ",
                                                     branch_name, " branch"));
    }
    if (!(sign * (r->second - b->second) > 0)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "merge search: the ", branch_name, " branch's adapter does not improve ", key,
          " over the base on its validation set (base ", b->second, ", ", branch_name, " ",
          r->second, "): there is no improvement for a merge to keep, so no candidate can be "
          "scored"));
    }
    return Scale{key, b->second, r->second, sign};
  };
  const std::string sft_key = SftMetricKey(search);
  auto sft_scale = scale(*sft, sft_key, sft_key == kSftAnswerNll ? -1.0 : 1.0, "sft");
  if (!sft_scale.ok()) return sft_scale.status();
  auto alignment_scale = scale(*alignment, AlignmentMetricKey(search), 1.0, "alignment");
  if (!alignment_scale.ok()) return alignment_scale.status();
  int chosen = -1;
  double best = 0;
  for (int i = 0; i < result->candidates_size(); ++i) {
    MergeSearchRow* row = result->mutable_candidates(i);
    double scores[2];
    int k = 0;
    for (const Scale* s : {&*sft_scale, &*alignment_scale}) {
      const auto m = row->metrics().find(s->key);
      if (m == row->metrics().end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("merge search: candidate '", row->label(), "' has no ", s->key));
      }
      scores[k++] = (m->second - s->base) / (s->branch - s->base);
    }
    row->set_sft_score(scores[0]);
    row->set_alignment_score(scores[1]);
    row->set_score(search.rule() == "weighted"
                       ? search.sft_share() * scores[0] + (1 - search.sft_share()) * scores[1]
                       : std::min(scores[0], scores[1]));
    // A NaN score (a diverged candidate) loses to every number.
    const double ranked = std::isnan(row->score()) ? -INFINITY : row->score();
    if (chosen < 0 || ranked > best) {
      chosen = i;
      best = ranked;
    }
  }
  if (chosen < 0) return absl::InvalidArgumentError("merge search: no candidates");
  result->set_chosen(chosen);
  return absl::OkStatus();
}

absl::StatusOr<MergeSearchResult> ReadMergeSearchTable(const std::string& path,
                                                       const MergeSpec& merge) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the merge search exited 0 but its table cannot be read: ",
                     text.status().message()));
  }
  MergeSearchResult result;
  if (auto s = google::protobuf::util::JsonStringToMessage(*text, &result); !s.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": ", s.message().as_string()));
  }
  const std::vector<MergeSpec> expected = MergeCandidates(merge);
  if (result.candidates_size() != static_cast<int>(expected.size())) {
    return absl::DataLossError(absl::StrCat(path, ": ", result.candidates_size(),
                                            " candidates, the job's grid has ", expected.size()));
  }
  for (int i = 0; i < result.candidates_size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(result.candidates(i).merge(),
                                                            expected[i])) {
      return absl::DataLossError(absl::StrCat(path, ": candidate ", i, " (",
                                              result.candidates(i).label(),
                                              ") is not the job's candidate ",
                                              CandidateLabel(expected[i])));
    }
  }
  if (result.chosen() < 0 || result.chosen() >= result.candidates_size()) {
    return absl::DataLossError(absl::StrCat(path, ": chosen ", result.chosen(), " is not a candidate"));
  }
  return result;
}

}  // namespace paft
