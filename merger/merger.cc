#include "merger/merger.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/hf_config.h"
#include "common/safetensors.h"
#include "common/sha256.h"
#include "common/status.h"
#include "merger/adapter_merge.h"
#include "merger/inputs.h"
#include "merger/merge_methods.h"
#include "nlohmann/json.hpp"

namespace paft::merger {
namespace {

constexpr int64_t kDefaultMaxShardBytes = int64_t{5} << 30;

bool IsFloat(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

// Everything decided before the first tensor is read.
struct Plan {
  MergeOptions options;
  std::unique_ptr<SafetensorsModel> base;
  std::vector<std::unique_ptr<InputModel>> inputs;
  std::vector<InputWeights> weights;
  std::vector<TensorSpec> specs;                  // output tensors, in base name order
  std::vector<std::vector<size_t>> shards;        // tensor indices per output shard
  std::map<std::string, std::string> metadata;
};

absl::StatusOr<Plan> MakePlan(const paft::v1::MergeRequest& request) {
  Plan plan;
  const auto& spec = request.spec();
  PAFT_ASSIGN_OR_RETURN(plan.options.method, LookupMergeMethod(spec.method()));
  plan.options.lambda = spec.has_lambda() ? spec.lambda() : 1.0;
  plan.options.normalize =
      spec.has_normalize() ? spec.normalize() : plan.options.method.default_normalize;
  plan.options.rescale = spec.has_rescale() ? spec.rescale() : plan.options.method.default_rescale;
  plan.options.seed = spec.seed();
  if (request.inputs().empty()) return absl::InvalidArgumentError("inputs: at least one needed");

  PAFT_ASSIGN_OR_RETURN(ModelConfig base_config, LoadModelConfig(request.base_model()));
  PAFT_ASSIGN_OR_RETURN(plan.base, SafetensorsModel::Open(request.base_model()));
  for (const std::string& name : plan.base->names()) {
    const TensorInfo& info = *plan.base->Find(name)->second;
    if (info.dtype == DType::kF8E4M3 || info.dtype == DType::kF8E5M2) {
      return absl::UnimplementedError(absl::StrCat("tensor '", name, "': dtype ",
                                                   DTypeName(info.dtype),
                                                   " is not supported by the merger"));
    }
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    const auto& input = request.inputs(i);
    InputWeights w;
    w.weight = input.params().has_weight() ? input.params().weight() : 1.0;
    w.density = input.params().has_density() ? input.params().density() : 1.0;
    w.gamma = input.params().has_gamma() ? input.params().gamma() : 0.01;
    if (!(w.density > 0 && w.density <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "] (", input.path(), "): density must be in (0, 1]"));
    }
    if (!(w.gamma >= 0 && w.gamma < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "] (", input.path(), "): gamma must be in [0, 1)"));
    }
    if (!PathExists(JoinPath(input.path(), "adapter_config.json"))) {
      PAFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(input.path()));
      if (config.vocab_size != base_config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input ", input.path(), " has vocab_size ", config.vocab_size, ", the base ",
            base_config.vocab_size, " (tensor 'model.embed_tokens.weight' would not align)"));
      }
      if (config.hidden_size != base_config.hidden_size ||
          config.num_hidden_layers != base_config.num_hidden_layers) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input ", input.path(), " has a different architecture than the base (hidden_size ",
            config.hidden_size, " vs ", base_config.hidden_size, ", layers ",
            config.num_hidden_layers, " vs ", base_config.num_hidden_layers, ")"));
      }
    }
    PAFT_ASSIGN_OR_RETURN(auto model, OpenInput(input.path()));
    PAFT_RETURN_IF_ERROR(model->Validate(*plan.base));
    plan.inputs.push_back(std::move(model));
    plan.weights.push_back(w);
  }

  // Output tensors and their shards (HF's max_shard_size, greedy in name order).
  const int64_t max_shard =
      request.max_shard_bytes() > 0 ? request.max_shard_bytes() : kDefaultMaxShardBytes;
  int64_t shard_bytes = 0;
  for (const std::string& name : plan.base->names()) {
    const TensorInfo& info = *plan.base->Find(name)->second;
    TensorSpec out{name, info.dtype, info.shape};
    if (IsFloat(info.dtype)) {
      PAFT_ASSIGN_OR_RETURN(out.dtype, OutputDType(spec.dtype(), info.dtype));
    }
    const int64_t bytes = info.numel() * static_cast<int64_t>(DTypeSize(out.dtype));
    if (plan.shards.empty() || (shard_bytes > 0 && shard_bytes + bytes > max_shard)) {
      plan.shards.emplace_back();
      shard_bytes = 0;
    }
    plan.shards.back().push_back(plan.specs.size());
    shard_bytes += bytes;
    plan.specs.push_back(std::move(out));
  }
  plan.metadata = {{"format", "pt"}, {"paft_merge_method", spec.method()}};
  return plan;
}

