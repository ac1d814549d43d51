import { defineConfig } from 'vitest/config';

// The browser end-to-end test (npm run test:web): one forked process driving headless Chromium.
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    pool: 'forks',
    include: ['test/web/**/*.e2e.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
  },
});
