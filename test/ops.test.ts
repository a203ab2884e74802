/**
 * `threadvisor/ops`: the ops endpoint over real HTTP (`fetch` and raw sockets against the real
 * server) on a real runtime with `loopback` instances, and `stopOnSignals` in a real child process
 * (test/fixtures/ops-signals.ts, built into dist/test/fixtures). No timing asserts beyond
 * "well before the 20 s a hung stop would take".
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidConfigError } from '../src/errors.js';
import * as ops from '../src/ops.js';
import { serveOps, stopOnSignals, type OpsServer, type ServeOpsOptions } from '../src/ops.js';
import { collectMetrics } from '../src/prometheus.js';
import { Runtime } from '../src/runtime/runtime.js';
import { activeResources, fixtureUrl, resourceGrowth, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const heartbeat = { intervalMs: 250, maxMissed: 8 };
const SECRET = 'sekret-ops-credential-4711';
const OPS_TOKEN = 'ops-token-Zq8vT3';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function runtime(): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, heartbeat, restart: { recoverAfterMs: Infinity } });
  cleanups.push(() => rt.stop());
  return rt;
}

async function connected(rt: Runtime, id: string, settings: Record<string, unknown> = {}): Promise<string> {
  const inst = await rt.startInstance(
    { id, name: id, channelType: 'loopback', channel: 'loopback', credentials: { token: SECRET }, settings },
    { waitFor: 'connected', timeoutMs: 20_000 },
  );
  return inst.instanceId;
}

async function serve(rt: Runtime, options?: ServeOpsOptions): Promise<OpsServer> {
  const server = await serveOps(rt, options);
  cleanups.push(() => server.close());
  return server;
}

interface Answer {
  status: number;
  type: string | null;
  text: string;
  headers: Headers;
}

/** A request with a fresh connection each time (no keep-alive socket left behind in this process). */
async function get(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, { ...init, headers: { connection: 'close', ...(init.headers as Record<string, string> | undefined) } });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text(), headers: res.headers };
}

/** Writes `request` on a raw socket; resolves with whatever came back before the server closed it. */
function raw(port: number, request: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // the server may close before everything is written
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.end(request); // then half-closed: a cut-off request ends here
    socket.setTimeout(10_000, () => socket.destroy());
  });
}

