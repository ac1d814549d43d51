import { createGpu } from '../gpu/device.js';
import { runParity } from '../parity.js';
import { UserError } from '../errors.js';

/** `loraforge parity DIR`: the parity figures as one JSON line (the last line printed). */
export async function parityCommand(args: string[]): Promise<number> {
  const dir = args.find((a) => !a.startsWith('--'));
  if (!dir) throw new UserError('parity: give a fixture folder (model/, adapter/, case.safetensors)');
  const gpu = await createGpu();
  try {
    console.log(JSON.stringify(await runParity(gpu, dir)));
  } finally {
    await gpu.destroy();
  }
  return 0;
}
