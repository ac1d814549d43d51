// Child-process runner: llama.cpp's own llama_model_quantize (libllama from node-llama-cpp's build,
// through koffi) turns an f32 GGUF into a quantized one, as `llama-quantize in out <ftype>` would.
// In a separate process because llama.cpp aborts the process on a file it cannot handle.
// Usage: node test/gguf-llama-quantize.mjs <in.gguf> <out.gguf> <llama_ftype number>
import koffi from 'koffi';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [input, output, ftype] = process.argv.slice(2);
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
llama.func('void llama_backend_init(void)')();
const params = llama.func('llama_model_quantize_params llama_model_quantize_default_params(void)')();
params.ftype = Number(ftype);
params.nthread = 1;
const rc = llama.func('uint32_t llama_model_quantize(const char *fname_inp, const char *fname_out, const llama_model_quantize_params *params)')(input, output, params);
process.exit(rc === 0 ? 0 : 1);
