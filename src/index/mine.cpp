// Hard-negative mining against an index: see mine.h. Legend: R rows, D embedding dim.
#include "index/mine.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "core/error.h"
#include "index/corpus.h"
#include "io/fs.h"
#include "io/jsonl.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace unime::index {

namespace {

struct Row {
  json raw;              // the input row, image paths made absolute
  EmbedInput qry, pos;
  std::string pos_text;  // for the identity check
  std::vector<std::string> pos_images;
  json pos_id;           // null when absent
};

}  // namespace

MineStats mine_hard_negatives(const Index& index, Embedder& emb, const std::string& input, const std::string& output,
                              const MineOptions& opt) {
  UNIME_CHECK(opt.range_min >= 0 && opt.range_max > opt.range_min, "mine: need 0 <= --range-min < --range-max, got ",
              opt.range_min, " and ", opt.range_max);
  UNIME_CHECK(opt.num_negatives >= 1, "mine: --num-negatives must be at least 1");
  UNIME_CHECK(opt.sampling == "top" || opt.sampling == "random", "mine: --sampling must be top or random, got '",
              opt.sampling, "'");
  // ---- rows ----
  const fs::path root = opt.image_root.empty() ? fs::path(input).parent_path() : fs::path(opt.image_root);
  std::vector<Row> rows;
  io::read_jsonl(input, [&](int64_t line, const json& r) {
    Row row;
    row.raw = r;
    const std::string where = str(input, ":", line);
    auto side = [&](const char* text_key, const char* image_key) {
      EmbedInput in;
      in.where = where;
      in.text = io::json_string(r, text_key, where);
      const std::string img = io::json_string(r, image_key, where);
      if (!img.empty()) {
        const std::string abs = absolute_path(fs::path(img).is_absolute() || root.empty() ? img : (root / img).string());
        UNIME_CHECK(fs::is_regular_file(abs), where, ": '", image_key, "' ", img, " not found (looked for ", abs, ")");
        in.images.push_back(abs);
        row.raw[image_key] = abs;
      }
      return in;
    };
    row.qry = side("qry", "qry_image_path");
    row.pos = side("pos_text", "pos_image_path");
    UNIME_CHECK(!row.qry.text.empty() || !row.qry.images.empty(), where, ": empty query (qry and qry_image_path)");
    UNIME_CHECK(!row.pos.text.empty() || !row.pos.images.empty(), where,
                ": empty positive (pos_text and pos_image_path)");
    if (r.contains("pos_id") && !r["pos_id"].is_null()) {
      check_id(r["pos_id"], where + " ('pos_id')");
      row.pos_id = r["pos_id"];
    }
    for (const char* k : {"neg_text", "neg_image_path", "neg_id", "neg_score", "pos_score"}) row.raw.erase(k);
    row.pos_text = row.pos.text;
    row.pos_images = row.pos.images;
    rows.push_back(std::move(row));
  });
  UNIME_CHECK(!rows.empty(), input, ": no training rows");
  const auto R = static_cast<int64_t>(rows.size());
  const int64_t D = emb.dim();

  // ---- embeddings: queries then positives, one pass ----
  std::vector<EmbedInput> all;
  all.reserve(static_cast<size_t>(2 * R));
  for (const auto& r : rows) all.push_back(r.qry);
  for (const auto& r : rows) all.push_back(r.pos);
  const std::vector<float> e = embed_with_progress(emb, all, "mine");  // [2R * D]

  // ---- per row: rank, filter, sample ----
  MineStats st;
  st.rows = R;
  std::mt19937_64 rng(opt.seed);
  const int64_t N = index.size();
  io::AtomicFile out(output);
  std::string buf;
  double pos_sum = 0, neg_sum = 0;
  for (int64_t i = 0; i < R; ++i) {
    const Row& row = rows[static_cast<size_t>(i)];
    const float* q = e.data() + i * D;
    const float* p = e.data() + (R + i) * D;
    double pos_score = 0;
    for (int64_t d = 0; d < D; ++d) pos_score += static_cast<double>(q[d]) * p[d];
    pos_sum += pos_score;
    auto is_positive = [&](const Payload& c) {
      if (!row.pos_id.is_null() && id_key(c.id) == id_key(row.pos_id)) return true;
      return c.text == row.pos_text && c.images == row.pos_images;
    };
    // rank window over the candidates that are not the positive; widen the search until it holds
    std::vector<Hit> ranked;
    for (int64_t K = std::min(N, opt.range_max + 8);; K = std::min(N, 2 * K)) {
      ranked.clear();
      int64_t skipped = 0;
      for (const Hit& h : index.search_one(q, K)) {
        if (is_positive(index.payload(h.row))) ++skipped;
        else ranked.push_back(h);
      }
      if (static_cast<int64_t>(ranked.size()) >= opt.range_max || K >= N) {
        st.positives_skipped += skipped;
        break;
      }
    }
    std::vector<Hit> cand;
    for (int64_t r = opt.range_min; r < std::min<int64_t>(opt.range_max, static_cast<int64_t>(ranked.size())); ++r) {
      const Hit& h = ranked[static_cast<size_t>(r)];
      const double s = h.score;
      const Payload& c = index.payload(h.row);
      if (c.text.empty() && c.image.empty()) continue;  // an input_ids row: nothing to write as neg_*
      if (opt.max_score && s > *opt.max_score) continue;
      if (opt.min_score && s < *opt.min_score) continue;
      if (opt.absolute_margin && s > pos_score - *opt.absolute_margin) continue;
      if (opt.relative_margin && s > pos_score * (1.0 - *opt.relative_margin)) continue;
      cand.push_back(h);
    }
    std::vector<size_t> pick(cand.size());
    std::iota(pick.begin(), pick.end(), size_t{0});
    if (opt.sampling == "random" && static_cast<int64_t>(cand.size()) > opt.num_negatives) {
      // partial Fisher-Yates with mt19937_64 (std::shuffle's algorithm is implementation-defined)
      for (size_t j = 0; j < static_cast<size_t>(opt.num_negatives); ++j)
        std::swap(pick[j], pick[j + static_cast<size_t>(rng() % (pick.size() - j))]);
      pick.resize(static_cast<size_t>(opt.num_negatives));
      std::sort(pick.begin(), pick.end());  // keep rank order in the output
    } else if (static_cast<int64_t>(pick.size()) > opt.num_negatives) {
      pick.resize(static_cast<size_t>(opt.num_negatives));
    }
    if (!pick.empty()) ++st.rows_with_negatives;
    for (size_t j : pick) {
      const Payload& n = index.payload(cand[j].row);
      json o = row.raw;
      o["neg_text"] = n.text;
      o["neg_image_path"] = n.image;
      o["neg_id"] = n.id;
      o["neg_score"] = cand[j].score;
      o["pos_score"] = pos_score;
      buf += o.dump(-1, ' ', false, json::error_handler_t::replace);
      buf += '\n';
      ++st.negatives;
      neg_sum += cand[j].score;
    }
    if (buf.size() > (1 << 20)) {
      out.write(buf);
      buf.clear();
    }
  }
  out.write(buf);
  out.commit();
  st.mean_pos_score = pos_sum / static_cast<double>(R);
  st.mean_neg_score = st.negatives ? neg_sum / static_cast<double>(st.negatives) : 0.0;
  return st;
}

}  // namespace unime::index