// One base tensor and the inputs' task vectors for it, read in chunks from mmapped files.
class ModelTensorSource : public TensorSource {
 public:
  ModelTensorSource(const Plan& plan, const std::string& name, const SafetensorsFile& file,
                    const TensorInfo& info)
      : plan_(plan), name_(name), file_(file), info_(info) {}
  int64_t numel() const override { return info_.numel(); }
  size_t num_inputs() const override { return plan_.inputs.size(); }
  absl::Status Base(int64_t begin, int64_t count, float* out) const override {
    ReadRangeAsFloat(file_, info_, begin, count, out);
    return absl::OkStatus();
  }
  absl::Status Delta(size_t input, int64_t begin, int64_t count, const float* base,
                     float* out) const override {
    return plan_.inputs[input]->Delta(name_, info_, begin, count, base, out);
  }

 private:
  const Plan& plan_;
  const std::string& name_;
  const SafetensorsFile& file_;
  const TensorInfo& info_;
};

// Merges every tensor, in order, into the shard files of `dir`. Tensors are processed one after
// the other; the threads work on chunks of the current tensor.
absl::Status MergeAll(const Plan& plan, const std::string& dir, int threads,
                      MergeProgress* progress) {
  const bool sharded = plan.shards.size() > 1;
  std::map<std::string, std::string> weight_map;
  int64_t total_size = 0;
  StreamOptions stream;
  stream.threads = threads;
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    const std::string file =
        sharded ? absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, plan.shards.size())
                : "model.safetensors";
    std::vector<TensorSpec> specs;
    for (size_t index : plan.shards[s]) {
      specs.push_back(plan.specs[index]);
      weight_map[plan.specs[index].name] = file;
    }
    PAFT_ASSIGN_OR_RETURN(auto writer,
                          SafetensorsWriter::Create(JoinPath(dir, file), specs, plan.metadata));
    for (size_t index : plan.shards[s]) {
      const TensorSpec& spec = plan.specs[index];
      PAFT_ASSIGN_OR_RETURN(auto found, plan.base->Find(spec.name));
      const SafetensorsFile& base_file = *found.first;
      const TensorInfo& base_info = *found.second;
      int64_t read = static_cast<int64_t>(base_info.nbytes());
      for (const auto& input : plan.inputs) read += input->TensorBytes(spec.name);
      progress->bytes_read += read;
      if (!IsFloat(base_info.dtype)) {
        // Integer and boolean buffers are not trained: copied from the base.
        PAFT_RETURN_IF_ERROR(writer->Append(base_file.Data(base_info)));
        base_file.Release(base_info);
      } else {
        ModelTensorSource source(plan, spec.name, base_file, base_info);
        stream.out_dtype = spec.dtype;
        PAFT_RETURN_IF_ERROR(MergeTensor(
            plan.options, plan.weights, source, TensorKey(spec.name), stream,
            [&](int64_t, int64_t, absl::Span<const uint8_t> bytes) {
              return writer->AppendPartial(bytes);
            }));
        base_file.Release(base_info);
        for (const auto& input : plan.inputs) input->Release(spec.name);
      }
      total_size += base_info.numel() * static_cast<int64_t>(DTypeSize(spec.dtype));
      ++progress->tensors_done;
    }
    PAFT_RETURN_IF_ERROR(writer->Commit());
    progress->bytes_written += static_cast<int64_t>(writer->bytes_written());
  }
  if (sharded) {
    nlohmann::json index = {{"metadata", {{"total_size", total_size}}},
                            {"weight_map", weight_map}};
    PAFT_RETURN_IF_ERROR(
        WriteFileAtomic(JoinPath(dir, "model.safetensors.index.json"), index.dump(2)));
  }
  return absl::OkStatus();
}

