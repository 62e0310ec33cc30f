/** \file
 * Output files that appear whole or not at all: the bytes go to a temporary file next to the
 * destination, which a rename then moves into place. Also the matching whole-file read.
 *
 *   if (absl::Status s = kiln::CheckOutputPath("fit.csv"); !s.ok()) return s;  // before work
 *   ...
 *   absl::Status s = kiln::WriteFileAtomically("fit.csv", csv);
 */
#ifndef KILN_RUNTIME_ATOMIC_FILE_H_
#define KILN_RUNTIME_ATOMIC_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kiln {

/// Checks that a file could be created at `path`, so a run can reject a bad path before it
/// trains: the path is not empty, its directory exists, `path` itself is not a directory, and a
/// probe file "<path>.probe-<pid>" can be created there (it is removed at once). `path` itself
/// is not created. A failed check returns an error status whose message names the path.
absl::Status CheckOutputPath(const std::string& path);

/// Writes `contents` to `path`, replacing any file there. The data goes first to
/// "<path>.tmp-<pid>-<n>", which is renamed to `path` once it is complete and flushed to disk.
/// On error the temporary file is removed and `path` is unchanged. The message names `path`.
/// When `path` is a symbolic link, the file it points to is replaced and the link stays; a
/// replaced file keeps its permissions.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

/// Returns the path that a chain of symbolic links at `path` ends in, or `path` itself when it is
/// no link. That path may not exist yet (a link to a file still to be written). Writers replace
/// the file there, so the link stays. A loop of links is an InvalidArgument error naming `path`.
absl::StatusOr<std::string> FollowLinks(const std::string& path);

/// Gives the open file `fd` the permission bits of the file at `path`, so that a file replaced by
/// a rename keeps them. Does nothing when no file is there. Returns 0 or the failure's errno.
int KeepPermissions(const std::string& path, int fd);

/// Removes the temporary files "<path>.tmp-<pid>-<n>" that writers of `path` in processes no
/// longer running left behind (a save killed before its rename). Errors are ignored: the files
/// only take space.
void RemoveStaleTemporaries(const std::string& path);

/// Returns an error naming `description` and `path` when `path` exists but is not a regular
/// file: opening a FIFO blocks until another process opens its other end, and a device or a
/// directory is never the file meant.
absl::Status CheckNotSpecialFile(const std::string& path, absl::string_view description);

/// Returns the bytes of the file at `path`. Errors name `description` and the path: "cannot
/// read <description> '<path>'" with the errno status when the file cannot be opened (NotFound
/// when it is missing), and "failed to read <description> '<path>'" when reading fails.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view description);

}  // namespace kiln

#endif  // KILN_RUNTIME_ATOMIC_FILE_H_
