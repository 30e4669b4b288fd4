#include "common/merge_request.h"

namespace paft {

paft::v1::MergeRequest BranchMergeRequest(const std::string& base_model,
                                          const std::string& sft_checkpoint,
                                          const std::string& alignment_checkpoint,
                                          const paft::v1::MergeSpec& merge) {
  paft::v1::MergeRequest request;
  request.set_base_model(base_model);
  auto* sft = request.add_inputs();
  sft->set_path(sft_checkpoint);
  *sft->mutable_params() = merge.sft();
  auto* alignment = request.add_inputs();
  alignment->set_path(alignment_checkpoint);
  *alignment->mutable_params() = merge.alignment();
  *request.mutable_spec() = merge;
  request.mutable_spec()->clear_search();
  return request;
}

}  // namespace paft
