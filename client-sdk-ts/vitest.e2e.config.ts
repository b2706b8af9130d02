import { defineConfig } from 'vitest/config';

// Each file starts its own `rowcast dev` (embedded Postgres in a temp dir); files run one
// after another to keep the shared machine's load sane and because some tests kill the server.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 60000,
    hookTimeout: 120000,
  },
});