absl::Status MergeInto(const paft::v1::MergeRequest& request, const std::string& tmp_dir,
                       MergeProgress* progress) {
  PAFT_ASSIGN_OR_RETURN(Plan plan, MakePlan(request));
  progress->tensors_total = static_cast<int64_t>(plan.specs.size());
  int threads = request.threads() > 0 ? request.threads()
                                      : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, 64);
  PAFT_RETURN_IF_ERROR(MergeAll(plan, tmp_dir, threads, progress));
  PAFT_RETURN_IF_ERROR(CopyFileDurably(JoinPath(request.base_model(), "config.json"),
                                       JoinPath(tmp_dir, "config.json")));
  PAFT_RETURN_IF_ERROR(CopyModelSideFiles(request.base_model(), tmp_dir));
  return FsyncPath(tmp_dir);
}

}  // namespace

// Temp folders of earlier merges into `out` that were killed (SIGKILL, node loss) stay beside
// it. A running merge holds an flock on its temp folder; one nobody holds is stale: removed.
void RemoveStaleTempDirs(const std::string& out) {
  const size_t slash = out.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : out.substr(0, slash));
  const std::string prefix = (slash == std::string::npos ? out : out.substr(slash + 1)) + ".tmp-";
  auto entries = ListDir(parent);
  if (!entries.ok()) return;
  for (const auto& name : *entries) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string path = JoinPath(parent, name);
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      PAFT_LOG(INFO) << "removing " << path << ", left by an interrupted merge";
      (void)RemoveAll(path);
    }
    ::close(fd);
  }
}

