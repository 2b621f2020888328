// JSON Lines reader; see jsonl.h.
#include "io/jsonl.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace unime::io {

void read_jsonl(const std::string& path,
                const std::function<void(int64_t line, const nlohmann::json& row)>& fn) {
  std::ifstream in(path, std::ios::binary);
  UNIME_CHECK(in.good(), path, ": cannot open");
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::string msg = e.what();
      if (msg.find("UTF-8") != std::string::npos || msg.find("utf-8") != std::string::npos)
        throw Error(str(path, ":", n, ": not valid UTF-8 (", e.what(), ")"));
      throw Error(str(path, ":", n, ": not valid JSON (", e.what(), ")"));
    }
    UNIME_CHECK(row.is_object(), path, ":", n, ": expected a JSON object, got ", row.type_name());
    fn(n, row);
  }
  UNIME_CHECK(!in.bad(), path, ": read error");
}

std::string json_string(const nlohmann::json& row, const char* key, const std::string& where,
                        const std::string& def) {
  if (!row.contains(key) || row.at(key).is_null()) return def;
  UNIME_CHECK(row.at(key).is_string(), where, ": '", key, "' must be a string, got ",
              row.at(key).type_name());
  return row.at(key).get<std::string>();
}

}  // namespace unime::io
