// `loraforge <command>`: train (the default), chat, export, parity. User errors print one line, no stack.
import { UserError } from './errors.js';
import { NoWebGpuError } from './gpu/device.js';

const USAGE = `usage: loraforge <command> [options]
  train [config.yaml] [--key value ...]   LoRA SFT with LLaMA-Factory's keys (default job without arguments)
  chat --model_name_or_path DIR [--adapter_name_or_path DIR] [--prompt TEXT]
  export --model_name_or_path DIR [--adapter_name_or_path DIR] --export_dir OUT --export_format gguf|gguf-lora|safetensors
  parity FIXTURE_DIR                       compare the engine with a reference case (prints JSON)`;

export async function main(argv: string[]): Promise<number> {
  const [command = 'train', ...rest] = argv;
  try {
    switch (command) {
      case 'train': return await (await import('./commands/train.js')).trainCommand(rest);
      case 'chat': return await (await import('./commands/chat.js')).chatCommand(rest);
      case 'export': return await (await import('./commands/export.js')).exportCommand(rest);
      case 'parity': return await (await import('./commands/parity.js')).parityCommand(rest);
      case '-h': case '--help': case 'help':
        console.log(USAGE);
        return 0;
      default:
        if (command.endsWith('.yaml') || command.endsWith('.yml') || command.startsWith('--'))
          return await (await import('./commands/train.js')).trainCommand(argv);
        throw new UserError(`unknown command '${command}' (loraforge --help lists the commands)`);
    }
  } catch (e) {
    if (e instanceof UserError || e instanceof NoWebGpuError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
