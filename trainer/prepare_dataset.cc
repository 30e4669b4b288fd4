#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/hf_config.h"
#include "common/job_spec.h"
#include "common/process_util.h"
#include "common/status.h"
#include "common/token_dataset.h"
#include "trainer/trainer.h"

namespace paft::trainer {

absl::StatusOr<std::string> PrepareDataset(const std::string& input, const std::string& base_model,
                                           const paft::v1::BranchSpec& spec,
                                           const std::string& cache_dir,
                                           const std::string& prepare_binary) {
  if (input.size() > 7 && input.substr(input.size() - 7) == ".paftds") return input;
  // The model folder's tokenizer: tokenizer.json (as transformers prefers it), else
  // tokenizer.model. Without either the records must be pre-tokenized (*_ids); paft-prepare says
  // which line is not. Ids are checked against the model's vocabulary.
  const std::string tokenizer_json = JoinPath(base_model, "tokenizer.json");
  const std::string tokenizer_model = JoinPath(base_model, "tokenizer.model");
  const bool has_tokenizer = IsRegularFile(tokenizer_json) || IsRegularFile(tokenizer_model);
  PAFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(base_model));
  PAFT_ASSIGN_OR_RETURN(std::string data, ReadFileToString(input));
  std::string tok;  // the tokenizer files' bytes, part of the cache key
  for (const std::string& file : {tokenizer_json, tokenizer_model,
                                  JoinPath(base_model, "tokenizer_config.json")}) {
    if (!IsRegularFile(file)) continue;
    PAFT_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(file));
    tok += bytes;
  }
  const std::string settings =
      absl::StrCat(spec.dataset().format(), "|", spec.dataset().chat_template(), "|",
                   spec.dataset().assistant_turns(), "|", spec.batch().max_length(), "|",
                   spec.batch().truncation_mode(), "|",
                   config.vocab_size);
  const std::string key = Fingerprint(absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>((data + tok + settings).data()), data.size() + tok.size() + settings.size()));
  const std::string name = input.substr(input.find_last_of('/') + 1);
  const std::string out = JoinPath(cache_dir, absl::StrCat(name, ".", key, ".paftds"));
  if (IsRegularFile(out)) return out;
  PAFT_RETURN_IF_ERROR(MakeDirs(cache_dir));
  std::vector<std::string> argv = {prepare_binary, "--input=" + input, "--output=" + out,
                                   absl::StrCat("--vocab_size=", config.vocab_size),
                                   absl::StrCat("--max_length=", spec.batch().max_length()),
                                   "--truncation_mode=" + spec.batch().truncation_mode(),
                                   "--format=" + spec.dataset().format(),
                                   "--assistant_turns=" + spec.dataset().assistant_turns()};
  if (has_tokenizer) argv.push_back("--tokenizer=" + base_model);
  // Empty (the default): the base model's own chat template, else chatml (docs/job-spec.md).
  if (!spec.dataset().chat_template().empty()) {
    argv.push_back("--chat_template=" + spec.dataset().chat_template());
  }
  PAFT_ASSIGN_OR_RETURN(auto result, RunProcess(argv));
  if (result.first != 0) {
    std::string message = result.second;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    if (result.first == 2) return absl::InvalidArgumentError(message);
    return absl::InternalError(absl::StrCat("paft-prepare failed (exit ", result.first, "): ", message));
  }
  return out;
}

}  // namespace paft::trainer
