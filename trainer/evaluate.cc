// Evaluation of a trained branch (see Evaluate in trainer.h).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/generation_config.h"
#include "common/status.h"
#include "common/token_dataset.h"
#include "trainer/batching.h"
#include "trainer/llama.h"
#include "trainer/model_io.h"
#include "trainer/losses.h"
#include "trainer/objectives.h"
#include "trainer/trainer.h"

namespace paft::trainer {

using json = nlohmann::json;

absl::StatusOr<json> Evaluate(const std::string& base_model, const std::string& adapter,
                              const std::string& dataset, double beta, int64_t max_new_tokens,
                              const std::string& reference_model) {
  try {
    PAFT_ASSIGN_OR_RETURN(auto model, LoadPretrained(base_model, torch::kFloat));
    if (!adapter.empty()) PAFT_RETURN_IF_ERROR(LoadAdapter(model, adapter));
    LlamaForCausalLM reference_net{nullptr};
    if (!reference_model.empty()) {
      PAFT_ASSIGN_OR_RETURN(reference_net, LoadPretrained(reference_model, torch::kFloat));
      reference_net->eval();
      if (reference_net->config().vocab_size != model->config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "reference model ", reference_model, " has another vocabulary size (",
            reference_net->config().vocab_size, " vs ", model->config().vocab_size, ")"));
      }
    }
    PAFT_ASSIGN_OR_RETURN(auto data, TokenDataset::Open(dataset));
    PAFT_RETURN_IF_ERROR(CheckTokenIds(*data, model->config().vocab_size, dataset));
    model->eval();
    torch::NoGradGuard no_grad;
    const int64_t pad_id = PadId(model->config());
    json report = {{"examples", data->size()}, {"dataset", dataset}};
    if (data->kind() == DatasetKind::kSft) {
      PAFT_ASSIGN_OR_RETURN(GenerationConfig generation,
                            LoadGenerationConfig(base_model, model->config()));
      GenerationOptions g;
      g.eos_token_ids = generation.eos_token_ids;
      g.repetition_penalty = generation.repetition_penalty;
      report["generation"] = {{"decoding", "greedy"},
                              {"eos_token_ids", g.eos_token_ids},
                              {"repetition_penalty", g.repetition_penalty},
                              {"sampling_settings_not_applied", generation.sampling}};
      json per_example = json::array();
      double nll = 0, tokens = 0;
      int64_t exact = 0;
      for (int64_t i = 0; i < data->size(); ++i) {
        Batch b = MakeBatch(*data, {i}, pad_id);
        auto seq = BatchLogProbs(model, b);
        const double log_prob = seq.sum.item<double>();
        nll -= log_prob;
        tokens += seq.tokens.item<double>();
        json example = {{"log_prob", log_prob}, {"tokens", seq.tokens.item<int64_t>()}};
        if (max_new_tokens > 0) {
          // Greedy generation from the prompt must reproduce the completion exactly.
          std::vector<int64_t> prompt(data->prompt(i).begin(), data->prompt(i).end());
          auto reference = data->completion(i);
          g.max_new_tokens = std::min<int64_t>(max_new_tokens, reference.size());
          auto generated = model->Generate(prompt, g);
          const bool match = generated.size() == reference.size() &&
                             std::equal(generated.begin(), generated.end(), reference.begin());
          exact += match ? 1 : 0;
          example["exact_match"] = match;
          example["generated"] = generated;
        }
        per_example.push_back(std::move(example));
      }
      report["loss"] = nll / std::max(1.0, tokens);
      report["perplexity"] = std::exp(nll / std::max(1.0, tokens));
      if (max_new_tokens > 0) report["exact_match"] = static_cast<double>(exact) / data->size();
      report["per_example"] = per_example;
    } else {
      json per_example = json::array();
      int64_t correct = 0;
      double margin = 0;
      for (int64_t i = 0; i < data->size(); ++i) {
        Batch b = MakeBatch(*data, {i}, pad_id);
        auto policy = SplitPairs(BatchLogProbs(model, b), 1);
        LlamaForCausalLM& ref = reference_net ? reference_net : model;
        if (!reference_net) model->SetLoraEnabled(false);
        auto reference = SplitPairs(BatchLogProbs(ref, b), 1);
        model->SetLoraEnabled(true);
        const double pc = policy.first.sum.item<double>(), pr = policy.second.sum.item<double>();
        const double rc = reference.first.sum.item<double>(), rr = reference.second.sum.item<double>();
        const double chosen_reward = beta * (pc - rc), rejected_reward = beta * (pr - rr);
        correct += chosen_reward > rejected_reward ? 1 : 0;
        margin += chosen_reward - rejected_reward;
        per_example.push_back({{"policy_chosen", pc}, {"policy_rejected", pr},
                               {"reference_chosen", rc}, {"reference_rejected", rr}});
        // Without an adapter rewards are 0: report the policy's own preference too.
      }
      int64_t prefers = 0;
      for (const auto& e : per_example) {
        prefers += e["policy_chosen"].get<double>() > e["policy_rejected"].get<double>() ? 1 : 0;
      }
      report["reward_accuracy"] = static_cast<double>(correct) / data->size();
      report["reward_margin"] = margin / data->size();
      report["policy_prefers_chosen"] = static_cast<double>(prefers) / data->size();
      report["per_example"] = per_example;
    }
    return report;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  }
}

}  // namespace paft::trainer
