// Streaming merge of model folders: tensors are read through mmap one at a time, merged in float,
// converted to the output dtype and appended to the output file, so peak memory is a few tensors.
// The output folder is assembled in a temp folder beside it and renamed into place when complete;
// on any error nothing is left at the output path.
#ifndef PAFT_MERGER_MERGER_H_
#define PAFT_MERGER_MERGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "paft/v1/merger.pb.h"

namespace paft::merger {

struct MergeProgress {
  std::atomic<int64_t> tensors_done{0};
  std::atomic<int64_t> tensors_total{0};
  std::atomic<int64_t> bytes_read{0};
  std::atomic<int64_t> bytes_written{0};
};

// Runs the merge described by `request` (base_model, inputs, spec, output_dir), updating
// `progress` as it goes. Errors name the tensor or file at fault.
absl::Status RunMerge(const paft::v1::MergeRequest& request, MergeProgress* progress);

}  // namespace paft::merger

#endif  // PAFT_MERGER_MERGER_H_
