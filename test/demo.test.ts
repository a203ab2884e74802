/**
 * The gateway demo, end to end: the built `dist/demo/gateway.js` runs as a child process (real
 * worker threads, real faults, a real FileStorage under a temp dir) and its `--json` summary must
 * show nothing lost, no sibling disturbed and every injected fault detected; packed several per
 * worker (`--per-worker`), a crash's or hang's worker-mates are restarted with it and come back,
 * and the table stays a summary instead of one row per instance. The instances talk real HTTP to
 * the platform simulator (the default): no request over its rate limit, no 409. The demo serves the
 * ops endpoint: the test reads the status page URL it prints and asks that server while it runs.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../dist/demo/gateway.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** What the printed status page URL answered while the demo ran (see {@link probeOps}); undefined without a probe. */
  ops?: OpsProbe;
}

interface OpsProbe {
  url: string;
  healthz: number;
  page: { status: number; contentType: string | null; html: boolean };
  instances: { status: number; ids: string[] };
  readyz: { status: number; body: unknown };
}

/** The status page URL the demo prints at start (on stdout, or stderr with --json). */
const OPS_LINE = /status page: (http:\/\/127\.0\.0\.1:\d+)\/ /;

/** Asks the demo's ops endpoint while it runs: /healthz, the page, /instances (once every instance is listed) and /readyz. */
async function probeOps(url: string, instances: number): Promise<OpsProbe> {
  const healthz = (await fetch(`${url}/healthz`)).status;
  const pageRes = await fetch(`${url}/`, { headers: { accept: 'text/html' } });
  const page = { status: pageRes.status, contentType: pageRes.headers.get('content-type'), html: (await pageRes.text()).includes('<html') };
  // The instances start after the URL is printed: ask until all are listed (generous liveness bound).
  let listed = { status: 0, ids: [] as string[] };
  for (const until = Date.now() + 30_000; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
    const res = await fetch(`${url}/instances`);
    const body = (await res.json()) as Array<{ instanceId: string }>;
    listed = { status: res.status, ids: body.map((h) => h.instanceId).sort() };
    if (listed.ids.length >= instances) break;
  }
  const readyRes = await fetch(`${url}/readyz`);
  return { url, healthz, page, instances: listed, readyz: { status: readyRes.status, body: await readyRes.json() } };
}

/** The `--json` summary: the last line of stdout (everything else goes to stderr). */
function summaryOf({ stdout, stderr }: Run): Summary {
  const lines = stdout.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  try {
    return JSON.parse(last) as Summary;
  } catch {
    throw new Error(`last stdout line is not JSON: ${last}\n--- stderr ---\n${stderr.slice(-4000)}`);
  }
}

/** Runs the demo; with `probe` (its instance count), asks its ops endpoint while it runs; with `signal`, sends `signal.name` 1 s after its output first matched `signal.after`. */
function run(args: string[], probe?: number, signal?: { after: RegExp; name: NodeJS.Signals }): Promise<Run> {
  return new Promise((resolve) => {
    let ops: Promise<OpsProbe> | undefined;
    let seen = '';
    const child = execFile(process.execPath, [script, ...args], { timeout: 80_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | null | undefined) : 0;
      const done = (result?: OpsProbe) => resolve({ code: typeof code === 'number' ? code : null, stdout, stderr, ...(result ? { ops: result } : {}) });
      if (ops) ops.then(done, (e: unknown) => resolve({ code: null, stdout, stderr: `${stderr}\n--- ops probe failed: ${String(e)}` }));
      else done();
    });
    let signalSent = false;
    const watch = (chunk: Buffer | string) => {
      seen = (seen + String(chunk)).slice(-4096);
      if (signal && !signalSent && signal.after.test(seen)) {
        signalSent = true;
        setTimeout(() => child.kill(signal.name), 1000);
      }
      if (probe === undefined || ops) return;
      const url = OPS_LINE.exec(seen)?.[1];
      if (url) ops = probeOps(url, probe);
    };
    child.stdout?.on('data', watch);
    child.stderr?.on('data', watch);
  });
}

interface FaultResult {
  fault: string;
  instance: string;
  ok: boolean;
  detectMs: number | null;
}

