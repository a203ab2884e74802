/**
 * The cluster demo, end to end: the built `dist/demo/cluster.js` runs as a child process (its own
 * redis-server, 3 node processes, 24 loopback instances, one node killed with SIGKILL) and its
 * `--json` summary must show no overlap, every instance running at the end on the two survivors,
 * and an outage within leaseMs + one tick + 1 s.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../dist/demo/cluster.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, ...args], { timeout: 50_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | null | undefined) : 0;
      resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
    });
  });
}

interface Summary {
  ok: boolean;
  nodes: number;
  instances: number;
  leaseMs: number;
  killed: { nodeId: string; atMs: number; instances: number };
  moved: number;
  overlaps: number;
  longestOutageMs: number;
  allRunningAtEnd: boolean;
  perNode: Record<string, number>;
}

describe('cluster demo (dist/demo/cluster.js)', () => {
  it(
    'kills one of 3 nodes: exit 0, no overlap, its instances moved, every instance running on the survivors',
    async () => {
      expect(existsSync(script), `${script} is missing: run \`npm run build\` first`).toBe(true);
      const { code, stdout, stderr } = await run(['--duration', '7', '--json', '--lease-ms', '1500']);
      const last = stdout.trim().split('\n').pop() ?? '';
      let summary: Summary;
      try {
        summary = JSON.parse(last) as Summary;
      } catch {
        throw new Error(`last stdout line is not JSON: ${last}\n--- stderr ---\n${stderr.slice(-4000)}`);
      }
      expect(code, stderr.slice(-4000)).toBe(0);
      expect(summary).toMatchObject({ ok: true, nodes: 3, instances: 24, leaseMs: 1500, overlaps: 0, allRunningAtEnd: true });
      expect(summary.killed.instances).toBeGreaterThan(0);
      expect(summary.moved).toBe(summary.killed.instances);
      expect(Object.keys(summary.perNode)).toHaveLength(2);
      expect(summary.perNode[summary.killed.nodeId]).toBeUndefined();
      expect(Object.values(summary.perNode).reduce((a, b) => a + b, 0)).toBe(24);
      for (const n of Object.values(summary.perNode)) expect(n).toBe(12);
      // A killed node's instances run again after at most leaseMs, one tick and their start.
      expect(summary.longestOutageMs).toBeGreaterThan(0);
      expect(summary.longestOutageMs).toBeLessThan(1500 + 500 + 1000);
      // The live view went to stderr, the kill and the moves with it.
      expect(stderr).toContain(`SIGKILL ${summary.killed.nodeId}`);
      expect(stderr).toContain('overlaps (two nodes running one instance at once): 0');
    },
    60_000,
  );

  it('bad flags exit 2 with the usage', async () => {
    const { code, stderr } = await run(['--nodes', '1']);
    expect(code).toBe(2);
    expect(stderr).toContain('--nodes must be an integer from 2 to 10');
    expect(stderr).toContain('--instances');
  });
});
