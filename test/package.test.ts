/**
 * The package as users get it. `npm pack` runs in a copy of the repository without `dist/` (a
 * clean checkout, so `prepack` has to build; packing in place would rebuild `dist/` under the
 * other test files' workers). The tarball must hold the entry points, the worker files the runtime
 * spawns at run time, LICENSE and README and nothing else; then it is installed into a fresh
 * project, next to `typescript` and `@types/node` at the versions this repository uses, and a small
 * app (the built-in `loopback` channel and a channel module of its own that imports
 * `threadvisor/channel` inside its worker, and `threadvisor/ops` without the optional prom-client) is compiled with
 * strict NodeNext settings, library checks on, and run.
 *
 * Slow (a build, an install, a compile) and needs the npm registry or a warm npm cache: generous
 * timeouts, no timing asserts.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const TIMEOUT = 240_000;
const root = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  exports: Record<string, string | Record<string, string>>;
  devDependencies: Record<string, string>;
};

const tmp = mkdtempSync(join(tmpdir(), 'threadvisor-pkg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs a command to completion; rejects with its output when it fails or exceeds `timeout`. */
function run(cmd: string, args: string[], cwd: string, timeout: number): Promise<string> {
  return new Promise((resolve, reject) => {
    // npm is `npm.cmd` on Windows, which only a shell can start.
    const shell = cmd === 'npm' && process.platform === 'win32';
    // npm, tsc and the app measure nothing of ours: they need not write V8 coverage (slow).
    const { NODE_V8_COVERAGE: _coverage, ...env } = process.env;
    execFile(cmd, args, { cwd, timeout, shell, env, maxBuffer: 64 * 2 ** 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** What a clean checkout does not have: installed modules, build and test output, VCS data, old tarballs. */
const NOT_IN_CHECKOUT = new Set(['node_modules', 'dist', 'coverage', 'test-results', '.git']);

let tarball = '';
let packed: string[] = [];

beforeAll(async () => {
  const checkout = join(tmp, 'checkout');
  cpSync(root, checkout, {
    recursive: true,
    filter: (from) => {
      const rel = relative(root, from);
      return !NOT_IN_CHECKOUT.has(rel.split(sep)[0]!) && !rel.endsWith('.tgz');
    },
  });
  symlinkSync(realpathSync(join(root, 'node_modules')), join(checkout, 'node_modules'), 'junction');
  const dest = join(tmp, 'pack');
  mkdirSync(dest);
  // --json keeps stdout to the report; prepack's build output goes to stderr.
  const out = await run('npm', ['pack', '--json', '--pack-destination', dest], checkout, TIMEOUT);
  const [report] = JSON.parse(out) as Array<{ filename: string; files: Array<{ path: string }> }>;
  tarball = join(dest, report!.filename);
  packed = report!.files.map((f) => f.path).sort();
}, TIMEOUT);

describe('the packed package', { timeout: TIMEOUT }, () => {
  it('ships the built entry points, the worker files, LICENSE and README, and nothing else', () => {
    expect(existsSync(tarball)).toBe(true);
    expect(packed).toEqual(
      expect.arrayContaining([
        'package.json',
        'LICENSE',
        'README.md',
        'dist/src/index.js',
        'dist/src/index.d.ts',
        'dist/workers/runtime.js',
        'dist/workers/runtime.d.ts',
        'dist/workers/instance-worker.js',
        'dist/workers/instance-worker-script.js',
        'dist/workers/instance-worker.bundle.cjs',
        'dist/workers/channels/loopback.js',
      ]),
    );
    // Every target of `exports` is in the tarball.
    const targets = Object.values(manifest.exports).flatMap((t) => (typeof t === 'string' ? [t] : Object.values(t)));
    for (const target of targets) expect(packed).toContain(target.replace(/^\.\//, ''));
    // Nothing from tests, benchmarks or the demo, no sources, no source maps pointing at them.
    const stray = packed.filter((p) => !['package.json', 'LICENSE', 'README.md'].includes(p) && !/^dist\/(src|workers)\/.+\.(js|d\.ts)$/.test(p) && p !== 'dist/workers/instance-worker.bundle.cjs');
    expect(stray).toEqual([]);
    expect(packed.some((p) => p.startsWith('dist/test/'))).toBe(false);
  });

  it('installs into a fresh project, compiles against its types (strict, NodeNext) and runs', async () => {
    const app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'threadvisor-package-check', private: true, type: 'module' }, null, 2));
    const ts = manifest.devDependencies['typescript'];
    const nodeTypes = manifest.devDependencies['@types/node'];
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, `typescript@${ts}`, `@types/node@${nodeTypes}`], app, TIMEOUT);
    const installed = JSON.parse(readFileSync(join(app, 'node_modules', manifest.name, 'package.json'), 'utf8')) as { version: string };
    expect(installed.version).toBe(manifest.version);

    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify(
        {
          compilerOptions: {
            target: 'ES2022',
            lib: ['ES2023'],
            module: 'NodeNext',
            moduleResolution: 'NodeNext',
            types: ['node'],
            strict: true,
            // Check the shipped declarations too, not only the app.
            skipLibCheck: false,
            outDir: 'out',
          },
          include: ['*.ts'],
        },
        null,
        2,
      ),
    );
    writeFileSync(
      join(app, 'echo-channel.ts'),
      `import { ChannelError, defineChannel } from 'threadvisor/channel';

export default defineChannel({
  type: 'echo',
  async connect() {},
  async disconnect() {},
  async send(_ctx, message) {
    if (message === 'refuse') throw new ChannelError('refused', { class: 'fatal', code: 'refused' });
    return { externalId: \`echo-\${JSON.stringify(message)}\` };
  },
});
`,
    );
    writeFileSync(
      join(app, 'app.ts'),
      `import { ChannelError, DeliveryFailedError, Runtime, type InstanceHealth } from 'threadvisor';
import { serveOps, stopOnSignals, type OpsServer } from 'threadvisor/ops';
import type { ServeOptions } from 'threadvisor/worker';

const serveOptions: ServeOptions = {};
void serveOptions;

const rt = await Runtime.start({ heartbeat: { intervalMs: 1000, maxMissed: 10 } });
try {
  const loopback = await rt.startInstance({ name: 'loopback-1', channelType: 'loopback', channel: 'loopback' });
  console.log(\`loopback receipt \${JSON.stringify(await rt.send(loopback.instanceId, { text: 'hello' }))}\`);
  const echo = await rt.startInstance({
    name: 'echo-1',
    channelType: 'echo',
    channel: new URL('./echo-channel.js', import.meta.url),
  });
  console.log(\`echo receipt \${JSON.stringify(await rt.send(echo.instanceId, 'hi'))}\`);
  // A ChannelError thrown in the worker (from threadvisor/channel) keeps its class (fatal: no retry) and code.
  const refused = await rt.send(echo.instanceId, 'refuse').catch((err: unknown) => err);
  console.log(\`echo refused \${refused instanceof DeliveryFailedError && refused.lastError instanceof ChannelError ? refused.lastError.channelCode : String(refused)}\`);
  const health: InstanceHealth = await rt.health(loopback.instanceId);
  console.log(\`loopback health \${health.status}, \${rt.countInstances()} instances\`);
  // prom-client (an optional peer) is not installed here: /metrics says so, the rest works.
  const ops: OpsServer = await serveOps(rt, { readyFraction: 0.5 });
  const dispose = stopOnSignals(rt);
  try {
    for (const path of ['/healthz', '/metrics']) console.log(\`ops \${path} \${(await fetch(ops.url + path)).status}\`);
  } finally {
    dispose();
    await ops.close();
  }
} finally {
  await rt.stop();
}
console.log('runtime stopped');
`,
    );

    await run(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app, 120_000);
    // Resolves only if node exits with code 0; a handle left open after rt.stop() hangs until the timeout.
    const stdout = await run(process.execPath, [join(app, 'out', 'app.js')], app, 60_000);
    const lines = stdout.split('\n');
    expect(lines).toContain('loopback receipt {"externalId":"lb-1"}');
    expect(lines).toContain('echo receipt {"externalId":"echo-\\"hi\\""}');
    expect(lines).toContain('echo refused refused');
    expect(lines).toContain('loopback health connected, 2 instances');
    expect(lines).toContain('ops /healthz 200');
    expect(lines).toContain('ops /metrics 501');
    expect(lines).toContain('runtime stopped');
  });
});
