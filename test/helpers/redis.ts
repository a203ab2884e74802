/**
 * A real `redis-server` for tests: started from PATH on a free port of 127.0.0.1, with no
 * persistence, stopped (or restarted on the same port) by the test. A missing `redis-server`
 * fails the test with a clear message; it never skips.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** A running test Redis. */
export interface TestRedis {
  readonly port: number;
  readonly url: string;
  /** Every key and its value (strings, hashes, sets, sorted sets), for checks such as "no secret in Redis". */
  dump(): Promise<Record<string, unknown>>;
  /** Deletes every key. */
  flush(): Promise<void>;
  /** Stops the server (SIGKILL): an outage. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function launch(port: number, dir: string | undefined): Promise<ChildProcess> {
  // Persistent: an append-only file synced at every write, so a restart loses nothing.
  const persistence = dir ? ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir] : ['--appendonly', 'no'];
  return new Promise((resolve, reject) => {
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--protected-mode', 'yes'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-server did not start on port ${port}: ${out.slice(-500)}`));
    }, 10_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`redis-server could not be started (is it installed and on PATH? .ci/run installs Debian's redis-server): ${err.message}`));
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  });
}

/** Starts a fresh `redis-server`; `persistent`: with an append-only file, so that `restart` keeps the data. */
export async function startRedis(options: { persistent?: boolean } = {}): Promise<TestRedis> {
  const port = await freePort();
  const dir = options.persistent ? mkdtempSync(join(tmpdir(), 'threadvisor-redis-')) : undefined;
  let child: ChildProcess | undefined = await launch(port, dir);
  const url = `redis://127.0.0.1:${port}`;
  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };
  return {
    port,
    url,
    async dump() {
      const r = new Redis(url, { lazyConnect: true });
      await r.connect();
      try {
        const out: Record<string, unknown> = {};
        for (const key of await r.keys('*')) {
          const type = await r.type(key);
          if (type === 'string') out[key] = await r.get(key);
          else if (type === 'hash') out[key] = await r.hgetall(key);
          else if (type === 'set') out[key] = await r.smembers(key);
          else if (type === 'zset') out[key] = await r.zrange(key, 0, -1, 'WITHSCORES');
          else if (type === 'list') out[key] = await r.lrange(key, 0, -1);
          else out[key] = `(${type})`;
        }
        return out;
      } finally {
        r.disconnect();
      }
    },
    async flush() {
      const r = new Redis(url, { lazyConnect: true });
      await r.connect();
      try {
        await r.flushall();
      } finally {
        r.disconnect();
      }
    },
    kill,
    async restart() {
      await kill();
      child = await launch(port, dir);
    },
    async stop() {
      await kill();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
