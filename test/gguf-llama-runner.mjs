// Child-process runner for the GGUF tests: loads a GGUF with node-llama-cpp (llama.cpp on the CPU) and
// writes the next-token probabilities after every prefix of each token row. Run as a separate process
// because a malformed file can abort llama.cpp (GGML_ASSERT) and with it the whole process.
// Usage: node test/gguf-llama-runner.mjs <request.json> <result.json>
//   request: { model, vocab, lora?: { path, scale }, rows: number[][] }
//   result:  { rows: number[][][] }  (rows[b][t] = probabilities over the vocabulary)
import { readFileSync, writeFileSync } from 'node:fs';
import { getLlama } from 'node-llama-cpp';

const [requestFile, resultFile] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestFile, 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath: request.model });
const longest = Math.max(...request.rows.map((r) => r.length));
const context = await model.createContext({
  contextSize: Math.max(64, longest + 1),
  batchSize: longest,
  ...(request.lora ? { lora: { adapters: [{ filePath: request.lora.path, scale: request.lora.scale }] } } : {}),
});
const seq = context.getSequence();
const rows = [];
for (const tokens of request.rows) {
  await seq.clearHistory();
  const out = await seq.controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }]));
  rows.push(out.map((o) => {
    const p = new Array(request.vocab).fill(0);
    for (const [tok, prob] of o.next.probabilities) p[tok] = prob;
    return p;
  }));
}
await context.dispose();
writeFileSync(resultFile, JSON.stringify({ rows }));
await model.dispose();
await llama.dispose();
