// `paft-worker train` and `paft-worker eval`: the trainer process (run by the agent for each
// rank, or standalone without a coordinator) and model evaluation.
#ifndef PAFT_WORKER_TRAIN_COMMAND_H_
#define PAFT_WORKER_TRAIN_COMMAND_H_

#include <string>
#include <vector>

namespace paft::worker {

struct TrainCommandOptions {
  std::string task_file;  // agent mode: the Task as JSON
  std::string spec_file;  // standalone: a job spec ...
  std::string branch;     // ... and which branch ("sft" or "alignment")
  std::string prepare_binary;  // paft-prepare; default: found beside this binary
  std::string merger_binary;   // paft-merger (merge search tasks); found likewise
  int threads = 0;
  int collective_timeout_seconds = 120;
};

// Returns the process exit code (worker/trainer_protocol.h's classification).
int RunTrainCommand(const TrainCommandOptions& options);

struct EvalCommandOptions {
  std::string base_model;
  std::string adapter;
  std::string reference;  // reference model of the rewards (default: base without the adapter)
  std::string dataset;  // JSONL (tokenized with the base's tokenizer.model) or .paftds
  double beta = 0.1;
  int64_t max_new_tokens = 64;
  std::string prepare_binary;
  std::string cache_dir;  // where a prepared JSONL goes; default: beside the dataset
};
int RunEvalCommand(const EvalCommandOptions& options);

// The executable `name` next to `self` (installed layout) or in ../`build_folder`/ (the build
// tree: paft-prepare in tokenizer/, paft-merger in merger/), else `name` itself (PATH).
std::string FindSiblingBinary(const std::string& self, const std::string& name,
                              const std::string& build_folder);

}  // namespace paft::worker

#endif  // PAFT_WORKER_TRAIN_COMMAND_H_
