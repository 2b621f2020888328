// The search page of `unime serve --index DIR --ui` in a real browser: Debian's chromium driven by
// playwright-core. Types a query, checks the hits that render (ids in order, scores, images that
// load), then chooses an image file (the page's file input; drop uses the same code path) and
// checks those hits too.
//   node search-ui.js PORT QUERY EXPECTED_IDS_JSON IMAGE_PATH EXPECTED_IMAGE_IDS_JSON
// Exit 0 when everything matches; otherwise one line per problem on stderr and exit 1.
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [port, query, idsJson, imagePath, imageIdsJson] = process.argv.slice(2);
  const expected = JSON.parse(idsJson);
  const expectedImage = JSON.parse(imageIdsJson);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    const external = [];
    page.on("request", (r) => { if (!r.url().startsWith(`http://127.0.0.1:${port}/`)) external.push(r.url()); });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.selectOption("#k", String(expected.length <= 5 ? 5 : 10));

    // 1. a typed query
    await page.fill("#q", query);
    await page.press("#q", "Enter");
    await page.waitForSelector("body[data-state=done]", { timeout: 30000 });
    const hits = await page.$$eval(".hit", (els) => els.map((e) => ({
      id: e.dataset.id,
      score: Number(e.querySelector(".hit-score").textContent),
      img: e.querySelector("img") ? e.querySelector("img").getAttribute("src") : null,
    })));
    const got = hits.slice(0, expected.length).map((h) => h.id);
    if (JSON.stringify(got) !== JSON.stringify(expected))
      problems.push(`text query: ids ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
    for (let i = 1; i < hits.length; ++i)
      if (hits[i].score > hits[i - 1].score) problems.push(`text query: scores not descending at ${i}`);
    // every rendered image loads from the server
    await page.waitForFunction(() => [...document.querySelectorAll(".hit img")].every((i) => i.complete), null, { timeout: 15000 });
    const images = await page.$$eval(".hit img", (els) => els.map((i) => i.naturalWidth));
    if (images.length === 0 || images.some((w) => w === 0))
      problems.push(`text query: ${images.length} images, widths ${JSON.stringify(images)}`);
    console.log(`text query: ${hits.length} hits, ids ${JSON.stringify(got)}, ${images.length} images loaded`);

    // 2. an image query through the file input (no text)
    await page.fill("#q", "");
    await page.selectOption("#k", "5");
    await page.evaluate(() => { document.body.dataset.state = ""; });
    await page.setInputFiles("#file", imagePath);
    await page.waitForSelector("body[data-state=done]", { timeout: 30000 });
    const got2 = (await page.$$eval(".hit", (els) => els.map((e) => e.dataset.id))).slice(0, expectedImage.length);
    if (JSON.stringify(got2) !== JSON.stringify(expectedImage))
      problems.push(`image query: ids ${JSON.stringify(got2)}, expected ${JSON.stringify(expectedImage)}`);
    console.log(`image query: ids ${JSON.stringify(got2)}`);
    if (external.length) problems.push("requests outside the server: " + external.join(", "));
  } finally {
    await browser.close();
  }
  if (problems.length) {
    for (const p of problems) console.error(p);
    process.exit(1);
  }
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
