// Builds dist/: ESM (.js) and CJS (.cjs) for each entry point with esbuild, and .d.ts with tsc.
// Every entry is bundled on its own (shared core code is duplicated only into entries that
// import it at run time: `react` and the storage adapters import nothing from the core).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';

const entries = { index: 'src/index.ts', react: 'src/react.ts', 'storage/kv': 'src/storage/kv.ts', 'storage/sqlite': 'src/storage/sqlite.ts' };
rmSync('dist', { recursive: true, force: true });
for (const [format, ext] of [['esm', '.js'], ['cjs', '.cjs']]) {
  await build({
    entryPoints: entries,
    outdir: `dist/${format}`,
    outExtension: { '.js': ext },
    bundle: true,
    format,
    platform: 'neutral',
    target: 'es2020',
    external: ['react'],
    sourcemap: false,
    logLevel: 'warning',
  });
}
execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
console.log('built dist/');
