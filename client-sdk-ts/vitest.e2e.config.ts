import { defineConfig } from 'vitest/config';

// One server for the whole run (globalSetup); files run one after another because some
// tests stop and restart it.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    environment: 'node',
    globalSetup: ['test/e2e/global-setup.ts'],
    fileParallelism: false,
    testTimeout: 60000,
    hookTimeout: 120000,
  },
});