interface Summary {
  ok: boolean;
  interrupted: boolean;
  instances: number;
  perWorker: number;
  workers: number;
  accepted: number;
  delivered: number;
  rejected: number;
  lost: number;
  restarts: Record<string, number>;
  hangDetectMs: number | null;
  crashToConnectedMs: number | null;
  siblings: string[];
  workerMates: Array<{ fault: string; instance: string; threadId: number | null; mates: number; expectedCasualties: boolean }>;
  casualties: { expected: number; restartedWithGroup: number; connectedAgain: number };
  siblingsDisturbed: number;
  faults: FaultResult[];
  agents: { rooms: number; hibernations: number; thawed: number };
  /** Over HTTP (the default): the platform simulator's counters; null with --loopback. */
  simulator: { requests: number; sent: number; rateLimited: number; overLimit: number; conflicts: number } | null;
}

/** Over HTTP: the simulator saw the sends, no request over its rate limit and no 409, in the JSON and in the summary line. */
function expectPlatformClean(summary: Summary, stderr: string): void {
  expect(summary.simulator).not.toBeNull();
  expect(summary.simulator).toMatchObject({ overLimit: 0, conflicts: 0 });
  expect(summary.simulator?.sent).toBeGreaterThan(0);
  expect(stderr).toMatch(/simulator: \d+ requests, \d+ messages sent · 429s honoured \d+ · requests over the limit 0 · 409s 0 /);
}

