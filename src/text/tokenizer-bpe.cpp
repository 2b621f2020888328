// BPE model (see tokenizer-bpe.h). Merging picks, among the current adjacent pairs that have a
// merge, the lowest rank and then the leftmost position, which is exactly the order of the
// reference's priority queue (word.rs merge_all). Short words use a flat O(n^2) scan with cached
// pair ranks; long words use the reference's heap + linked list, so a 1 MB word stays
// O(n log n).
#include "text/tokenizer-bpe.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <limits>
#include <queue>

#include "core/error.h"
#include "text/tokenizer-unicode.h"

namespace unime::text::detail {

namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();
constexpr size_t kSmallWord = 48;       // symbols; above this the heap loop wins
constexpr size_t kCacheMaxBytes = 256;  // words longer than this are not cached (as the reference)
constexpr size_t kCacheMaxEntries = 1 << 16;

std::atomic<uint64_t> g_next_uid{1};

inline uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

struct WordCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
};

}  // namespace

Bpe::Bpe(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
         BpeOptions options, const std::string& where)
    : vocab_(std::move(vocab)), opt_(std::move(options)), uid_(g_next_uid++) {
  if (opt_.continuing_subword_prefix && opt_.continuing_subword_prefix->empty())
    opt_.continuing_subword_prefix.reset();
  if (opt_.end_of_word_suffix && opt_.end_of_word_suffix->empty()) opt_.end_of_word_suffix.reset();

  vocab_r_.reserve(vocab_.size());
  bmp_ids_.assign(0x10000, -1);
  for (const auto& [tok, id] : vocab_) {
    vocab_r_[id] = tok;
    if (id > max_id_) max_id_ = id;
    if (!tok.empty() && tok.size() <= 3) {
      size_t i = 0;
      const char32_t cp = next_cp(tok, i);
      if (i == tok.size() && cp < 0x10000) bmp_ids_[cp] = id;
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab_.find(std::string_view(name));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  if (opt_.unk_token) {
    auto it = vocab_.find(*opt_.unk_token);
    if (it != vocab_.end()) unk_id_ = it->second;
  }

  size_t cap = 16;
  while (cap < merges.size() * 2 + 16) cap <<= 1;
  merges_.assign(cap, MergeEntry{kEmpty, 0, 0});
  merge_mask_ = cap - 1;
  const size_t prefix_len =
      opt_.continuing_subword_prefix ? opt_.continuing_subword_prefix->size() : 0;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a);
    UNIME_CHECK(ia != vocab_.end(), where, ": merge ", rank, " ('", a, "' '", b, "'): '", a,
                "' is not in the vocab");
    auto ib = vocab_.find(b);
    UNIME_CHECK(ib != vocab_.end(), where, ": merge ", rank, " ('", a, "' '", b, "'): '", b,
                "' is not in the vocab");
    UNIME_CHECK(b.size() >= prefix_len, where, ": merge ", rank, " ('", a, "' '", b,
                "'): right part is shorter than continuing_subword_prefix");
    std::string joined = a + b.substr(prefix_len);
    auto in = vocab_.find(joined);
    UNIME_CHECK(in != vocab_.end(), where, ": merge ", rank, " ('", a, "' '", b, "'): result '",
                joined, "' is not in the vocab");
    insert_merge(ia->second, ib->second, static_cast<uint32_t>(rank), in->second);
  }
}

