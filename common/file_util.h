// Filesystem helpers with durable, atomic writes: data is fsynced before it is renamed into
// place and the parent directory is fsynced after, so a crash leaves the old or the new content,
// never a torn file.
#ifndef PAFT_COMMON_FILE_UTIL_H_
#define PAFT_COMMON_FILE_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paft {

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `contents` to `path` atomically (temp file in the same folder, fsync, rename, fsync of
// the folder).
absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents);

// fsync of a file or folder.
absl::Status FsyncPath(const std::string& path);

// Creates a fresh folder "<final_path>.tmp-XXXXXX" beside `final_path` (same filesystem, so it
// can be renamed onto it).
absl::StatusOr<std::string> MakeTempDirBeside(const std::string& final_path);

// Renames `from` to `to` (which must not exist as a non-empty folder) and fsyncs the parent.
absl::Status RenameDurably(const std::string& from, const std::string& to);

// Copies a regular file and fsyncs the copy.
absl::Status CopyFileDurably(const std::string& from, const std::string& to);

absl::Status MakeDirs(const std::string& path);
absl::Status RemoveAll(const std::string& path);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
bool IsRegularFile(const std::string& path);
// Names of the entries in a folder, sorted.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path);
std::string JoinPath(absl::string_view a, absl::string_view b);

}  // namespace paft

#endif  // PAFT_COMMON_FILE_UTIL_H_
