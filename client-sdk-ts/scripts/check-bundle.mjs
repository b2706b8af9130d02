// Fails the build unless the shipped bundle runs on React Native / Hermes:
// 1. package.json `exports` lists `react-native` before `import`/`require` for every entry
//    (Metro with package exports takes the first condition it knows);
// 2. no shipped file mentions a Node built-in, `process`, dynamic `import(`, `new Function`,
//    `URL`/`URLSearchParams`, `TextDecoder`, `structuredClone` or `crypto.randomUUID`;
// 3. every CJS file compiles with `hermesc` from `hermes-compiler` (the compiler React Native
//    uses); a control file with `import()` must fail to compile, proving the check can fail.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const failures = [];
const pkg = JSON.parse(readFileSync('package.json', 'utf8'));

for (const [entry, conds] of Object.entries(pkg.exports)) {
  if (typeof conds !== 'object') continue;
  const keys = Object.keys(conds);
  const rn = keys.indexOf('react-native');
  if (rn < 0) failures.push(`exports["${entry}"] has no react-native condition`);
  for (const k of ['import', 'require']) if (keys.indexOf(k) < rn) failures.push(`exports["${entry}"]: react-native must come before ${k}`);
  for (const k of ['types', 'react-native', 'import', 'require']) {
    try {
      statSync(conds[k]);
    } catch {
      failures.push(`exports["${entry}"].${k} → ${conds[k]} does not exist (run the build)`);
    }
  }
}

const files = [];
const walk = (d) => {
  for (const f of readdirSync(d)) {
    const p = join(d, f);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.(c?js)$/.test(p)) files.push(p);
  }
};
walk('dist/esm');
walk('dist/cjs');
if (files.length < 8) failures.push(`expected 8 bundle files, found ${files.length}`);

const BUILTINS = ['fs', 'path', 'os', 'net', 'http', 'https', 'crypto', 'events', 'stream', 'util', 'buffer', 'child_process', 'tls', 'zlib', 'url', 'worker_threads'];
const banned = [
  [/\bimport\s*\(/, 'dynamic import('],
  [/\bnew\s+Function\s*\(/, 'new Function('],
  [/\bprocess\s*[.[]/, 'process'],
  [/\bURLSearchParams\b/, 'URLSearchParams'],
  [/\bnew\s+URL\s*\(/, 'new URL('],
  [/\bTextDecoder\b/, 'TextDecoder'],
  [/\bstructuredClone\b/, 'structuredClone'],
  [/\brandomUUID\b/, 'crypto.randomUUID'],
  [/\brequire\(\s*["']node:/, 'a node: import'],
  [/\bfrom\s*["']node:/, 'a node: import'],
  [new RegExp(`(?:require\\(|from\\s*)["'](?:${BUILTINS.join('|')})["']`), 'a Node built-in'],
];
for (const f of files) {
  const src = readFileSync(f, 'utf8');
  for (const [re, what] of banned) if (re.test(src)) failures.push(`${f} references ${what}`);
  const imports = [...src.matchAll(/(?:require\(|from\s*)["']([^"']+)["']/g)].map((m) => m[1]);
  for (const i of imports) if (i !== 'react') failures.push(`${f} imports ${i} (only react may stay external)`);
}

const hermesc = join(require.resolve('hermes-compiler/package.json'), '..', 'hermesc', 'linux64-bin', 'hermesc');
const out = mkdtempSync(join(tmpdir(), 'rowcast-hermesc-'));
const compile = (file) => {
  try {
    execFileSync(hermesc, ['-emit-binary', '-out', join(out, 'out.hbc'), file], { stdio: 'pipe' });
    return null;
  } catch (e) {
    return String(e.stderr || e.message);
  }
};
const control = join(out, 'control.js');
writeFileSync(control, 'var m = import("x");\n');
if (compile(control) === null) failures.push('hermesc accepted dynamic import(): the compile check would prove nothing');
let compiled = 0;
for (const f of files.filter((f) => f.endsWith('.cjs'))) {
  const err = compile(f);
  if (err) failures.push(`hermesc rejects ${f}:\n${err}`);
  else compiled++;
}

if (failures.length) {
  console.error('bundle check FAILED:\n- ' + failures.join('\n- '));
  process.exit(1);
}
console.log(`bundle check: ${files.length} files clean; ${compiled} compiled with hermesc; exports conditions ok`);
