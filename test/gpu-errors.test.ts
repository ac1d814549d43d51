// A WebGPU error fails the test that caused it: the fixture's tests dispatch more workgroups than allowed and assert
// nothing false themselves; run with the suite's hooks (gpu-errors-setup.ts) in a child vitest, both must fail
// with the validation message, and the test before them must pass.
import { expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '..');

interface JsonReport {
  testResults: { assertionResults: { title: string; status: string; failureMessages: string[] }[] }[];
}

test('an invalid dispatch fails its test', () => {
  const dir = mkdtempSync(join(tmpdir(), 'loraforge-gpu-errors-'));
  try {
    const report = join(dir, 'report.json');
    const r = spawnSync('npx', ['vitest', 'run', '--config', 'test/gpu-errors/vitest.config.ts', '--reporter', 'json', '--outputFile', report], { cwd: REPO, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(1);
    const results = (JSON.parse(readFileSync(report, 'utf8')) as JsonReport).testResults.flatMap((f) => f.assertionResults);
    const byTitle = new Map(results.map((a) => [a.title, a]));
    expect(byTitle.get('a device made before the test (error scopes)')?.status).toBe('passed');
    for (const title of ['invalid dispatch on a device that existed before the test', 'invalid dispatch on a device made during the test (uncaptured error)']) {
      const a = byTitle.get(title);
      expect(a?.status, title).toBe('failed');
      expect(a?.failureMessages.join('\n'), title).toMatch(/GpuValidationError: \d+ WebGPU error\(s\): (validation: )?Dispatch workgroup count X \(\d+\) exceeds/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 180_000);
