// paftctl's output: jobs, events, progress lines and bars, the merge search's table, JSON.
#ifndef PAFT_CLI_PRINTERS_H_
#define PAFT_CLI_PRINTERS_H_

#include <map>
#include <string>

#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "paft/v1/job.pb.h"

namespace paft::cli {

std::string JobStateName(paft::v1::JobState s);      // "RUNNING"
std::string BranchStateName(paft::v1::BranchState s);  // "SUCCEEDED"
// A stored event as one line: time, what changed, reason and message.
std::string EventLine(const paft::v1::JobEvent& event);
// The proto JSON mapping with the proto's field names, indented.
std::string ToJson(const google::protobuf::Message& message);
// A job and its gangs (or with `json`, the Job as JSON) on stdout.
void PrintJob(const paft::v1::Job& job, bool json);
// The merge search's table (`paftctl merges`): references and candidates with their validation
// metrics and scores, the chosen one marked.
std::string FormatMergeSearch(const paft::v1::MergeSearchResult& result);

// Event lines scroll; on a terminal the branches' progress bars stay below them, redrawn in
// place. Elsewhere (logs, CI) progress is printed as lines, at most every `every`.
class WatchPrinter {
 public:
  explicit WatchPrinter(absl::Duration every);

  void Event(const std::string& line);
  void Progress(const paft::v1::JobEvent& event);
  // A gang left RUNNING: its bar goes.
  void EndBar(int kind);
  void Finish() { ClearBars(); }

 private:
  void ClearBars();
  void DrawBars();

  const bool tty_;
  const absl::Duration every_;
  std::map<int, std::string> bars_;
  std::map<int, absl::Time> last_printed_;
  int drawn_ = 0;
};

}  // namespace paft::cli

#endif  // PAFT_CLI_PRINTERS_H_
