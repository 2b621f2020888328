// The search page: see search-page.h. Kept as one raw string so that the binary carries it.
#include "serve/search-page.h"

namespace unime::serve {

const char* search_page_html() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unime search</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 860px; padding: 1.2em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .8em; }
  form { display: grid; grid-template-columns: 1fr auto auto; gap: .5em; align-items: center; }
  #q { font: inherit; padding: .45em .6em; border: 1px solid #999; border-radius: 4px; }
  button { font: inherit; padding: .45em 1em; cursor: pointer; }
  #drop { grid-column: 1 / -1; border: 2px dashed #aaa; border-radius: 6px; padding: .7em; color: #555;
          display: flex; gap: .8em; align-items: center; }
  #drop.over { border-color: #2a6; background: #f2fbf5; }
  #preview { max-height: 64px; max-width: 96px; display: none; }
  #status { margin: .8em 0; color: #555; min-height: 1.2em; }
  #status.error { color: #b00; }
  ol { list-style: none; padding: 0; margin: 0; }
  .hit { display: grid; grid-template-columns: 3em 112px 1fr 5.5em; gap: .8em; align-items: center;
         padding: .5em 0; border-bottom: 1px solid #e4e4e4; }
  .hit-rank { color: #888; text-align: right; }
  .hit img { max-width: 112px; max-height: 84px; border-radius: 3px; }
  .hit-id { font-weight: 600; }
  .hit-text { color: #333; white-space: pre-wrap; }
  .hit-score { font-family: ui-monospace, monospace; text-align: right; }
</style>
</head>
<body>
<h1>unime search</h1>
<form id="form">
  <input id="q" type="search" placeholder="Type a query (and/or drop an image below)" autocomplete="off">
  <select id="k" title="results"><option>5</option><option selected>10</option><option>20</option><option>50</option></select>
  <button id="go" type="submit">Search</button>
  <label id="drop">
    <input id="file" type="file" accept="image/*">
    <img id="preview" alt="query image">
    <span id="droptext">or drop an image here</span>
    <button id="clear" type="button" hidden>clear image</button>
  </label>
</form>
<div id="status" role="status"></div>
<ol id="results"></ol>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let imageUrl = null;  // data: URL of the query image

function setImage(file) {
  if (!file) return;
  const r = new FileReader();
  r.onload = () => {
    imageUrl = r.result;
    $("preview").src = imageUrl;
    $("preview").style.display = "block";
    $("clear").hidden = false;
    search();
  };
  r.readAsDataURL(file);
}

function clearImage() {
  imageUrl = null;
  $("file").value = "";
  $("preview").style.display = "none";
  $("clear").hidden = true;
}

function status(msg, isError) {
  $("status").textContent = msg;
  $("status").className = isError ? "error" : "";
}

function render(hits) {
  const ol = $("results");
  ol.replaceChildren();
  hits.forEach((h, i) => {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.id = typeof h.id === "string" ? h.id : JSON.stringify(h.id);
    const rank = document.createElement("span");
    rank.className = "hit-rank";
    rank.textContent = String(i + 1);
    const pic = document.createElement("span");
    if (h.image_url) {
      const img = document.createElement("img");
      img.src = h.image_url;
      img.alt = String(h.id);
      img.loading = "lazy";
      pic.appendChild(img);
    }
    const body = document.createElement("span");
    const id = document.createElement("div");
    id.className = "hit-id";
    id.textContent = li.dataset.id;
    const text = document.createElement("div");
    text.className = "hit-text";
    text.textContent = h.text || "";
    body.append(id, text);
    const score = document.createElement("span");
    score.className = "hit-score";
    score.textContent = h.score.toFixed(4);
    li.append(rank, pic, body, score);
    ol.appendChild(li);
  });
}

let seq = 0;
async function search() {
  const text = $("q").value.trim();
  if (!text && !imageUrl) { status("Type a query or choose an image.", true); return; }
  let query = text;
  if (imageUrl) {
    const content = [{ type: "image_url", image_url: { url: imageUrl } }];
    if (text) content.push({ type: "text", text });
    query = { content };
  }
  const my = ++seq;
  document.body.dataset.state = "busy";
  status("Searching...");
  const t0 = performance.now();
  try {
    const res = await fetch("/v1/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query, k: Number($("k").value) }),
    });
    const body = await res.json();
    if (my !== seq) return;  // a newer query is on its way
    if (!res.ok) { status(body.error ? body.error.message : "HTTP " + res.status, true); return; }
    render(body.data);
    status(body.data.length + " results in " + Math.round(performance.now() - t0) + " ms");
    document.body.dataset.state = "done";
  } catch (e) {
    if (my === seq) status("Request failed: " + e, true);
  }
}

$("form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("file").addEventListener("change", () => setImage($("file").files[0]));
$("clear").addEventListener("click", (e) => { e.preventDefault(); clearImage(); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
)HTML";
}

}  // namespace unime::serve
