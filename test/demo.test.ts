/**
 * The gateway demo, end to end: the built `dist/demo/gateway.js` runs as a child process (real
 * worker threads, real faults, a real FileStorage under a temp dir) and its `--json` summary must
 * show nothing lost, no sibling disturbed and every injected fault detected.
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
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, ...args], { timeout: 80_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | null | undefined) : 0;
      resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
    });
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
  accepted: number;
  delivered: number;
  rejected: number;
  lost: number;
  restarts: Record<string, number>;
  hangDetectMs: number | null;
  crashToConnectedMs: number | null;
  siblings: string[];
  siblingsDisturbed: number;
  faults: FaultResult[];
  agents: { rooms: number; hibernations: number; thawed: number };
}

describe('gateway demo (dist/demo/gateway.js)', () => {
  it(
    'runs 4 instances for 8 s with faults: exit 0, nothing lost, siblings undisturbed, faults detected',
    async () => {
      expect(existsSync(script), `${script} is missing: run \`npm run build\` first`).toBe(true);
      const { code, stdout, stderr } = await run(['--duration', '8', '--instances', '4', '--json']);
      const lines = stdout.trim().split('\n');
      // --json: the summary is the last line of stdout (everything else goes to stderr).
      const last = lines[lines.length - 1] ?? '';
      let summary: Summary;
      try {
        summary = JSON.parse(last) as Summary;
      } catch {
        throw new Error(`last stdout line is not JSON: ${last}\n--- stderr ---\n${stderr.slice(-4000)}`);
      }
      expect(code, stderr.slice(-4000)).toBe(0);
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
    },
    90_000,
  );

  it('--help lists the flags and exits 0', async () => {
    expect(existsSync(script)).toBe(true);
    const { code, stdout } = await run(['--help']);
    expect(code).toBe(0);
    for (const flag of ['--duration', '--instances', '--rooms', '--rate', '--json', '--log-level', '--help']) expect(stdout).toContain(flag);
  });
});