describe('gateway demo (dist/demo/gateway.js)', () => {
  it(
    'runs 4 instances for 8 s with faults: exit 0, nothing lost, siblings undisturbed, faults detected',
    async () => {
      expect(existsSync(script), `${script} is missing: run \`npm run build\` first`).toBe(true);
      const result = await run(['--duration', '8', '--instances', '4', '--json'], 4);
      const { code, stderr } = result;
      const summary = summaryOf(result);
      expect(code, stderr.slice(-4000)).toBe(0);
      // The status page URL it printed answered while it ran: liveness, the page, the instances.
      expect(result.ops, stderr.slice(-4000)).toBeDefined();
      expect(result.ops).toMatchObject({ healthz: 200, page: { status: 200, html: true }, instances: { status: 200, ids: ['gw-0', 'gw-1', 'gw-2', 'gw-3'] } });
      expect(result.ops?.page.contentType).toContain('text/html');
      expect([200, 503]).toContain(result.ops?.readyz.status);
      expect(result.ops?.readyz.body).toHaveProperty('ready');
      expect(summary.ok).toBe(true);
      expect(summary.lost).toBe(0);
      expect(summary.siblingsDisturbed).toBeFalsy();
      expect(summary.siblings.length).toBeGreaterThanOrEqual(1);
      expect(summary.delivered).toBeGreaterThan(0);
      expect(summary.accepted).toBe(summary.delivered + summary.rejected);
      // 4 instances: crash, hang and oom on three of them, the fourth is the sibling.
      expect(summary.faults.map((f) => f.fault)).toEqual(['crash', 'hang', 'oom']);
      for (const f of summary.faults) expect(f, `${f.fault} on ${f.instance}`).toMatchObject({ ok: true });
      expect(summary.restarts.crash).toBeGreaterThanOrEqual(1);
      expect(summary.restarts.hang).toBeGreaterThanOrEqual(1);
      // The heap blow-up restarts as `oom`, or as `hang` when the allocation loop outlasted the
      // heartbeat budget first (a loaded machine): one more restart either way.
      expect((summary.restarts.oom ?? 0) + (summary.restarts.hang ?? 0)).toBeGreaterThanOrEqual(2);
      // heartbeat 250 ms × 4: detected within about a second (slack for a loaded machine).
      expect(summary.hangDetectMs).toBeGreaterThan(0);
      expect(summary.hangDetectMs).toBeLessThan(3000);
      expect(summary.crashToConnectedMs).toBeGreaterThan(0);
      // Rooms hibernated to disk and thawed again.
      expect(summary.agents.hibernations).toBeGreaterThan(0);
      expect(summary.agents.thawed).toBeGreaterThan(0);
      expectPlatformClean(summary, stderr);
    },
    90_000,
  );

  it(
    'SIGTERM mid-run (stopOnSignals): stops taking traffic, every accepted send settles, summary printed, exit 0',
    async () => {
      expect(existsSync(script), `${script} is missing: run \`npm run build\` first`).toBe(true);
      const startedAt = Date.now();
      // 60 s planned; the signal comes 1 s into the run (after the warm-up).
      const result = await run(['--duration', '60', '--instances', '2', '--loopback', '--json'], undefined, { after: /only 2 instances: skipping/, name: 'SIGTERM' });
      const { code, stderr } = result;
      const summary = summaryOf(result);
      expect(stderr).toContain('SIGTERM: shutting down cleanly');
      expect(code, stderr.slice(-4000)).toBe(0);
      expect(summary).toMatchObject({ ok: true, interrupted: true, lost: 0 });
      expect(summary.delivered).toBeGreaterThan(0);
      expect(summary.accepted).toBe(summary.delivered + summary.rejected);
      // Liveness only: the run ended on the signal, not after its 60 s.
      expect(Date.now() - startedAt).toBeLessThan(50_000);
    },
    90_000,
  );

  it(
    'packs 200 instances 50 per worker: exit 0, the crash restarted alone in place, worker-mates of the hang restarted as a group, a summary table',
    async () => {
      expect(existsSync(script), `${script} is missing: run \`npm run build\` first`).toBe(true);
      const result = await run(['--duration', '8', '--instances', '200', '--per-worker', '50', '--rate', '5', '--rooms', '8', '--json']);
      const { code, stderr } = result;
      const summary = summaryOf(result);
      expect(code, stderr.slice(-4000)).toBe(0);
      expect(summary).toMatchObject({ ok: true, lost: 0, instances: 200, perWorker: 50, siblingsDisturbed: 0 });
      // 199 shared (the oom instance has a worker of its own): 4 shared workers and 1 dedicated,
      // give or take the fatal instance, which leaves its worker in error.
      expect(summary.workers).toBeGreaterThanOrEqual(4);
      expect(summary.workers).toBeLessThanOrEqual(6);
      expect(summary.faults.map((f) => f.fault).sort()).toEqual(['crash', 'fatal', 'hang', 'oom', 'provider']);
      for (const f of summary.faults) expect(f, `${f.fault} on ${f.instance}`).toMatchObject({ ok: true });
      // The crash is attributed: only its instance restarts (kind crash). The hang ends its shared
      // worker: every instance in it restarts, kind group.
      const mates = Object.fromEntries(summary.workerMates.map((m) => [m.fault, m]));
      expect(mates.crash?.mates).toBe(49);
      expect(mates.hang?.mates).toBe(49);
      expect(mates.oom?.mates).toBe(0);
      expect(mates.crash?.threadId).not.toBe(mates.hang?.threadId);
      expect(summary.casualties).toEqual({ expected: 49, restartedWithGroup: 49, connectedAgain: 49 });
      expect(summary.restarts.group).toBeGreaterThanOrEqual(50);
      expect(summary.restarts.crash).toBeGreaterThanOrEqual(1);
      expect(summary.siblings.length).toBe(195);
      expect(summary.accepted).toBe(summary.delivered + summary.rejected);
      expectPlatformClean(summary, stderr);
      // Not one row per instance: the final table (on stderr with --json) has summary rows and a
      // few instances that need attention, then "… and N more".
      const table = stderr.slice(stderr.lastIndexOf('final table'));
      expect(table).toContain('needs attention');
      expect(table).toMatch(/… and \d+ more/);
      const instanceRows = table.split('\n').filter((l) => /^gw-\d+ /.test(l));
      expect(instanceRows.length).toBeGreaterThanOrEqual(5);
      expect(instanceRows.length).toBeLessThan(12);
      expect(table.slice(0, table.indexOf('summary (')).split('\n').length).toBeLessThan(60);
    },
    60_000,
  );

  it('--help lists the flags and exits 0', async () => {
    expect(existsSync(script)).toBe(true);
    const { code, stdout } = await run(['--help']);
    expect(code).toBe(0);
    for (const flag of ['--duration', '--instances', '--per-worker', '--rooms', '--rate', '--loopback', '--ops-port', '--json', '--log-level', '--help']) expect(stdout).toContain(flag);
  });

  it('rejects a --per-worker beyond the runtime limit with exit 2', async () => {
    const { code, stderr } = await run(['--per-worker', '1001']);
    expect(code).toBe(2);
    expect(stderr).toContain('--per-worker must be an integer from 1 to 1000');
  });
});
