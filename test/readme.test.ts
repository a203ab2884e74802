/**
 * The README's TypeScript examples compile. Every fenced ```ts / ```typescript block of README.md is
 * written to its own file under test-results/readme-snippets/ and type-checked with the repo's
 * TypeScript compiler under `strict`, module and moduleResolution NodeNext, with `threadvisor`
 * mapped to src/index.ts, `threadvisor/worker` to workers/runtime.ts, `threadvisor/prometheus` to
 * src/prometheus.ts, `threadvisor/http` to src/http.ts and `threadvisor/ops` to src/ops.ts (as a user's project
 * resolves the published package). A block that is deliberately a fragment is skipped when the
 * line right before its fence is `<!-- not-compiled: reason -->`.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS } from '../src/events.js';
import { eventRows, eventsTable } from './helpers/events-table.js';

const TIMEOUT_MS = 120_000;
const root = fileURLToPath(new URL('..', import.meta.url));
const dir = join(root, 'test-results', 'readme-snippets');

interface Block {
  /** 1-based README line of the block's first code line. */
  line: number;
  code: string;
  file: string;
  /** The reason from a `<!-- not-compiled: ... -->` marker, if any. */
  skip: string | undefined;
}

/** The fenced ts / typescript blocks of a markdown text. */
function extractBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*(ts|typescript)\s*$/.exec(lines[i] ?? '');
    if (!open) continue;
    const fence = open[2] as string;
    let prev = i - 1;
    while (prev >= 0 && (lines[prev] ?? '').trim() === '') prev--;
    const marker = /^<!--\s*not-compiled:\s*(.*?)\s*-->$/.exec((lines[prev] ?? '').trim());
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !(lines[j] ?? '').trim().startsWith(fence)) body.push(lines[j++] ?? '');
    blocks.push({
      line: i + 2,
      code: body.join('\n') + '\n',
      file: join(dir, `block-${String(blocks.length + 1).padStart(2, '0')}-line-${i + 2}.ts`),
      skip: marker ? marker[1] || 'no reason given' : undefined,
    });
    i = j;
  }
  return blocks;
}

const blocks = extractBlocks(readFileSync(join(root, 'README.md'), 'utf8'));
const compiled = blocks.filter((b) => b.skip === undefined);
let diagnostics: readonly ts.Diagnostic[] = [];

/**
 * Compiled with the README blocks: the `probe` forms the README's channel examples stand for, sync
 * and async, must infer their literal outcome (no `as const`), and wrong outcomes must not compile.
 */
const probeTyping = {
  file: join(dir, 'probe-typing.ts'),
  code: `import { defineChannel } from 'threadvisor';
const base = { type: 't', connect() {}, disconnect() {}, send() { return 1; } };
export const a = defineChannel({ ...base, async probe() { return 'ok'; } });
export const b = defineChannel({ ...base, probe() { return 'degraded'; } });
export const c = defineChannel({ ...base, probe: async () => 'failed' });
export const d = defineChannel({ ...base, async probe() { return { outcome: 'degraded', reason: 'slow' }; } });
export const e = defineChannel({ ...base, probe() { return { outcome: 'failed' }; } });
export const f = defineChannel({ ...base, async probe() {} });
export const g = defineChannel({ ...base, probe() {} });
export const h = defineChannel<{ text: string }, { id: string }, { strict: boolean }>({
  ...base, send(_ctx, m) { return { id: m.text }; }, async probe(ctx) { return ctx.instance.settings.strict ? 'ok' : { outcome: 'degraded' }; },
});
// @ts-expect-error not an outcome
export const x = defineChannel({ ...base, async probe() { return 'fine'; } });
// @ts-expect-error not an outcome
export const y = defineChannel({ ...base, probe() { return { outcome: 'okay' }; } });
`,
};

/** A diagnostic as `README.md:<line>: TS<code>: <message>` (or its own file and line outside the snippets). */
function format(d: ts.Diagnostic, block?: Block): string {
  const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
  if (!d.file || d.start === undefined) return `TS${d.code}: ${message}`;
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
  const where = block ? `README.md:${block.line + line}:${character + 1}` : `${relative(root, d.file.fileName)}:${line + 1}:${character + 1}`;
  const source = d.file.text.split('\n')[line]?.trim();
  return `${where}: TS${d.code}: ${message}${source ? `\n    ${source}` : ''}`;
}