describe('serveOps', { timeout: 60_000 }, () => {
  it('serves /healthz, /readyz, /metrics, /instances and /instances/:id', async () => {
    const rt = await runtime();
    const [a, b] = await Promise.all([connected(rt, 'alpha'), connected(rt, 'beta')]);
    const server = await serve(rt);
    expect(server.port).toBeGreaterThan(0);
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);

    const health = await get(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(health.type).toBe('application/json; charset=utf-8');
    expect(JSON.parse(health.text)).toEqual({ ok: true });
    expect(health.headers.get('cache-control')).toBe('no-store');

    const ready = await get(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ ready: true, connected: 2, total: 2 });

    const metrics = await get(`${server.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.type).toBe(new Registry().contentType);
    expect(metrics.text).toContain('threadvisor_instances{status="connected"} 2');
    expect(metrics.text).toContain(`threadvisor_queue_depth{instance="${a}"} 0`);

    const list = await get(`${server.url}/instances`);
    expect(list.status).toBe(200);
    const all = JSON.parse(list.text) as Array<{ instanceId: string; status: string }>;
    expect(all.map((h) => h.instanceId).sort()).toEqual([a, b]);
    expect(all.every((h) => h.status === 'connected')).toBe(true);

    const one = await get(`${server.url}/instances/${a}?fields=ignored`);
    expect(one.status).toBe(200);
    expect(JSON.parse(one.text)).toMatchObject({ instanceId: a, status: 'connected', channelType: 'loopback', senderQueueDepth: 0 });

    const missing = await get(`${server.url}/instances/no%20such`);
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.text)).toEqual({ error: 'not_found', what: 'instance', id: 'no such' });
    expect((await get(`${server.url}/instances/%E0%A4%A`)).status).toBe(400);

    const index = await get(`${server.url}/`);
    expect(JSON.parse(index.text)).toEqual({ routes: ['/healthz', '/readyz', '/metrics', '/instances', '/instances/:id', '/events'] });
    for (const path of ['/nope', '/instances/a/b', '/healthz/', '/instances/']) {
      const r = await get(`${server.url}${path}`);
      expect(r.status, path).toBe(404);
      expect(JSON.parse(r.text), path).toMatchObject({ error: 'not_found' });
    }

    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const r = await get(`${server.url}/healthz`, { method, ...(method === 'POST' || method === 'PUT' ? { body: 'x'.repeat(10_000) } : {}) });
      expect(r.status, method).toBe(405);
      expect(r.headers.get('allow')).toBe('GET, HEAD');
    }
    const head = await get(`${server.url}/readyz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
  });

  it('/readyz is 503 while an instance is not connected, 200 once all are (or readyFraction of them)', async () => {
    const rt = await runtime();
    await connected(rt, 'good');
    const server = await serve(rt);
    const half = await serve(rt, { readyFraction: 0.5 });
    const ready = async (s: OpsServer): Promise<{ status: number; body: Record<string, unknown> }> => {
      const r = await get(`${s.url}/readyz`);
      return { status: r.status, body: JSON.parse(r.text) as Record<string, unknown> };
    };
    expect((await ready(server)).status).toBe(200);

    const bad = await rt.startInstance({ id: 'bad', name: 'bad', channelType: 'loopback', channel: 'loopback', credentials: { token: SECRET }, settings: { fatalConnect: true } });
    await rt.whenStatus(bad.instanceId, 'error', { timeoutMs: 20_000 });
    expect(await ready(server)).toEqual({
      status: 503,
      body: { ready: false, connected: 1, total: 2, readyFraction: 1, notConnected: [{ id: 'bad', status: 'error' }] },
    });
    expect(await ready(half)).toEqual({ status: 200, body: { ready: true, connected: 1, total: 2 } });

    await rt.stopInstance('bad');
    expect((await ready(server)).status).toBe(200);

    // No instance at all: ready. A stopped runtime: not ready.
    await rt.stopInstance('good');
    expect(await ready(server)).toEqual({ status: 200, body: { ready: true, connected: 0, total: 0 } });
    await rt.stop();
    expect(await ready(server)).toEqual({ status: 503, body: { ready: false, stopping: true } });
    expect((await get(`${server.url}/healthz`)).status).toBe(200);
    expect((await get(`${server.url}/instances/good`)).status).toBe(503);
  });

  it('with a token, every route but /healthz needs the bearer token; 401 never echoes it', async () => {
    const rt = await runtime();
    const id = await connected(rt, 'guarded');
    const server = await serve(rt, { token: OPS_TOKEN });
    const routes = ['/', '/readyz', '/metrics', '/instances', `/instances/${id}`, '/nope'];
    for (const path of routes) {
      for (const authorization of [undefined, `Bearer ${OPS_TOKEN}x`, `Bearer ${OPS_TOKEN.slice(0, -1)}`, OPS_TOKEN, `Basic ${OPS_TOKEN}`, 'Bearer', `Bearer ${OPS_TOKEN} extra`]) {
        const r = await get(`${server.url}${path}`, authorization === undefined ? {} : { headers: { authorization } });
        expect(r.status, `${path} ${authorization}`).toBe(401);
        expect(r.headers.get('www-authenticate')).toBe('Bearer realm="threadvisor"');
        expect(JSON.parse(r.text)).toMatchObject({ error: 'unauthorized' });
        expect(r.text).not.toContain(OPS_TOKEN.slice(4));
      }
      const ok = await get(`${server.url}${path}`, { headers: { authorization: `bearer  ${OPS_TOKEN}` } });
      expect(ok.status, path).toBe(path === '/nope' ? 404 : 200);
      expect(ok.text).not.toContain(OPS_TOKEN);
    }
    expect((await get(`${server.url}/healthz`)).status).toBe(200);
  });

  it('never shows a credential, on any route', async () => {
    const rt = await runtime();
    const ids = [await connected(rt, 'cred-ok', { requireToken: SECRET }), 'cred-bad'];
    await rt.startInstance({ id: 'cred-bad', name: 'cred-bad', channelType: 'loopback', channel: 'loopback', credentials: { token: SECRET, password: `${SECRET}-pw` }, settings: { requireToken: 'other' } });
    await rt.whenStatus('cred-bad', 'error', { timeoutMs: 20_000 });
    const server = await serve(rt);
    const bodies: string[] = [];
    for (const path of ['/', '/healthz', '/readyz', '/metrics', '/instances', ...ids.map((id) => `/instances/${id}`)]) {
      const r = await get(`${server.url}${path}`);
      expect(r.status, path).toBeLessThan(504);
      bodies.push(r.text);
    }
    const all = bodies.join('\n');
    expect(all).toContain('cred-bad'); // the bodies are really there
    expect(all).not.toContain(SECRET);
    expect(all).not.toContain(Buffer.from(SECRET).toString('base64'));
  });

  it('survives malformed and oversized requests, answering 400 / 431', async () => {
    const rt = await runtime();
    const server = await serve(rt);
    const longUrl = await raw(server.port, `GET /${'a'.repeat(2 ** 20)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(longUrl === '' || longUrl.startsWith('HTTP/1.1 431 ')).toBe(true);
    const longHeader = await raw(server.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(2 ** 20)}\r\n\r\n`);
    expect(longHeader === '' || longHeader.startsWith('HTTP/1.1 431 ')).toBe(true);
    const garbage = await raw(server.port, 'NOT HTTP AT ALL\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /);
    expect(garbage).toContain('"error":"bad_request"');
    const binary = await raw(server.port, Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]));
    expect(binary).toMatch(/^HTTP\/1\.1 400 /);
    const star = await raw(server.port, 'GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(star).toMatch(/^HTTP\/1\.1 400 /);
    const absolute = await raw(server.port, 'GET http://example.test/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(absolute).toMatch(/^HTTP\/1\.1 200 /);
    // A request cut off halfway, then gone.
    const cut = await raw(server.port, 'GET /readyz HTTP/1.1\r\nHost: x\r\nX-Partial');
    expect(cut === '' || cut.startsWith('HTTP/1.1 400 ')).toBe(true);
    expect((await get(`${server.url}/healthz`)).status).toBe(200);
  });

  it('serves a registry of its own as it is; validates its options, naming the field', async () => {
    const rt = await runtime();
    const registry = new Registry();
    const metrics = collectMetrics(rt, { registry, perInstance: false });
    cleanups.push(() => metrics.stop());
    const server = await serve(rt, { registry });
    const text = (await get(`${server.url}/metrics`)).text;
    expect(text).toContain('threadvisor_instances{status="connected"} 0');
    expect(text).not.toContain('instance=');

    const bad: Array<[unknown, string]> = [
      [{ port: -1 }, 'port'],
      [{ port: 65_536 }, 'port'],
      [{ port: 1.5 }, 'port'],
      [{ host: '' }, 'host'],
      [{ host: 7 }, 'host'],
      [{ token: '' }, 'token'],
      [{ token: 'has space' }, 'token'],
      [{ token: 42 }, 'token'],
      [{ readyFraction: 1.01 }, 'readyFraction'],
      [{ readyFraction: -0.1 }, 'readyFraction'],
      [{ readyFraction: Number.NaN }, 'readyFraction'],
      [{ registry: {} }, 'registry'],
      [{ manager: {} }, 'manager'],
      [{ registry, manager: { on() {}, off() {}, stats() {} } }, 'manager'],
      [{ bogus: true }, 'bogus'],
    ];
    for (const [options, field] of bad) {
      const err = await serveOps(rt, options as ServeOpsOptions).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(options)).toBeInstanceOf(InvalidConfigError);
      expect((err as InvalidConfigError).issues.map((i) => i.path)).toContain(field);
    }
    await expect(serveOps({} as Runtime)).rejects.toMatchObject({ code: 'invalid_config', issues: [{ path: 'runtime', message: 'expected a Runtime' }] });
    // A port in use: the listen error, and nothing left registered.
    const before = rt.listenerCount('instance:restart');
    await expect(serveOps(rt, { port: server.port })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(rt.listenerCount('instance:restart')).toBe(before);
  });

  it('close() leaves no server, socket or listener behind, even with connections open', async () => {
    const rt = await runtime();
    await connected(rt, 'res');
    const listeners = rt.listenerCount('instance:stopped');
    const before = activeResources();
    const server = await serveOps(rt);
    expect(rt.listenerCount('instance:stopped')).toBe(listeners + 1); // the default registry's collector
    // A keep-alive connection and one half-sent request, open while closing.
    const keepAlive = connect(server.port, '127.0.0.1');
    keepAlive.on('error', () => undefined);
    const answered = new Promise<void>((resolve) => keepAlive.once('data', () => resolve()));
    keepAlive.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await answered;
    const partial = connect(server.port, '127.0.0.1');
    partial.on('error', () => undefined);
    partial.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
    await Promise.all([(await get(`${server.url}/metrics`)).text, get(`${server.url}/instances`)]);
    const closed = Promise.all([keepAlive, partial].map((s) => new Promise((r) => s.once('close', r))));
    await server.close();
    await server.close(); // idempotent
    await closed;
    await waitFor(() => Object.keys(resourceGrowth(before, activeResources())).length === 0, 5_000).catch(() => undefined);
    expect(resourceGrowth(before, activeResources())).toEqual({});
    expect(rt.listenerCount('instance:stopped')).toBe(listeners);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });

  it('the built entry imports neither prom-client nor the prometheus module up front', () => {
    const source = readFileSync(new URL('../dist/src/ops.js', import.meta.url), 'utf8');
    const staticImports = [...source.matchAll(/^(?:import|export)[^;]*?from '([^']+)'/gm)].map((m) => m[1]);
    expect(staticImports).toContain('./signals.js');
    expect(staticImports.filter((s) => s === 'prom-client' || s?.includes('prometheus'))).toEqual([]);
    expect(Object.keys(ops).sort()).toEqual(['serveOps', 'stopOnSignals']);
  });
});

/** Runs the signals fixture; `onLine` sees each stdout line. Resolves with the exit code, the lines and the time from the first signal. */
function child(args: string[], onLine: (line: string, proc: ReturnType<typeof spawn>) => void): Promise<{ code: number | null; signal: NodeJS.Signals | null; lines: string[] }> {
  const { NODE_V8_COVERAGE: _coverage, ...env } = process.env;
  const proc = spawn(process.execPath, [fixtureUrl('ops-signals').pathname, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  let buffer = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.stdout!.on('data', (c: Buffer) => {
    buffer += c.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      lines.push(line);
      onLine(line, proc);
    }
  });
  const killer = setTimeout(() => proc.kill('SIGKILL'), 40_000);
  return new Promise((resolve) => {
    proc.on('close', (code, signal) => {
      clearTimeout(killer);
      if (code === null && signal === 'SIGKILL') lines.push(`(killed) stderr: ${stderr}`);
      resolve({ code, signal, lines });
    });
  });
}

describe('stopOnSignals', { timeout: 60_000 }, () => {
  it.runIf(process.platform !== 'win32')('SIGTERM stops the runtime (queued sends delivered, instance stopped) and exits 0', async () => {
    const result = await child(['graceful'], (line, proc) => {
      if (line === 'ready') proc.kill('SIGTERM');
    });
    expect(result.code).toBe(0);
    expect([...result.lines].sort()).toEqual(['delivered 1', 'delivered 2', 'delivered 3', 'ready', 'signal SIGTERM', 'stopped sig-1']);
    expect(result.lines[0]).toBe('ready');
    // The last send was still queued when the signal came (3 × 300 ms), and was delivered before the stop ended.
    expect(result.lines.indexOf('delivered 3')).toBeGreaterThan(result.lines.indexOf('signal SIGTERM'));
    expect(result.lines.at(-1)).toBe('stopped sig-1');
  });

  it.runIf(process.platform !== 'win32')('a second signal during a hung stop exits 1 at once', async () => {
    let signalled = 0;
    const result = await child(['hang'], (line, proc) => {
      if (line === 'ready') {
        proc.kill('SIGTERM');
        signalled = Date.now();
      }
      if (line === 'signal SIGTERM') setTimeout(() => proc.kill('SIGINT'), 200);
    });
    expect(result.code).toBe(1);
    expect(result.lines).toEqual(['ready', 'signal SIGTERM']); // the stop never finished
    expect(Date.now() - signalled).toBeLessThan(15_000); // not the 20 s of the hung disconnect
  });

  it.runIf(process.platform !== 'win32')('a stop past deadlineMs exits 1', async () => {
    const result = await child(['hang', '500'], (line, proc) => {
      if (line === 'ready') proc.kill('SIGINT');
    });
    expect(result.code).toBe(1);
    expect(result.lines).toEqual(['ready', 'signal SIGINT']);
  });

  it('with exit: false it only stops the runtime, once, and removes its handlers', async () => {
    const rt = await runtime();
    await connected(rt, 'inproc');
    const stopped: string[] = [];
    rt.on('instance:stopped', (e: { instanceId: string }) => stopped.push(e.instanceId));
    const before = process.listenerCount('SIGUSR2');
    const seen: string[] = [];
    const dispose = stopOnSignals(rt, { signals: ['SIGUSR2', 'SIGUSR2'], exit: false, onSignal: (s) => void seen.push(s) });
    expect(process.listenerCount('SIGUSR2')).toBe(before + 1);
    process.emit('SIGUSR2', 'SIGUSR2');
    expect(process.listenerCount('SIGUSR2')).toBe(before); // one shot
    expect(seen).toEqual(['SIGUSR2']);
    await waitFor(() => stopped.length === 1, 20_000);
    expect(stopped).toEqual(['inproc']);
    await expect(rt.status('inproc')).rejects.toMatchObject({ code: 'stopped' });
    dispose();
    dispose();
    expect(process.listenerCount('SIGUSR2')).toBe(before);

    // The disposer alone removes them.
    const other = stopOnSignals(rt, { signals: ['SIGUSR2'], exit: false });
    expect(process.listenerCount('SIGUSR2')).toBe(before + 1);
    other();
    expect(process.listenerCount('SIGUSR2')).toBe(before);
  });

  it('beforeStop runs while the runtime still delivers; rt.stop() waits for it, and goes on when it rejects', async () => {
    for (const outcome of ['resolves', 'rejects'] as const) {
      const rt = await runtime();
      await connected(rt, 'inproc');
      const stopped: string[] = [];
      rt.on('instance:stopped', (e: { instanceId: string }) => stopped.push(e.instanceId));
      let release: () => void = () => {};
      const order: string[] = [];
      stopOnSignals(rt, {
        signals: ['SIGUSR2'],
        exit: false,
        onSignal: () => void order.push('onSignal'),
        beforeStop: async () => {
          order.push('beforeStop');
          // The runtime still takes and delivers sends here: the drain a gateway does on SIGTERM.
          await rt.send('inproc', { text: 'during the drain' });
          order.push('sent');
          await new Promise<void>((resolve) => (release = resolve));
          if (outcome === 'rejects') throw new Error('drain failed');
        },
      });
      process.emit('SIGUSR2', 'SIGUSR2');
      await waitFor(() => order.includes('sent'), 20_000);
      expect(await rt.status('inproc')).toMatchObject({ status: 'connected' }); // not stopped while beforeStop runs
      expect(stopped).toEqual([]);
      release();
      await waitFor(() => stopped.length === 1, 20_000);
      expect(order, outcome).toEqual(['onSignal', 'beforeStop', 'sent']);
    }
  });

  it('validates its options, naming the field', async () => {
    const rt = await runtime();
    const bad: Array<[unknown, string]> = [
      [{ signals: [] }, 'signals'],
      [{ signals: ['SIGNOPE'] }, 'signals.0'],
      [{ signals: ['SIGTERM', 'SIGKILL'] }, 'signals.1'],
      [{ signals: 'SIGTERM' }, 'signals'],
      [{ deadlineMs: 0 }, 'deadlineMs'],
      [{ deadlineMs: 2 ** 31 }, 'deadlineMs'],
      [{ exit: 'yes' }, 'exit'],
      [{ onSignal: 'log' }, 'onSignal'],
      [{ beforeStop: 1 }, 'beforeStop'],
      [{ bogus: 1 }, 'bogus'],
    ];
    const listeners = process.listenerCount('SIGTERM');
    for (const [options, field] of bad) {
      let err: unknown;
      try {
        stopOnSignals(rt, options as never);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(options)).toBeInstanceOf(InvalidConfigError);
      expect((err as InvalidConfigError).issues.map((i) => i.path)).toContain(field);
    }
    expect(() => stopOnSignals(null as never)).toThrow(InvalidConfigError);
    expect(process.listenerCount('SIGTERM')).toBe(listeners);
  });
});
