// Helpers shared by the subcommands in tools/.
#pragma once

#include <CLI/CLI.hpp>

#include "core/error.h"
#include "unime/runtime.h"

namespace unime::tools {



}  // namespace unime::tools
