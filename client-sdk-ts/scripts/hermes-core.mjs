// Runs the SDK's core (apply rule, state machine, a live query over a fake socket with fake
// timers) inside the Hermes VM from `hermes-engine-cli`. That engine (0.12) predates class
// syntax, so test/hermes/core.ts and the sources it imports are compiled to ES5 with tsc
// (classes, async functions and iteration lowered), bundled with esbuild, and run.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { build } from 'esbuild';

const require = createRequire(import.meta.url);
execFileSync('npx', ['tsc', '-p', 'tsconfig.hermes.json'], { stdio: 'inherit' });
await build({
  entryPoints: ['build/hermes-es5/test/hermes/core.js'],
  outfile: 'build/hermes-core.js',
  bundle: true,
  format: 'iife',
  logLevel: 'warning',
});
const hermes = join(require.resolve('hermes-engine-cli/package.json'), '..', 'linux64-bin', 'hermes');
const version = execFileSync(hermes, ['-version'], { encoding: 'utf8' }).match(/Hermes release version: (\S+)/);
let out;
try {
  out = execFileSync(hermes, ['build/hermes-core.js'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
} catch (e) {
  console.error('hermes failed to run the core:\n' + (e.stdout || '') + (e.stderr || ''));
  process.exit(1);
}
const line = out.split('\n').find((l) => l.startsWith('HERMES CORE'));
if (!line || !line.startsWith('HERMES CORE OK')) {
  console.error('the core failed inside Hermes:\n' + out);
  process.exit(1);
}
console.log(`hermes ${version ? version[1] : '(unknown version)'}: ${line}`);