void Bpe::insert_merge(int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
  const uint64_t key = (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  for (uint64_t h = mix(key) & merge_mask_;; h = (h + 1) & merge_mask_) {
    auto& e = merges_[h];
    if (e.key == kEmpty || e.key == key) {  // a repeated pair keeps the later rank (HashMap)
      e = MergeEntry{key, rank, new_id};
      return;
    }
  }
}

const Bpe::MergeEntry* Bpe::find_merge(int32_t a, int32_t b) const {
  const uint64_t key = (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  for (uint64_t h = mix(key) & merge_mask_;; h = (h + 1) & merge_mask_) {
    const auto& e = merges_[h];
    if (e.key == key) return &e;
    if (e.key == kEmpty) return nullptr;
  }
}

std::optional<int32_t> Bpe::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* Bpe::id_to_token(int32_t id) const {
  auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : &it->second;
}

int32_t Bpe::char_id(std::string_view ch, char32_t cp) const {
  if (cp < 0x10000) return bmp_ids_[cp];
  auto it = vocab_.find(ch);
  return it == vocab_.end() ? -1 : it->second;
}

// reference: model.rs BPE::merge_word (symbol construction, unk fusing, byte fallback)
void Bpe::initial_symbols(std::string_view w, std::vector<int32_t>& ids) const {
  int32_t pending_unk = -1;  // a (possibly fused) unknown piece not yet pushed
  std::string buf;
  for (size_t i = 0; i < w.size();) {
    const size_t start = i;
    const char32_t cp = next_cp(w, i);
    const bool is_first = start == 0, is_last = i == w.size();
    const std::string_view ch = w.substr(start, i - start);
    std::string_view s = ch;
    int32_t id;
    const bool add_prefix = !is_first && opt_.continuing_subword_prefix;
    const bool add_suffix = is_last && opt_.end_of_word_suffix;
    if (!add_prefix && !add_suffix) {
      id = char_id(ch, cp);
    } else {
      buf.clear();
      if (add_prefix) buf += *opt_.continuing_subword_prefix;
      buf += ch;
      if (add_suffix) buf += *opt_.end_of_word_suffix;
      s = buf;
      auto it = vocab_.find(s);
      id = it == vocab_.end() ? -1 : it->second;
    }
    if (id >= 0) {
      if (pending_unk >= 0) {
        ids.push_back(pending_unk);
        pending_unk = -1;
      }
      ids.push_back(id);
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : s) ids.push_back(byte_ids_[b]);
        continue;
      }
    }
    if (opt_.unk_token) {
      UNIME_CHECK(unk_id_.has_value(), "tokenizer: unk_token '", *opt_.unk_token,
                  "' is not in the vocab (needed for the character '", std::string(ch), "')");
      if (pending_unk >= 0 && !opt_.fuse_unk) ids.push_back(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

void Bpe::merge_small(std::vector<int32_t>& ids) const {
  size_t n = ids.size();
  if (n < 2) return;
  uint32_t rank[kSmallWord];
  int32_t nid[kSmallWord];
  auto pair_at = [&](size_t i) {
    const MergeEntry* m = find_merge(ids[i], ids[i + 1]);
    rank[i] = m ? m->rank : kNoRank;
    nid[i] = m ? m->new_id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) pair_at(i);
  while (n > 1) {
    uint32_t best = kNoRank;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < n; ++i)
      if (rank[i] < best) {
        best = rank[i];
        bi = i;
      }
    if (best == kNoRank) break;
    ids[bi] = nid[bi];
    // drop symbol bi+1 and the pair (bi, bi+1)
    std::memmove(&ids[bi + 1], &ids[bi + 2], (n - bi - 2) * sizeof(int32_t));
    std::memmove(&rank[bi], &rank[bi + 1], (n - bi - 2) * sizeof(uint32_t));
    std::memmove(&nid[bi], &nid[bi + 1], (n - bi - 2) * sizeof(int32_t));
    --n;
    if (bi > 0) pair_at(bi - 1);
    if (bi + 1 < n) pair_at(bi);
  }
  ids.resize(n);
}

// reference: word.rs Word::merge_all (without dropout)
void Bpe::merge_heap(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  struct Sym {
    int32_t c;
    int64_t prev, next;
    bool alive;
  };
  std::vector<Sym> sym(n);
  for (size_t i = 0; i < n; ++i)
    sym[i] = Sym{ids[i], int64_t(i) - 1, i + 1 < n ? int64_t(i + 1) : -1, true};
  struct Item {
    uint32_t rank;
    size_t pos;
    int32_t new_id;
    bool operator<(const Item& o) const {  // priority_queue is a max-heap: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Item> storage;
  storage.reserve(n);
  std::priority_queue<Item> queue(std::less<Item>(), std::move(storage));
  for (size_t i = 0; i + 1 < n; ++i)
    if (const MergeEntry* m = find_merge(sym[i].c, sym[i + 1].c))
      queue.push(Item{m->rank, i, m->new_id});
  while (!queue.empty()) {
    const Item top = queue.top();
    queue.pop();
    Sym& cur = sym[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    const size_t next_pos = static_cast<size_t>(cur.next);
    const Sym right = sym[next_pos];
    const MergeEntry* m = find_merge(cur.c, right.c);
    if (!m || m->new_id != top.new_id) continue;  // expired entry
    cur.c = top.new_id;
    cur.next = right.next;
    sym[next_pos].alive = false;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = int64_t(top.pos);
    if (cur.prev >= 0) {
      const size_t p = static_cast<size_t>(cur.prev);
      if (const MergeEntry* pm = find_merge(sym[p].c, cur.c))
        queue.push(Item{pm->rank, p, pm->new_id});
    }
    if (cur.next >= 0) {
      if (const MergeEntry* nm = find_merge(cur.c, sym[static_cast<size_t>(cur.next)].c))
        queue.push(Item{nm->rank, top.pos, nm->new_id});
    }
  }
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (sym[i].alive) ids[k++] = sym[i].c;
  ids.resize(k);
}

void Bpe::tokenize_uncached(std::string_view word, std::vector<int32_t>& out,
                            bool use_heap) const {
  if (word.empty()) return;
  if (opt_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  initial_symbols(word, ids);
  if (use_heap || ids.size() > kSmallWord)
    merge_heap(ids);
  else
    merge_small(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() > kCacheMaxBytes) {
    tokenize_uncached(word, out, false);
    return;
  }
  thread_local WordCache cache;
  if (cache.owner != uid_) {
    cache.map.clear();
    cache.owner = uid_;
  }
  auto it = cache.map.find(word);
  if (it != cache.map.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t before = out.size();
  tokenize_uncached(word, out, false);
  if (cache.map.size() >= kCacheMaxEntries) cache.map.clear();
  cache.map.emplace(std::string(word), std::vector<int32_t>(out.begin() + long(before), out.end()));
}

}  // namespace unime::text::detail