beforeAll(() => {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const b of compiled) writeFileSync(b.file, b.code);
  writeFileSync(probeTyping.file, probeTyping.code);
  const tsconfig = {
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: 'ES2022',
      lib: ['ES2023'],
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      types: ['node'],
      skipLibCheck: true,
      paths: {
        threadvisor: [relative(dir, join(root, 'src', 'index.ts'))],
        'threadvisor/worker': [relative(dir, join(root, 'workers', 'runtime.ts'))],
        'threadvisor/prometheus': [relative(dir, join(root, 'src', 'prometheus.ts'))],
        'threadvisor/ops': [relative(dir, join(root, 'src', 'ops.ts'))],
        'threadvisor/redis': [relative(dir, join(root, 'src', 'redis.ts'))],
        'threadvisor/http': [relative(dir, join(root, 'src', 'http.ts'))],
      },
    },
    files: [...compiled.map((b) => relative(dir, b.file)), relative(dir, probeTyping.file)],
  };
  const configPath = join(dir, 'tsconfig.json');
  writeFileSync(configPath, JSON.stringify(tsconfig, null, 2));
  const parsed = ts.getParsedCommandLineOfConfigFile(configPath, {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(format(d));
    },
  });
  if (!parsed) throw new Error(`cannot read ${configPath}`);
  expect(parsed.errors.map((d) => format(d))).toEqual([]);
  const program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options });
  diagnostics = ts.getPreEmitDiagnostics(program);
}, TIMEOUT_MS);

afterAll(() => {
  // The snippets are not part of the project (eslint and tsc -p would pick them up).
  if (!process.env.KEEP_README_SNIPPETS) rmSync(dir, { recursive: true, force: true });
});

describe('README examples', { timeout: TIMEOUT_MS }, () => {
  it('has TypeScript blocks to check', () => {
    expect(compiled.length).toBeGreaterThan(0);
  });

  it.each(blocks.map((b) => [b.line, b] as const))('the block at README.md:%i compiles under tsc --strict', (_line, block) => {
    if (block.skip !== undefined) return;
    const own = diagnostics.filter((d) => d.file?.fileName === block.file.replaceAll('\\', '/') || d.file?.fileName === block.file);
    expect(own.map((d) => format(d, block)), `README.md block at line ${block.line}`).toEqual([]);
  });

  it('a channel probe infers its literal outcome, sync or async, and rejects anything else', () => {
    const own = diagnostics.filter((d) => d.file?.fileName === probeTyping.file.replaceAll('\\', '/'));
    expect(own.map((d) => format(d))).toEqual([]);
  });

  it('checking the examples raises nothing in the library itself', () => {
    const own = new Set([...compiled, probeTyping].map((b) => b.file.replaceAll('\\', '/')));
    const other = diagnostics.filter((d) => !d.file || !own.has(d.file.fileName.replaceAll('\\', '/')));
    expect(other.map((d) => format(d))).toEqual([]);
  });
});

describe('README events table', { timeout: TIMEOUT_MS }, () => {
  const readme = join(root, 'README.md');
  const begin = /<!-- events-table:[^\n]*-->\n/;
  const end = '<!-- /events-table -->';

  it('is the table of src/events.ts (UPDATE_README=1 rewrites it)', () => {
    const text = readFileSync(readme, 'utf8');
    const open = begin.exec(text);
    const close = text.indexOf(end);
    expect(open, 'README.md has an events-table marker').not.toBeNull();
    expect(close).toBeGreaterThan(open!.index);
    const from = open!.index + open![0].length;
    const table = eventsTable();
    if (process.env.UPDATE_README) writeFileSync(readme, `${text.slice(0, from)}${table}\n${text.slice(close)}`);
    else expect(text.slice(from, close).trimEnd()).toBe(table);
  });

  it('has one row per event name, each with its payload fields and when it is emitted', () => {
    const rows = eventRows();
    const names = new Set(Object.values(EVENTS).flat());
    expect(rows.map((r) => r.event).sort()).toEqual([...names].sort());
    for (const r of rows) {
      expect(r.fields, r.event).not.toBe('');
      expect(r.when, r.event).not.toBe('');
    }
  });
});
