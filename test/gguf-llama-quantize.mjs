// Child-process runner: llama.cpp's own llama_model_quantize (libllama from node-llama-cpp's build,
// through koffi) turns an f32 GGUF into a quantized one, as `llama-quantize in out <ftype> [nthread]` would,
// and prints {"seconds": …} for the quantize call alone (bench/quantize.ts compares speeds with it).
// In a separate process because llama.cpp aborts the process on a file it cannot handle.
// Usage: node test/gguf-llama-quantize.mjs <in.gguf> <out.gguf> <llama_ftype number> [nthread, default 1; 0 = all]
import koffi from 'koffi';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [input, output, ftype, nthread = '1'] = process.argv.slice(2);
const binDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64');
const ggml = koffi.load(join(binDir, 'libggml.v0.4.0.so'));
const llama = koffi.load(join(binDir, 'libllama.v0.4.0.so'));

// include/llama.h of llama.cpp v0.4.0 (the release node-llama-cpp 3.21.1 bundles)
const Params = koffi.struct('llama_model_quantize_params', {
  nthread: 'int32_t',
  ftype: 'int',
  output_tensor_type: 'int',
  token_embedding_type: 'int',
  allow_requantize: 'bool',
  quantize_output_tensor: 'bool',
  only_copy: 'bool',
  pure: 'bool',
  keep_split: 'bool',
  dry_run: 'bool',
  imatrix: 'void *',
  kv_overrides: 'void *',
  tt_overrides: 'void *',
  prune_layers: 'void *',
  max_buf_size: 'size_t',
});
ggml.func('void ggml_backend_load_all_from_path(const char *dir)')(binDir);
// Its per-tensor log lines are noise here: keep warnings and errors (ggml_log_level WARN = 3, ERROR = 4).
const LogCallback = koffi.proto('void ggml_log_callback(int level, const char *text, void *user_data)');
const onLog = koffi.register((level, text) => { if (level >= 3) process.stderr.write(text); }, koffi.pointer(LogCallback));
llama.func('void llama_log_set(ggml_log_callback *cb, void *user_data)')(onLog, null);
llama.func('void llama_backend_init(void)')();
const params = llama.func('llama_model_quantize_params llama_model_quantize_default_params(void)')();
params.ftype = Number(ftype);
params.nthread = Number(nthread);
const start = performance.now();
const rc = llama.func('uint32_t llama_model_quantize(const char *fname_inp, const char *fname_out, const llama_model_quantize_params *params)')(input, output, params);
console.log(JSON.stringify({ seconds: (performance.now() - start) / 1000 }));
process.exit(rc === 0 ? 0 : 1);
