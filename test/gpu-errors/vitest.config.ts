import { defineConfig } from 'vitest/config';

// Only for gpu-errors.test.ts: runs the invalid-dispatch fixture with the suite's GPU error hooks.
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    pool: 'forks',
    include: ['test/gpu-errors/*.fixture.ts'],
    setupFiles: ['test/gpu-errors-setup.ts'],
  },
});
