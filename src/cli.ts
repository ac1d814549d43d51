// `loraforge <command>`: train (the default), chat, export, parity. User errors print one line, no stack.
import { UserError } from './errors.js';
import { destroyAllGpus, NoWebGpuError } from './gpu/device.js';

const USAGE = `usage: loraforge <command> [options]
  train [config.yaml] [--key value ...]   LoRA SFT with LLaMA-Factory's keys (default job without arguments)
  chat --model_name_or_path DIR [--adapter_name_or_path DIR] [--prompt TEXT]
  export --model_name_or_path DIR [--adapter_name_or_path DIR] --export_dir OUT --export_format gguf|gguf-lora|safetensors
  parity FIXTURE_DIR                       compare the engine with a reference case (prints JSON)
  tune config.yaml [--key value ...]       time the matmul kernels on this GPU at the config's model shapes (cached)`;

/** Exit status after Ctrl-C, as shells report a process ended by SIGINT. */
export const INTERRUPTED_EXIT_CODE = 130;
let interrupted = false;

/**
 * Ctrl-C: destroy the GPU devices (Dawn's instance must not be torn down under live work) and end with 130. A
 * second Ctrl-C while that happens ends the process at once.
 */
let interruptHandled = false;
function exitCleanlyOnInterrupt(): void {
  if (interruptHandled) return;
  interruptHandled = true;
  process.once('SIGINT', () => {
    interrupted = true;
    console.error('interrupted');
    void destroyAllGpus().finally(() => process.exit(INTERRUPTED_EXIT_CODE));
  });
}

export async function main(argv: string[]): Promise<number> {
  const [command = 'train', ...rest] = argv;
  exitCleanlyOnInterrupt();
  try {
    switch (command) {
      case 'train': return await (await import('./commands/train.js')).trainCommand(rest);
      case 'chat': return await (await import('./commands/chat.js')).chatCommand(rest);
      case 'export': return await (await import('./commands/export.js')).exportCommand(rest);
      case 'parity': return await (await import('./commands/parity.js')).parityCommand(rest);
      case 'tune': return await (await import('./commands/tune.js')).tuneCommand(rest);
      case '-h': case '--help': case 'help':
        console.log(USAGE);
        return 0;
      default:
        if (command.endsWith('.yaml') || command.endsWith('.yml') || command.startsWith('--'))
          return await (await import('./commands/train.js')).trainCommand(argv);
        throw new UserError(`unknown command '${command}' (loraforge --help lists the commands)`);
    }
  } catch (e) {
    // Work cut short by Ctrl-C fails on its destroyed device; that is not the user's error to read about.
    if (interrupted) return INTERRUPTED_EXIT_CODE;
    if (e instanceof UserError || e instanceof NoWebGpuError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
