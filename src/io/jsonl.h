// JSON Lines input: one JSON object per line, errors name the file and line.
#pragma once

#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace unime::io {

/// Calls fn(line_number, object) for each non-blank line (1-based numbers). A line that is not
/// UTF-8, not JSON, or not an object is an Error "path:line: problem".
void read_jsonl(const std::string& path,
                const std::function<void(int64_t line, const nlohmann::json& row)>& fn);

/// Field readers for rows: missing -> default; wrong type -> Error "where: 'key' must be ...".
std::string json_string(const nlohmann::json& row, const char* key, const std::string& where,
                        const std::string& def = "");

}  // namespace unime::io
