// Child-process runner for the GGUF text checks: llama.cpp (node-llama-cpp) tokenizes texts with the tokenizer
// stored in a GGUF (loaded vocabulary only), and renders chat templates with llama.cpp's own Jinja engine
// (common/jinja, which node-llama-cpp's addon exposes as AddonJinjaRenderer). A separate process because
// llama.cpp can abort the process on a file it cannot handle.
// Usage: node test/gguf-llama-text.mjs <request.json> <result.json>
//   request: { model?, texts?: string[], renders?: { template: string, context: object }[] }
//   result:  { ids: number[][], rendered: string[], chatTemplate: string | null }
import { readFileSync, writeFileSync } from 'node:fs';
import { getLlama } from 'node-llama-cpp';

const [requestFile, resultFile] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestFile, 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const result = { ids: [], rendered: [], chatTemplate: null };
if (request.model) {
  const model = await llama.loadModel({ modelPath: request.model, vocabOnly: true });
  // Special tokens written in the text (<|im_start|>, <think>) are parsed as such, as HF's tokenizer does.
  for (const text of request.texts ?? []) result.ids.push(Array.from(model.tokenize(text, true)));
  result.chatTemplate = model.fileInfo.metadata.tokenizer?.chat_template ?? null;
  await model.dispose();
}
for (const { template, context } of request.renders ?? []) {
  result.rendered.push(new llama._bindings.AddonJinjaRenderer(template).render(context));
}
writeFileSync(resultFile, JSON.stringify(result));
await llama.dispose();
