// Drives `unime serve` with the official `openai` npm client (and one raw fetch for the
// multimodal extension). Usage: node serve-client.js BASE_URL CASES.json OUT.json
// CASES: {model, texts: [str], token_ids: [[int]], multimodal: [obj]}; OUT: the vectors as the
// client returns them, for tests/test-serve.cpp to compare with `unime embed`.
const fs = require('fs');
const OpenAI = require('openai');

async function main() {
  const [base, casesPath, outPath] = process.argv.slice(2);
  const c = JSON.parse(fs.readFileSync(casesPath, 'utf8'));
  const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'not-needed', maxRetries: 0 });
  const vecs = (r) => r.data.sort((a, b) => a.index - b.index).map((d) => Array.from(d.embedding));
  const out = {};
  // the client's default: it asks for base64 and decodes it to floats itself
  const single = await client.embeddings.create({ model: c.model, input: c.texts[0] });
  out.default_single = vecs(single);
  out.usage = single.usage;
  out.model = single.model;
  out.float_batch = vecs(await client.embeddings.create({ model: c.model, input: c.texts, encoding_format: 'float' }));
  // explicit base64: the client hands back the strings; decode little-endian float32 here
  const b64 = await client.embeddings.create({ model: c.model, input: c.texts, encoding_format: 'base64' });
  out.base64_batch = b64.data.map((d) => {
    const buf = Buffer.from(d.embedding, 'base64');
    const f = [];
    for (let i = 0; i < buf.length; i += 4) f.push(buf.readFloatLE(i));
    return f;
  });
  out.token_batch = vecs(await client.embeddings.create({ model: c.model, input: c.token_ids, encoding_format: 'float' }));
  out.token_single = vecs(await client.embeddings.create({ model: c.model, input: c.token_ids[0], encoding_format: 'float' }));
  // multimodal extension: not in the client's types, so a raw request
  const res = await fetch(base + '/v1/embeddings', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: c.model, input: c.multimodal, encoding_format: 'float' }),
  });
  if (res.status !== 200) throw new Error('multimodal request: HTTP ' + res.status + ' ' + (await res.text()));
  out.multimodal = vecs(await res.json());
  out.models = (await client.models.list()).data.map((m) => m.id);
  // a client mistake surfaces as the client's BadRequestError with our message
  try {
    await client.embeddings.create({ model: c.model, input: '' });
    out.empty_error = null;
  } catch (e) {
    out.empty_error = { status: e.status, message: e.message, type: e.type };
  }
  fs.writeFileSync(outPath, JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
