import * as readline from 'node:readline/promises';
import { parseArgs } from 'node:util';
import type { ChatMessage } from '../model/tokenizer.js';
import { DEFAULT_SAMPLING, Generator } from '../model/generate.js';
import { chatReply } from '../model/chat.js';
import { loadPeftAdapter } from '../train/lora.js';
import { loadModel } from '../train/run.js';
import { UserError } from '../errors.js';
import type { WeightDType } from '../gpu/matrix.js';

/** `loraforge chat`: interactive, or one answer with --prompt. */
export async function chatCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model_name_or_path: { type: 'string' },
        adapter_name_or_path: { type: 'string' },
        prompt: { type: 'string' },
        system: { type: 'string' },
        max_new_tokens: { type: 'string', default: '256' },
        temperature: { type: 'string', default: String(DEFAULT_SAMPLING.temperature) },
        top_k: { type: 'string', default: String(DEFAULT_SAMPLING.topK) },
        top_p: { type: 'string', default: String(DEFAULT_SAMPLING.topP) },
        seed: { type: 'string', default: '0' },
        enable_thinking: { type: 'boolean', default: false },
        dtype: { type: 'string', default: 'f32' },
        max_length: { type: 'string', default: '2048' },
      },
    }));
  } catch (e) {
    throw new UserError(`chat: ${(e as Error).message}`);
  }
  const nameOrPath = values.model_name_or_path;
  if (!nameOrPath) throw new UserError('chat: --model_name_or_path DIR|ORG/NAME is required');
  const num = (key: keyof typeof values) => {
    const v = Number(values[key]);
    if (!Number.isFinite(v)) throw new UserError(`chat: --${key} must be a number, got '${values[key]}'`);
    return v;
  };
  const dtype = values.dtype as WeightDType;
  if (dtype !== 'f32' && dtype !== 'bf16') throw new UserError(`chat: --dtype must be f32 or bf16, got '${values.dtype}'`);
  const sampling = {
    maxNewTokens: num('max_new_tokens'), temperature: num('temperature'), topK: num('top_k'), topP: num('top_p'), seed: num('seed'),
  };

  // An HF folder or hub id, or a GGUF file / Ollama name kept in its own types.
  const { gpu, config, weights, tokenizer } = await loadModel(nameOrPath, dtype === 'bf16');
  try {
    const lora = values.adapter_name_or_path ? loadPeftAdapter(gpu, values.adapter_name_or_path, config) : undefined;
    const gen = new Generator(gpu, config, weights, lora, num('max_length'));
    const messages: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];
    const answer = async (user: string) => {
      messages.push({ role: 'user', content: user });
      const onText = (piece: string) => process.stdout.write(piece);
      const reply = await chatReply(gen, tokenizer, messages, { ...sampling, enableThinking: values.enable_thinking, onText });
      process.stdout.write('\n');
      messages.push({ role: 'assistant', content: reply });
    };
    if (values.prompt !== undefined) await answer(values.prompt);
    else {
      const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
      console.log('Type a message (empty line or Ctrl-D to quit).');
      for (;;) {
        const line = await rl.question('> ').catch(() => '');
        if (!line.trim()) break;
        await answer(line);
      }
      rl.close();
    }
    gen.destroy();
  } finally {
    await gpu.destroy();
  }
  return 0;
}
