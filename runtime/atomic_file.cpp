#include "runtime/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace kiln {
namespace {

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Checks `path` without creating anything: not empty, its directory exists and is writable by
// access(), and `path` is a regular file or nothing. A rename would replace a device or a FIFO
// (/dev/null, say) with a regular file.
absl::Status CheckDestination(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("the output path is empty");

  const std::string directory = ParentDirectory(path);
  struct stat info;
  if (::stat(directory.c_str(), &info) != 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("cannot write '", path, "': directory '", directory,
                                            "' is not accessible; create it first"));
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write '", path, "': '", directory, "' is not a directory"));
  }
  if (::access(directory.c_str(), W_OK) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "': directory '",
                                                   directory, "' is not writable"));
  }

  if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write '", path, "': it is a directory; name a file"));
  }
  if (::lstat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode) && !S_ISLNK(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write '", path, "': it exists and is not a regular file; choose another path"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckOutputPath(const std::string& link_or_path) {
  absl::StatusOr<std::string> followed = FollowLinks(link_or_path);
  if (!followed.ok()) return followed.status();
  const std::string& path = *followed;
  if (absl::Status status = CheckDestination(path); !status.ok()) return status;

  // access() grants root write access everywhere, /proc included, so create and remove a file.
  const std::string probe = absl::StrCat(path, ".probe-", ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "' in directory '",
                                                   ParentDirectory(path),
                                                   "'; choose another directory"));
  }
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  // A symbolic link stays one: the file it points to is replaced.
  absl::StatusOr<std::string> followed = FollowLinks(path);
  if (!followed.ok()) return followed.status();
  const std::string& destination = *followed;
  // No probe file: creating the temporary file below tests the same thing.
  if (absl::Status status = CheckDestination(destination); !status.ok()) return status;
  RemoveStaleTemporaries(destination);

  // O_EXCL makes each temporary name this process's own, also when another process or a
  // concurrent writer in this one uses the same destination.
  static std::atomic<int> counter{0};
  std::string temp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    temp = absl::StrCat(destination, ".tmp-", ::getpid(), "-", counter.fetch_add(1));
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "' in directory '",
                                                   ParentDirectory(destination),
                                                   "'; choose another directory"));
  }

  // Write everything, flush it to disk and close. The first failure removes the temporary file.
  int error = KeepPermissions(destination, fd);
  const char* data = contents.data();
  size_t left = contents.size();
  while (left > 0 && error == 0) {
    const ssize_t written = ::write(fd, data, left);
    if (written < 0) {
      if (errno != EINTR) error = errno;
      continue;
    }
    data += written;
    left -= static_cast<size_t>(written);
  }
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error == 0 && ::rename(temp.c_str(), destination.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(temp.c_str());
    return absl::ErrnoToStatus(
        error, absl::StrCat("failed to write '", path, "' (through temporary file '", temp, "')"));
  }
  // The rename is durable once the directory is flushed too. The new file is complete either
  // way, so a directory that cannot be flushed (some file systems refuse) is not an error.
  const int directory =
      ::open(ParentDirectory(destination).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory >= 0) {
    ::fsync(directory);
    ::close(directory);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FollowLinks(const std::string& path) {
  // Linux follows at most 40 links in a path (MAXSYMLINKS in fs/namei.c).
  constexpr int kMaxLinks = 40;
  std::filesystem::path current = path;
  for (int links = 0; links <= kMaxLinks; ++links) {
    struct stat info;
    if (::lstat(current.c_str(), &info) != 0 || !S_ISLNK(info.st_mode)) return current.string();
    std::error_code error;
    const std::filesystem::path target = std::filesystem::read_symlink(current, error);
    if (error) {
      return absl::ErrnoToStatus(
          error.value(), absl::StrCat("cannot read symbolic link '", current.string(), "'"));
    }
    current = target.is_absolute() ? target : current.parent_path() / target;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "cannot write '", path, "': its symbolic links form a loop (or a chain of more than ",
      kMaxLinks, "); point it at a file"));
}

int KeepPermissions(const std::string& path, int fd) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) return 0;  // a new file: the umask decides
  return ::fchmod(fd, info.st_mode & 07777) == 0 ? 0 : errno;
}

void RemoveStaleTemporaries(const std::string& path) {
  const std::string directory = ParentDirectory(path);
  const std::string prefix = path.substr(path.rfind('/') + 1) + ".tmp-";
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (!absl::ConsumePrefix(&name, prefix)) continue;
    const size_t dash = name.find('-');
    int pid = 0;
    if (dash == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dash), &pid) ||
        pid <= 0 || pid == ::getpid()) {
      continue;
    }
    // kill(pid, 0) fails with ESRCH only when no such process exists.
    if (::kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(directory + "/" + entry->d_name);
  }
  ::closedir(dir);
  for (const std::string& file : stale) ::unlink(file.c_str());
}

absl::Status CheckNotSpecialFile(const std::string& path, absl::string_view description) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0 || S_ISREG(info.st_mode)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      description, " '", path, "' is ",
      S_ISDIR(info.st_mode) ? "a directory" : "not a regular file (a FIFO, socket or device)",
      "; name a regular file"));
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view description) {
  if (absl::Status s = CheckNotSpecialFile(path, description); !s.ok()) return s;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", description, " '", path, "'"));
  }
  std::string bytes;
  char buffer[1 << 16];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file)) > 0) bytes.append(buffer, count);
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) {
    return absl::ErrnoToStatus(error, absl::StrCat("failed to read ", description, " '", path, "'"));
  }
  return bytes;
}

}  // namespace kiln
