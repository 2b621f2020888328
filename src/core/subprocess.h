// Child processes of this executable (`/proc/self/exe`) that never outlive their parent: the
// demo's side-by-side stage-2 arms and `unime train --nproc N`'s ranks. Killing the parent (SIGTERM,
// SIGKILL, a crash) takes the children down with it (Linux PR_SET_PDEATHSIG), so no orphaned
// trainer goes on writing into an output folder that a rerun is about to use.
//
//   pid_t pid = unime::spawn_self({"unime", "train", "instruct", ...}, {{"RANK", "0"}}, "out.log");
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace unime {

/// Starts this executable with `argv` (argv[0] included) and the current environment plus `env`
/// (name, value; replacing a variable of the same name). With a non-empty `log`, stdout and
/// stderr go to that file (created or truncated). The child gets SIGTERM when this process dies -
/// precisely, when the calling thread exits (Linux semantics): call it from a thread that outlives
/// the child, as the main thread that waits for it does.
/// Returns the child's pid; throws unime::Error when the process cannot be created. A child that
/// cannot open its log or exec exits with status 127.
pid_t spawn_self(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, std::string>>& env,
                 const std::string& log = "");

}  // namespace unime
