// Lint for the SDK: typescript-eslint's recommended rules plus the runtime bans the SDK
// lives by (React Native / Hermes): no Node built-ins, `process`, dynamic import,
// `new Function`, `URL`/`URLSearchParams`, `TextDecoder`, `structuredClone`, `crypto.randomUUID`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const banned = [
  { name: 'process', message: 'React Native has no process; take options instead.' },
  { name: 'URL', message: 'React Native’s URL is incomplete; build strings by hand.' },
  { name: 'URLSearchParams', message: 'React Native’s URLSearchParams is incomplete; use encodeQuery.' },
  { name: 'TextDecoder', message: 'Missing or buggy on Hermes.' },
  { name: 'structuredClone', message: 'Missing on Hermes.' },
  { name: 'Buffer', message: 'Node only.' },
  { name: 'require', message: 'No CommonJS require in the SDK source.' },
];

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-globals': ['error', ...banned],
      'no-restricted-imports': ['error', { patterns: [{ group: ['node:*', 'fs', 'path', 'os', 'net', 'http', 'https', 'crypto', 'events', 'stream', 'util', 'buffer', 'child_process'], message: 'No Node built-ins in the SDK.' }] }],
      'no-restricted-syntax': [
        'error',
        { selector: 'ImportExpression', message: 'Hermes rejects dynamic import().' },
        { selector: "NewExpression[callee.name='Function']", message: 'No new Function (Hermes, CSP).' },
        { selector: "MemberExpression[property.name='randomUUID']", message: 'crypto.randomUUID is missing on React Native; use the injectable id generator.' },
      ],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['test/**/*.ts', 'scripts/**/*.mjs', '*.config.*'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', __dirname: 'readonly', setTimeout: 'readonly', fetch: 'readonly', URL: 'readonly', print: 'readonly' } },
    rules: { '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
