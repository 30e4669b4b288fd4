// paftctl's exit codes (its usage text says what each means).
#ifndef PAFT_CLI_EXIT_CODES_H_
#define PAFT_CLI_EXIT_CODES_H_

namespace paft::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitJobFailed = 1;  // watch / submit --watch: the job FAILED or was CANCELLED
inline constexpr int kExitUsage = 2;      // usage or spec errors
inline constexpr int kExitRpc = 3;        // the coordinator could not be reached or refused the call

}  // namespace paft::cli

#endif  // PAFT_CLI_EXIT_CODES_H_
