// Job specifications: parsing from YAML or JSON (the proto's JSON mapping, so field names are the
// proto's, snake_case or lowerCamelCase), defaults, and validation with errors naming the field.
#ifndef PAFT_COMMON_JOB_SPEC_H_
#define PAFT_COMMON_JOB_SPEC_H_

#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paft/v1/job.pb.h"

namespace paft {

// Limits enforced at admission (docs/job-spec.md).
inline constexpr int kMaxWorldSize = 1024;
inline constexpr int kMaxRestartBudget = 100;
inline constexpr int kMaxPathLength = 4096;
inline constexpr int kMaxNameLength = 253;

// The merge methods of each merge space (mergekit's names; the adapter spaces take PEFT's
// add_weighted_adapter's), and the bound of a branch's merge weight: checked for `merge` and for
// every candidate of `merge.search`.
inline constexpr std::initializer_list<const char*> kDeltaMergeMethods = {
    "linear",    "task_arithmetic", "ties",             "dare_linear",
    "dare_ties", "breadcrumbs",     "breadcrumbs_ties", "magnitude_prune"};
inline constexpr std::initializer_list<const char*> kAdapterMergeMethods = {
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune"};
inline constexpr double kMaxMergeWeight = 100;

// PAFT's defaults, used when a spec sets no L1 or merge settings (sources in docs/job-spec.md):
// an L1-sparsified SFT adapter and a TIES merge of the two branches.
inline constexpr double kPaftL1Lambda = 1e-3;
inline constexpr const char* kPaftMergeMethod = "ties";
inline constexpr double kPaftSftDensity = 0.2;
inline constexpr double kPaftAlignmentDensity = 0.2;

// Parses a job spec from YAML or JSON text (JSON is YAML, so one parser serves both). Unknown
// fields are errors. Does not apply defaults or validate.
absl::StatusOr<paft::v1::JobSpec> ParseJobSpec(const std::string& text);
// Reads and parses a spec file.
absl::StatusOr<paft::v1::JobSpec> LoadJobSpecFile(const std::string& path);

// Fills unset fields with their documented defaults. Idempotent. The one place a job's defaults
// are decided: admission stores the result, and whatever reads a branch reads its fields as set.
void ApplyJobSpecDefaults(paft::v1::JobSpec* spec);
// The same for one branch (what ApplyJobSpecDefaults does to `sft` and `alignment`): a trainer
// given a Task whose spec was not resolved (a hand-written task file) resolves it with this.
void ApplyBranchDefaults(paft::v1::BranchSpec* branch, bool is_sft);

// Checks every field of a defaulted spec. InvalidArgument listing each bad field by its path
// ("sft.world_size: must be between 1 and 1024, got 0"), all of them, separated by "; ".
absl::Status ValidateJobSpec(const paft::v1::JobSpec& spec);

// Checks what a spec refers to on shared storage: the base model folder holds a valid
// config.json and safetensors weights, the dataset files exist, the output folder can be made.
// FailedPrecondition naming the field and the path.
absl::Status CheckJobInputs(const paft::v1::JobSpec& spec);

// When `roots` (realpaths of the storage roots) is not empty: every path of the spec must resolve,
// symlinks followed, inside one of them. PermissionDenied naming the field otherwise.
absl::Status CheckPathsConfined(const paft::v1::JobSpec& spec,
                                const std::vector<std::string>& roots);

// Makes relative paths (base model, output, datasets) absolute against `base_dir` (the folder of
// the spec file), since every component resolves them from a different working directory.
void ResolveRelativePaths(paft::v1::JobSpec* spec, const std::string& base_dir);

std::string JobSpecToJson(const paft::v1::JobSpec& spec);

}  // namespace paft

#endif  // PAFT_COMMON_JOB_SPEC_H_
