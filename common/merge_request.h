// The merge of a job's two branches as the merger is asked for it. One builder for the
// coordinator (the job's merge) and the merge search (its candidates), so that a candidate is
// merged exactly as the job's merge of it will be.
#ifndef PAFT_COMMON_MERGE_REQUEST_H_
#define PAFT_COMMON_MERGE_REQUEST_H_

#include <string>

#include "paft/v1/merger.pb.h"

namespace paft {

// base_model, the sft then the alignment checkpoint with merge.sft / merge.alignment as their
// parameters, and `merge` as the spec (its search, if any, dropped). The caller sets the merge
// id, the output folders and the threads.
paft::v1::MergeRequest BranchMergeRequest(const std::string& base_model,
                                          const std::string& sft_checkpoint,
                                          const std::string& alignment_checkpoint,
                                          const paft::v1::MergeSpec& merge);

}  // namespace paft

#endif  // PAFT_COMMON_MERGE_REQUEST_H_
