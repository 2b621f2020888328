// The search page of `unime serve --index DIR --ui`: one self-contained HTML document (inline CSS
// and script, no external assets, no CDN). It POSTs /v1/search with a text query, an image (drop
// or file input, sent as a data: URL content part) or both, and lists the hits with their id,
// text, image (GET /v1/index/images/<row>) and score.
#pragma once

namespace unime::serve {

/// The page, as served at GET /.
const char* search_page_html();

}  // namespace unime::serve
