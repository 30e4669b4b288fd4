// paftctl's view of a job's merge search (`paftctl merges JOB`): the references and candidates
// with their validation metrics and scores, the chosen one marked.
#ifndef PAFT_CLI_MERGE_TABLE_H_
#define PAFT_CLI_MERGE_TABLE_H_

#include <string>

#include "paft/v1/job.pb.h"

namespace paft::cli {

std::string FormatMergeSearch(const paft::v1::MergeSearchResult& result);

}  // namespace paft::cli

#endif  // PAFT_CLI_MERGE_TABLE_H_
