import { defineConfig } from 'vitest/config';

// Dawn crashes inside worker threads, so every test file runs in a forked process.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    // A WebGPU error fails the test that caused it.
    setupFiles: ['test/gpu-errors-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
