#include "merger/merger.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/hf_config.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "merger/merge_methods.h"

namespace paft::merger {
namespace {

// Files of a Hugging Face model folder other than weights that the merged folder keeps.
constexpr const char* kSideFiles[] = {
    "config.json",           "generation_config.json", "tokenizer.json",
    "tokenizer.model",       "tokenizer_config.json",  "special_tokens_map.json",
};

absl::StatusOr<DType> OutputDType(const std::string& dtype, DType base) {
  if (dtype.empty()) return base;
  if (dtype == "float32") return DType::kF32;
  if (dtype == "bfloat16") return DType::kBF16;
  if (dtype == "float16") return DType::kF16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported output dtype '", dtype, "'"));
}

bool MergeableDType(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

std::vector<float> ToFloat(const SafetensorsFile& file, const TensorInfo& info) {
  auto data = file.Data(info);
  std::vector<float> out(static_cast<size_t>(info.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = LoadAsFloat(info.dtype, data.data(), i);
  return out;
}

absl::Status MergeInto(const paft::v1::MergeRequest& request, const std::string& tmp_dir,
                       MergeProgress* progress) {
  PAFT_ASSIGN_OR_RETURN(MergeMethod method, ParseMergeMethod(request.spec().method()));
  if (request.inputs().empty()) return absl::InvalidArgumentError("inputs: at least one needed");
  PAFT_ASSIGN_OR_RETURN(ModelConfig base_config, LoadModelConfig(request.base_model()));
  PAFT_ASSIGN_OR_RETURN(auto base, SafetensorsModel::Open(request.base_model()));

  std::vector<std::unique_ptr<SafetensorsModel>> inputs;
  std::vector<InputWeights> weights;
  for (const auto& input : request.inputs()) {
    if (PathExists(JoinPath(input.path(), "adapter_config.json"))) {
      return absl::UnimplementedError(absl::StrCat(
          "input ", input.path(), " is a PEFT adapter; adapter inputs arrive with the merger "
          "issue"));
    }
    PAFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(input.path()));
    if (config.vocab_size != base_config.vocab_size ||
        config.hidden_size != base_config.hidden_size ||
        config.num_hidden_layers != base_config.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input ", input.path(), " has a different architecture than the base (vocab_size ",
          config.vocab_size, " vs ", base_config.vocab_size, ", hidden_size ",
          config.hidden_size, " vs ", base_config.hidden_size, ", layers ",
          config.num_hidden_layers, " vs ", base_config.num_hidden_layers, ")"));
    }
    PAFT_ASSIGN_OR_RETURN(auto model, SafetensorsModel::Open(input.path()));
    if (model->names() != base->names()) {
      std::vector<std::string> missing, extra;
      for (const auto& n : base->names()) {
        if (!model->Find(n).ok()) missing.push_back(n);
      }
      for (const auto& n : model->names()) {
        if (!base->Find(n).ok()) extra.push_back(n);
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "input ", input.path(), " does not have the base's tensors; missing: [",
          absl::StrJoin(missing, ", "), "], unexpected: [", absl::StrJoin(extra, ", "), "]"));
    }
    InputWeights w;
    w.weight = input.params().weight();
    w.density = input.params().density() == 0 ? 1.0 : input.params().density();
    if (!(w.density > 0 && w.density <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", input.path(), ": density must be in (0, 1]"));
    }
    weights.push_back(w);
    inputs.push_back(std::move(model));
  }

  MergeOptions options;
  options.method = method;
  options.lambda = request.spec().lambda() == 0 ? 1.0 : request.spec().lambda();
  options.normalize = request.spec().normalize();

  // Header first: every tensor keeps its name and shape; float tensors take the output dtype.
  std::vector<TensorSpec> specs;
  for (const std::string& name : base->names()) {
    PAFT_ASSIGN_OR_RETURN(auto found, base->Find(name));
    const TensorInfo& info = *found.second;
    for (size_t i = 0; i < inputs.size(); ++i) {
      PAFT_ASSIGN_OR_RETURN(auto other, inputs[i]->Find(name));
      if (other.second->shape != info.shape) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "': shape [", absl::StrJoin(other.second->shape, ","),
                         "] in ", request.inputs(i).path(), " differs from the base's [",
                         absl::StrJoin(info.shape, ","), "]"));
      }
      if (MergeableDType(info.dtype) != MergeableDType(other.second->dtype)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", name, "': dtype ", DTypeName(other.second->dtype), " in ",
            request.inputs(i).path(), " cannot be merged with the base's ",
            DTypeName(info.dtype)));
      }
    }
    TensorSpec spec{name, info.dtype, info.shape};
    if (MergeableDType(info.dtype)) {
      PAFT_ASSIGN_OR_RETURN(spec.dtype, OutputDType(request.spec().dtype(), info.dtype));
    }
    specs.push_back(std::move(spec));
  }
  progress->tensors_total = static_cast<int64_t>(specs.size());
  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"paft_merge_method", request.spec().method()}};
  PAFT_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(
                                         JoinPath(tmp_dir, "model.safetensors"), specs, metadata));

  std::vector<uint8_t> out_bytes;
  for (const TensorSpec& spec : specs) {
    PAFT_ASSIGN_OR_RETURN(auto found, base->Find(spec.name));
    const SafetensorsFile& base_file = *found.first;
    const TensorInfo& base_info = *found.second;
    const int64_t n = base_info.numel();
    progress->bytes_read += static_cast<int64_t>(base_info.nbytes());
    if (!MergeableDType(base_info.dtype)) {
      // Integer/bool buffers are not trained: copied from the base.
      auto data = base_file.Data(base_info);
      PAFT_RETURN_IF_ERROR(writer->Append(data));
    } else {
      std::vector<float> base_values = ToFloat(base_file, base_info);
      std::vector<std::vector<float>> input_values;
      std::vector<const float*> input_ptrs;
      for (const auto& model : inputs) {
        PAFT_ASSIGN_OR_RETURN(auto in, model->Find(spec.name));
        input_values.push_back(ToFloat(*in.first, *in.second));
        progress->bytes_read += static_cast<int64_t>(in.second->nbytes());
      }
      for (const auto& v : input_values) input_ptrs.push_back(v.data());
      std::vector<float> merged(static_cast<size_t>(n));
      MergeTensor(options, base_values.data(), input_ptrs, weights, n, merged.data());
      out_bytes.assign(static_cast<size_t>(n) * DTypeSize(spec.dtype), 0);
      for (int64_t i = 0; i < n; ++i) StoreFromFloat(spec.dtype, out_bytes.data(), i, merged[i]);
      PAFT_RETURN_IF_ERROR(writer->Append(out_bytes));
    }
    ++progress->tensors_done;
  }
  PAFT_RETURN_IF_ERROR(writer->Commit());
  progress->bytes_written = static_cast<int64_t>(writer->bytes_written());

  for (const char* name : kSideFiles) {
    const std::string from = JoinPath(request.base_model(), name);
    if (IsRegularFile(from)) PAFT_RETURN_IF_ERROR(CopyFileDurably(from, JoinPath(tmp_dir, name)));
  }
  return FsyncPath(tmp_dir);
}

}  // namespace

absl::Status RunMerge(const paft::v1::MergeRequest& request, MergeProgress* progress) {
  const std::string& out = request.output_dir();
  if (out.empty()) return absl::InvalidArgumentError("output_dir: is required");
  if (PathExists(out)) {
    return absl::AlreadyExistsError(absl::StrCat("output_dir '", out, "' already exists"));
  }
  std::string parent = out.substr(0, out.find_last_of('/') == std::string::npos
                                         ? 0
                                         : out.find_last_of('/'));
  if (!parent.empty()) PAFT_RETURN_IF_ERROR(MakeDirs(parent));
  PAFT_ASSIGN_OR_RETURN(std::string tmp_dir, MakeTempDirBeside(out));
  absl::Status status = MergeInto(request, tmp_dir, progress);
  if (status.ok()) status = RenameDurably(tmp_dir, out);
  if (!status.ok()) (void)RemoveAll(tmp_dir);
  return status;
}

}  // namespace paft::merger
