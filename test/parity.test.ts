// End-to-end parity with HF transformers + PEFT on the shared fixtures (forward, loss, LoRA gradients, AdamW step)
// and with a torch reference of three trainer steps (train3.safetensors) and of the preference losses
// (preference.safetensors).
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { runParity } from '../src/parity.js';
import { testGpu } from './helpers.js';

const FIXTURES = path.resolve(import.meta.dirname, '../../shared/fixtures/qwen3');

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('parity with the reference', () => {
  for (const name of ['tiny-tied', 'small-untied']) {
    it(name, async () => {
      const r = await runParity(gpu, path.join(FIXTURES, name));
      console.log(JSON.stringify(r));
      expect(r.case).toBe(name);
      expect(r.logits_max_abs).toBeLessThanOrEqual(1e-4);
      expect(r.loss_abs).toBeLessThanOrEqual(1e-5);
      expect(r.hidden_max_abs).toBeLessThanOrEqual(1e-4);
      expect(r.lora_logits_max_abs).toBeLessThanOrEqual(1e-4);
      expect(r.lora_loss_abs).toBeLessThanOrEqual(1e-5);
      expect(r.grad_max_rel).toBeLessThanOrEqual(1e-3);
      expect(r.step1_max_abs).toBeLessThanOrEqual(1e-6);
      expect(r.step1_own_grads_max_abs).toBeLessThanOrEqual(1e-6);
      // Three trainer steps (clipping, bias correction after t = 1, weight decay 1.0), as the fixtures' README bounds them.
      expect(r.train3_loss_max_rel).toBeLessThanOrEqual(1e-5);
      expect(r.train3_p999_abs).toBeLessThanOrEqual(1e-6);
      expect(r.train3_max_abs).toBeLessThanOrEqual(1e-4);
      // preference.safetensors: policy and reference (adapter off) log-probs, dpo / orpo / simpo and their gradients.
      // The sums are about −125 to −221, where one f32 step is 1.5e-5 (the fixture itself is stored in f32): two steps.
      expect(r.pref_logps_max_abs).toBeLessThanOrEqual(3.1e-5);
      expect(r.pref_loss_max_abs).toBeLessThanOrEqual(1e-5);
      expect(r.pref_grad_max_rel).toBeLessThanOrEqual(1e-3);
    });
  }
});