namespace {

// A temp folder beside `out` (parents made, stale temps of killed merges removed), held with an
// flock while this merge runs.
struct TempFolder {
  std::string path;
  int lock_fd = -1;
  ~TempFolder() {
    if (lock_fd >= 0) ::close(lock_fd);
  }
};
absl::Status MakeTempFolder(const std::string& out, TempFolder* tmp) {
  const size_t slash = out.find_last_of('/');
  if (slash != std::string::npos && slash > 0) PAFT_RETURN_IF_ERROR(MakeDirs(out.substr(0, slash)));
  RemoveStaleTempDirs(out);
  PAFT_ASSIGN_OR_RETURN(tmp->path, MakeTempDirBeside(out));
  tmp->lock_fd = ::open(tmp->path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (tmp->lock_fd >= 0) (void)::flock(tmp->lock_fd, LOCK_EX);
  return absl::OkStatus();
}

// Every output folder holds paft_merge.json with the digest of the request that wrote it, so
// that a retry after a crash between the renames of a two-folder merge finishes the work
// instead of failing on the folder already there.
constexpr char kMarker[] = "paft_merge.json";

std::string RequestDigest(const paft::v1::MergeRequest& request) {
  Sha256 h;
  h.Update(request.SerializeAsString());
  return h.HexDigest();
}

absl::Status WriteMarker(const std::string& dir, const paft::v1::MergeRequest& request,
                         const std::string& digest) {
  const nlohmann::json marker = {{"merge_id", request.merge_id()}, {"request_sha256", digest}};
  return WriteFileAtomic(JoinPath(dir, kMarker), marker.dump(2));
}

// Whether `out` is already there: false when absent, true when written by this same request,
// AlreadyExists otherwise.
absl::StatusOr<bool> AlreadyWritten(const std::string& field, const std::string& out,
                                    const std::string& digest) {
  if (!PathExists(out)) return false;
  auto text = ReadFileToString(JoinPath(out, kMarker));
  if (text.ok()) {
    auto marker = nlohmann::json::parse(*text, nullptr, false);
    if (marker.is_object() && marker.value("request_sha256", "") == digest) return true;
  }
  return absl::AlreadyExistsError(absl::StrCat(field, " '", out, "' already exists"));
}

// The merged model of an adapter-space merge: the base plus the merged adapter's delta (scale
// 1), through the streaming delta merge -- what PEFT's merge_and_unload computes.
paft::v1::MergeRequest ModelFromAdapter(const paft::v1::MergeRequest& request,
                                        const std::string& adapter_dir) {
  paft::v1::MergeRequest model = request;
  model.clear_inputs();
  auto* input = model.add_inputs();
  input->set_path(adapter_dir);
  input->mutable_params()->set_weight(1.0);
  paft::v1::MergeSpec spec;
  spec.set_method("task_arithmetic");
  spec.set_dtype(request.spec().dtype());
  *model.mutable_spec() = spec;
  return model;
}

}  // namespace

absl::Status RunMerge(const paft::v1::MergeRequest& request, MergeProgress* progress) {
  const auto& spec = request.spec();
  const std::string space = spec.merge_space().empty() ? "delta" : spec.merge_space();
  const std::string output =
      spec.output().empty() ? (space == "delta" ? "model" : "both") : spec.output();
  if (space != "delta" && space != "adapter" && space != "adapter_svd") {
    return absl::InvalidArgumentError(
        absl::StrCat("merge_space '", space, "' is not delta, adapter or adapter_svd"));
  }
  if (output != "model" && output != "adapter" && output != "both") {
    return absl::InvalidArgumentError(
        absl::StrCat("output '", output, "' is not model, adapter or both"));
  }
  if (space == "delta" && output != "model") {
    return absl::InvalidArgumentError(
        "output: a delta-space merge gives full-rank deltas, only a model can be written (merge "
        "in adapter or adapter_svd space to write an adapter)");
  }
  const bool want_model = output != "adapter", want_adapter = output != "model";
  const std::string& model_out = request.output_dir();
  const std::string& adapter_out = request.adapter_output_dir();
  if (want_model && model_out.empty()) {
    return absl::InvalidArgumentError("output_dir: is required to write a model");
  }
  if (want_adapter && adapter_out.empty()) {
    return absl::InvalidArgumentError("adapter_output_dir: is required to write an adapter");
  }
  if (want_model && want_adapter && model_out == adapter_out) {
    return absl::InvalidArgumentError("adapter_output_dir: must differ from output_dir");
  }
  const std::string digest = RequestDigest(request);
  bool model_done = false, adapter_done = false;
  if (want_model) {
    PAFT_ASSIGN_OR_RETURN(model_done, AlreadyWritten("output_dir", model_out, digest));
  }
  if (want_adapter) {
    PAFT_ASSIGN_OR_RETURN(adapter_done, AlreadyWritten("adapter_output_dir", adapter_out, digest));
  }
  TempFolder model_tmp, adapter_tmp;
  absl::Status status;
  if (want_model && !model_done) status = MakeTempFolder(model_out, &model_tmp);
  std::string adapter_dir = adapter_out;  // where the merged adapter is read from
  if (status.ok() && space != "delta" && !adapter_done) {
    // Written first: into its own temp folder, or a scratch one when only the model is wanted.
    status = MakeTempFolder(want_adapter ? adapter_out : model_out + ".adapter", &adapter_tmp);
    if (status.ok()) status = WriteMergedAdapter(request, adapter_tmp.path);
    if (status.ok() && want_adapter) status = WriteMarker(adapter_tmp.path, request, digest);
    if (status.ok() && want_adapter) status = FsyncPath(adapter_tmp.path);
    adapter_dir = adapter_tmp.path;
  }
  if (status.ok() && want_model && !model_done) {
    status = MergeInto(space == "delta" ? request : ModelFromAdapter(request, adapter_dir),
                       model_tmp.path, progress);
    if (status.ok()) status = WriteMarker(model_tmp.path, request, digest);
  }
  // Both forms complete: the adapter goes into place first, the model (what a job reports as
  // done) last. A crash between the two renames is finished by the retry (the markers).
  if (status.ok() && want_adapter && !adapter_done) status = RenameDurably(adapter_tmp.path, adapter_out);
  if (status.ok() && want_model && !model_done) status = RenameDurably(model_tmp.path, model_out);
  if (!adapter_tmp.path.empty() && (!status.ok() || !want_adapter)) (void)RemoveAll(adapter_tmp.path);
  if (!status.ok() && !model_tmp.path.empty()) (void)RemoveAll(model_tmp.path);
  return status;
}

}  // namespace paft::merger
