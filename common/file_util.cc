#include "common/file_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paft {
namespace fs = std::filesystem;

namespace {

std::string ParentOf(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat("writing ", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening ", path));
  std::string out;
  char buffer[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      return ErrnoToStatus(saved, absl::StrCat("reading ", path));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

absl::Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening ", path, " for fsync"));
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  if (rc != 0) return ErrnoToStatus(saved, absl::StrCat("fsync of ", path));
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents) {
  std::string tmp = absl::StrCat(path, ".tmp-XXXXXX");
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("creating a temp file for ", path));
  absl::Status status = WriteAll(fd, contents, tmp);
  if (status.ok() && ::fchmod(fd, 0644) != 0) status = ErrnoToStatus(errno, "chmod " + tmp);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoToStatus(errno, "fsync of " + tmp);
  if (::close(fd) != 0 && status.ok()) status = ErrnoToStatus(errno, "closing " + tmp);
  if (status.ok()) status = RenameDurably(tmp, path);
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

absl::StatusOr<std::string> MakeTempDirBeside(const std::string& final_path) {
  std::string tmp = absl::StrCat(final_path, ".tmp-XXXXXX");
  if (::mkdtemp(tmp.data()) == nullptr) {
    return ErrnoToStatus(errno, absl::StrCat("creating a temp folder beside ", final_path));
  }
  return tmp;
}

absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("renaming ", from, " to ", to));
  }
  return FsyncPath(ParentOf(to));
}

absl::Status CopyFileDurably(const std::string& from, const std::string& to) {
  PAFT_ASSIGN_OR_RETURN(std::string data, ReadFileToString(from));
  int fd = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("creating ", to));
  absl::Status status = WriteAll(fd, data, to);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoToStatus(errno, "fsync of " + to);
  ::close(fd);
  return status;
}

absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("creating folder ", path));
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("removing ", path));
  return absl::OkStatus();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) {
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("listing ", path));
  std::sort(names.begin(), names.end());
  return names;
}

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  if (a.back() == '/') return absl::StrCat(a, b);
  return absl::StrCat(a, "/", b);
}

}  // namespace paft
