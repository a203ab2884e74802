/**
 * The live status page of the ops endpoint ({@link serveOps} serves it at `/` to browsers) and
 * its feed, `/events`: server-sent events carrying a JSON {@link StatusFrame} every
 * `pageIntervalMs`. One HTML file, no build step and no library: the page below is a template
 * string, its script and style are inline (allowed by their hashes in the page's
 * Content-Security-Policy, nothing else is), and it puts every value into the DOM as text.
 *
 * Internal to `threadvisor/ops`: nothing here is exported by a package entry.
 *
 * @packageDocumentation
 */
import { createHash, randomBytes } from 'node:crypto';
import { INSTANCE_STATUSES } from './instance/state-machine.js';
import { PRESSURE_LEVELS } from './runtime/outbound/types.js';
import type { Runtime, RuntimeMode } from './runtime/runtime.js';

/** One instance in a {@link StatusFrame}. */
export interface StatusInstance {
  readonly id: string;
  readonly name: string;
  readonly channelType: string;
  readonly status: string;
  /** Outbound messages delivered per second since the previous frame; null in the first frame. */
  readonly msgsPerSec: number | null;
  /** Queued sends (`senderQueueDepth`). */
  readonly queueDepth: number;
  /** Sends handed to the worker, not yet acknowledged. */
  readonly inFlight: number;
  readonly pressure: string;
  readonly restartCount: number;
  /** The health snapshot's `lastError` (credential-free), cut to {@link MAX_ERROR_CHARS}. */
  readonly lastError: string | null;
}

/** What `/events` sends, as JSON, every `pageIntervalMs`. */
export interface StatusFrame {
  /** When it was sampled, ms epoch. */
  readonly at: number;
  readonly intervalMs: number;
  /** `rt.state`. */
  readonly runtime: string;
  readonly instances: readonly StatusInstance[];
  readonly totals: {
    readonly instances: number;
    /** How many instances are in each status. */
    readonly byStatus: Readonly<Record<string, number>>;
    /** Outbound deliveries plus inbound messages handed to `onMessage`, per second; null in the first frame. */
    readonly msgsPerSec: number | null;
    readonly outboundPerSec: number | null;
    /** From `rt.stats().inboundDelivered` (the runtime counts inbound messages as a whole, not per instance). */
    readonly inboundPerSec: number | null;
    readonly queueDepth: number;
    /** The sum of the instances' `restartCount`. */
    readonly restarts: number;
    /** Restarts since the previous frame (of the instances in both). */
    readonly newRestarts: number;
  };
}

/** A `lastError` longer than this is cut (a frame stays small whatever a channel throws). */
export const MAX_ERROR_CHARS = 500;
/** A client with this much of its stream still unsent skips frames until it catches up. */
export const MAX_PENDING_BYTES = 256 * 1024;
/** A client that could take no frame for this long is disconnected (its browser reconnects). */
export const STALL_LIMIT_MS = 30_000;
/** How long a page's stream key stays valid without a stream open on it. */
export const STREAM_KEY_TTL_MS = 10 * 60_000;
/** At most this many stream keys are kept (the oldest unused go first). */
export const MAX_STREAM_KEYS = 1_000;

/** The part of a `ServerResponse` an `/events` client is written through. */
export interface EventSink {
  readonly writableLength: number;
  write(chunk: string): boolean;
  destroy(): void;
  once(event: 'close', listener: () => void): unknown;
}

interface Client {
  readonly sink: EventSink;
  /** When it first had to skip a frame, since its last accepted one. */
  stalledSince: number | undefined;
  dropped: number;
}

const rate = (delta: number, ms: number): number => Math.round((delta / ms) * 1000 * 100) / 100;

/**
 * Samples the runtime for the `/events` clients: one timer, running only while a client is
 * connected, one JSON frame shared by all of them. A client whose socket has more than
 * {@link MAX_PENDING_BYTES} unsent skips frames (each frame is the whole state, so nothing is
 * lost but resolution), and one that stays stalled for {@link STALL_LIMIT_MS} is disconnected:
 * a slow reader costs a bounded amount of memory.
 */
export class StatusFeed {
  readonly #rt: Runtime<RuntimeMode>;
  readonly #intervalMs: number;
  readonly #clients = new Set<Client>();
  #timer: NodeJS.Timeout | undefined;
  #sampling = false;
  #closed = false;
  /** The last frame's text (an SSE event), sent at once to a client joining between frames. */
  #last: string | undefined;
  #prev: { at: number; inbound: number; byId: Map<string, { delivered: number; restarts: number }> } | undefined;

  constructor(rt: Runtime<RuntimeMode>, intervalMs: number) {
    this.#rt = rt;
    this.#intervalMs = intervalMs;
  }

  /** Connected clients. */
  get clients(): number {
    return this.#clients.size;
  }

  /** Frames skipped for slow clients so far (of those still connected). */
  get dropped(): number {
    let n = 0;
    for (const c of this.#clients) n += c.dropped;
    return n;
  }

  /** Adds a client whose response headers are written; it leaves when its sink closes. */
  attach(sink: EventSink): void {
    if (this.#closed) {
      sink.destroy();
      return;
    }
    const client: Client = { sink, stalledSince: undefined, dropped: 0 };
    this.#clients.add(client);
    sink.once('close', () => {
      this.#clients.delete(client);
      if (this.#clients.size === 0) this.#stop();
    });
    sink.write(`retry: ${Math.max(1_000, this.#intervalMs)}\n\n`);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => void this.#tick(), this.#intervalMs);
      void this.#tick();
    } else if (this.#last !== undefined) {
      this.#send(client, this.#last, Date.now());
    }
  }

  /** Disconnects every client and stops sampling; later clients are turned away. */
  close(): void {
    this.#closed = true;
    this.#stop();
    for (const c of this.#clients) c.sink.destroy();
    this.#clients.clear();
  }

  /** One frame of the runtime now (rates against the previous sample, if any). */
  async sample(): Promise<StatusFrame> {
    const rt = this.#rt;
    const health = await rt.listHealth();
    const at = Date.now();
    const inbound = typeof rt.stats === 'function' ? rt.stats().inboundDelivered : 0;
    const prev = this.#prev;
    const ms = prev === undefined ? 0 : Math.max(1, at - prev.at);
    const byId = new Map<string, { delivered: number; restarts: number }>();
    const byStatus: Record<string, number> = {};
    let outbound = 0;
    let queueDepth = 0;
    let restarts = 0;
    let newRestarts = 0;
    const instances = health
      .map((h): StatusInstance => {
        const delivered = h.delivery.delivered;
        byId.set(h.instanceId, { delivered, restarts: h.restartCount });
        byStatus[h.status] = (byStatus[h.status] ?? 0) + 1;
        queueDepth += h.senderQueueDepth;
        restarts += h.restartCount;
        let msgsPerSec: number | null = null;
        const before = prev?.byId.get(h.instanceId);
        if (prev !== undefined) {
          // A restarted instance may have a new queue, whose counters start from zero again.
          const delta = before === undefined || delivered < before.delivered ? delivered : delivered - before.delivered;
          outbound += delta;
          msgsPerSec = rate(delta, ms);
          if (before !== undefined) newRestarts += Math.max(0, h.restartCount - before.restarts);
        }
        const lastError = h.lastError === null || h.lastError.length <= MAX_ERROR_CHARS ? h.lastError : `${h.lastError.slice(0, MAX_ERROR_CHARS - 1)}…`;
        return {
          id: h.instanceId,
          name: h.name,
          channelType: h.channelType,
          status: h.status,
          msgsPerSec,
          queueDepth: h.senderQueueDepth,
          inFlight: h.inFlight,
          pressure: h.pressure,
          restartCount: h.restartCount,
          lastError,
        };
      })
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.#prev = { at, inbound, byId };
    const outboundPerSec = prev === undefined ? null : rate(outbound, ms);
    const inboundPerSec = prev === undefined ? null : rate(Math.max(0, inbound - prev.inbound), ms);
    return {
      at,
      intervalMs: this.#intervalMs,
      runtime: rt.state,
      instances,
      totals: {
        instances: instances.length,
        byStatus,
        msgsPerSec: outboundPerSec === null || inboundPerSec === null ? null : Math.round((outboundPerSec + inboundPerSec) * 100) / 100,
        outboundPerSec,
        inboundPerSec,
        queueDepth,
        restarts,
        newRestarts,
      },
    };
  }

  async #tick(): Promise<void> {
    if (this.#sampling || this.#clients.size === 0) return;
    this.#sampling = true;
    let frame: StatusFrame;
    try {
      frame = await this.sample();
    } catch {
      return; // the runtime stopping under the sample: the next tick tries again
    } finally {
      this.#sampling = false;
    }
    if (this.#clients.size === 0) return;
    const text = `data: ${JSON.stringify(frame)}\n\n`;
    this.#last = text;
    const now = Date.now();
    for (const c of this.#clients) this.#send(c, text, now);
  }

  #send(c: Client, text: string, now: number): void {
    if (c.sink.writableLength > MAX_PENDING_BYTES) {
      c.dropped++;
      c.stalledSince ??= now;
      if (now - c.stalledSince >= STALL_LIMIT_MS) {
        this.#clients.delete(c);
        c.sink.destroy();
        if (this.#clients.size === 0) this.#stop();
      }
      return;
    }
    c.stalledSince = undefined;
    c.sink.write(text);
  }

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#last = undefined;
    this.#prev = undefined;
  }
}

/** SHA-256 of a string, hex. */
const sha256hex = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/**
 * Stream keys: what a page served to an authorized request uses to open `/events`, in place of
 * the ops token. Random (256 bits), good for `/events` only, valid while a stream is open on it
 * and for {@link STREAM_KEY_TTL_MS} after (from its minting, or its last stream's end); at most
 * {@link MAX_STREAM_KEYS} are kept. Only their SHA-256 is held, and a presented key is looked up
 * by its hash, so the lookup's timing says nothing about a valid key.
 */
export class StreamKeys {
  readonly #keys = new Map<string, { expiresAt: number; open: number }>();

  /** A new key. */
  mint(now = Date.now()): string {
    this.#sweep(now);
    while (this.#keys.size >= MAX_STREAM_KEYS) {
      // Map order is insertion order: the oldest key not in use goes first (else the oldest).
      let victim: string | undefined;
      for (const [hash, k] of this.#keys) {
        if (k.open === 0) {
          victim = hash;
          break;
        }
      }
      this.#keys.delete(victim ?? (this.#keys.keys().next().value as string));
    }
    const key = randomBytes(32).toString('base64url');
    this.#keys.set(sha256hex(key), { expiresAt: now + STREAM_KEY_TTL_MS, open: 0 });
    return key;
  }

  /** When `key` is valid: marks a stream open on it and returns what to call when it closes. */
  open(key: string, now = Date.now()): (() => void) | undefined {
    const hash = sha256hex(key);
    const k = this.#keys.get(hash);
    if (k === undefined || (k.open === 0 && k.expiresAt <= now)) return undefined;
    k.open++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      k.open--;
      k.expiresAt = Date.now() + STREAM_KEY_TTL_MS;
    };
  }

  /** How many keys are held. */
  get size(): number {
    return this.#keys.size;
  }

  #sweep(now: number): void {
    for (const [hash, k] of this.#keys) if (k.open === 0 && k.expiresAt <= now) this.#keys.delete(hash);
  }
}

const STYLE = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5b6474; --bg: #f6f7f9; --card: #fff; --line: #dde1e7;
  --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --idle: #6e7781; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --card: #161b22; --line: #30363d;
  --ok: #3fb950; --warn: #d29922; --bad: #f85149; --idle: #8b949e; --accent: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; margin-bottom: 16px; }
h1 { font-size: 20px; margin: 0; }
#conn { font-size: 12px; padding: 2px 8px; border-radius: 10px; border: 1px solid var(--line); color: var(--muted); }
#conn.live { color: var(--ok); border-color: var(--ok); }
#conn.down { color: var(--bad); border-color: var(--bad); }
#updated { color: var(--muted); font-size: 12px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 120px; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 22px; font-variant-numeric: tabular-nums; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin-bottom: 16px; }
h2 { font-size: 14px; margin: 0 0 8px; color: var(--muted); font-weight: 600; }
#chart { width: 100%; height: 160px; display: block; }
#chart .grid { stroke: var(--line); stroke-width: 1; }
#chart .rate { fill: none; stroke: var(--accent); stroke-width: 2; }
#chart .area { fill: var(--accent); opacity: 0.12; }
#chart .restart { fill: var(--bad); }
#chart text { fill: var(--muted); font-size: 11px; }
.legend { display: flex; gap: 16px; font-size: 12px; color: var(--muted); margin-top: 4px; }
.legend .sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
.legend .sw.rate { background: var(--accent); } .legend .sw.restart { background: var(--bad); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; }
td.error { color: var(--bad); max-width: 420px; overflow-wrap: anywhere; font-size: 12px; }
td .sub { color: var(--muted); font-size: 12px; }
.status { font-weight: 600; }
.st-connected { color: var(--ok); }
.st-starting, .st-connecting, .st-disconnected { color: var(--warn); }
.st-error { color: var(--bad); }
.p-warn { color: var(--warn); } .p-degraded, .p-shed { color: var(--bad); font-weight: 600; }
#empty { color: var(--muted); padding: 8px; }
`;

/*
 * The page's script. Plain ES2017 in a string: no backquote and no dollar-brace in it. Every value
 * from a frame reaches the DOM through textContent or setAttribute, never as markup.
 */
const SCRIPT = `
(function () {
  'use strict';
  var WINDOW_MS = 5 * 60 * 1000;
  var STATUSES = ${JSON.stringify(INSTANCE_STATUSES)};
  var PRESSURES = ${JSON.stringify(PRESSURE_LEVELS)};
  var SVG = 'http://www.w3.org/2000/svg';
  var keyMeta = document.querySelector('meta[name="threadvisor-stream-key"]');
  var streamKey = keyMeta ? keyMeta.getAttribute('content') : '';
  var points = [];
  var retryMs = 1000;

  function $(id) { return document.getElementById(id); }
  function text(el, value) { el.textContent = value === null || value === undefined ? '' : String(value); return el; }
  function cell(tr, value, cls) { var td = document.createElement('td'); if (cls) td.className = cls; text(td, value); tr.appendChild(td); return td; }
  function fmtRate(v) { return v === null || v === undefined ? '\\u2013' : (v >= 100 ? v.toFixed(0) : v.toFixed(1)); }
  function setConn(state, label) { var el = $('conn'); el.className = state; text(el, label); }

  function renderTable(frame) {
    var body = document.createElement('tbody');
    body.id = 'rows';
    frame.instances.forEach(function (i) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-id', i.id);
      var idCell = cell(tr, i.id, 'id');
      if (i.name !== i.id) { var sub = document.createElement('div'); sub.className = 'sub'; text(sub, i.name); idCell.appendChild(sub); }
      cell(tr, i.channelType, 'type');
      cell(tr, i.status, 'status' + (STATUSES.indexOf(i.status) >= 0 ? ' st-' + i.status : ''));
      cell(tr, fmtRate(i.msgsPerSec), 'num rate');
      var q = cell(tr, i.queueDepth, 'num queue');
      if (i.inFlight > 0) { var f = document.createElement('div'); f.className = 'sub'; text(f, i.inFlight + ' in flight'); q.appendChild(f); }
      cell(tr, i.pressure, 'pressure' + (PRESSURES.indexOf(i.pressure) >= 0 ? ' p-' + i.pressure : ''));
      cell(tr, i.restartCount, 'num restarts');
      var err = cell(tr, i.lastError, 'error');
      if (i.lastError) err.setAttribute('title', i.lastError);
      body.appendChild(tr);
    });
    $('rows').replaceWith(body);
    $('empty').hidden = frame.instances.length > 0;
  }

  function renderTotals(frame) {
    var t = frame.totals;
    text($('t-instances'), t.instances);
    text($('t-connected'), t.byStatus.connected || 0);
    text($('t-error'), t.byStatus.error || 0);
    text($('t-rate'), fmtRate(t.msgsPerSec));
    text($('t-queue'), t.queueDepth);
    text($('t-restarts'), t.restarts);
    text($('runtime'), 'runtime ' + frame.runtime);
    text($('updated'), 'updated ' + new Date(frame.at).toLocaleTimeString());
  }

  function el(name, attrs) { var e = document.createElementNS(SVG, name); for (var k in attrs) e.setAttribute(k, String(attrs[k])); return e; }

  function renderChart(now) {
    var svg = $('chart');
    var W = Math.max(300, Math.round(svg.getBoundingClientRect().width) || 600), H = 160, L = 44, R = 8, T = 10, B = 20;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    var maxRate = 1, maxRestarts = 1;
    points.forEach(function (p) { if (p.rate > maxRate) maxRate = p.rate; if (p.restarts > maxRestarts) maxRestarts = p.restarts; });
    var x = function (at) { return L + (W - L - R) * (1 - (now - at) / WINDOW_MS); };
    var y = function (v) { return T + (H - T - B) * (1 - v / maxRate); };
    [0, 0.5, 1].forEach(function (f) {
      var yy = T + (H - T - B) * f;
      svg.appendChild(el('line', { x1: L, x2: W - R, y1: yy, y2: yy, 'class': 'grid' }));
      svg.appendChild(text(el('text', { x: L - 4, y: yy + 4, 'text-anchor': 'end' }), fmtRate(maxRate * (1 - f))));
    });
    ['-5 min', '-2.5 min', 'now'].forEach(function (label, i) {
      svg.appendChild(text(el('text', { x: L + (W - L - R) * i / 2, y: H - 4, 'text-anchor': i === 0 ? 'start' : i === 1 ? 'middle' : 'end' }), label));
    });
    var barW = Math.max(2, (W - L - R) * (points.length > 1 ? (points[points.length - 1].at - points[0].at) / (points.length - 1) : 1000) / WINDOW_MS * 0.8);
    points.forEach(function (p) {
      if (p.restarts > 0) {
        var h = (H - T - B) * 0.5 * p.restarts / maxRestarts;
        svg.appendChild(el('rect', { x: x(p.at) - barW / 2, y: H - B - h, width: barW, height: h, 'class': 'restart' }));
      }
    });
    var line = points.filter(function (p) { return p.rate !== null; }).map(function (p) { return x(p.at).toFixed(1) + ',' + y(p.rate).toFixed(1); });
    if (line.length > 1) {
      var first = line[0].split(','), last = line[line.length - 1].split(',');
      svg.appendChild(el('polygon', { points: first[0] + ',' + (H - B) + ' ' + line.join(' ') + ' ' + last[0] + ',' + (H - B), 'class': 'area' }));
      svg.appendChild(el('polyline', { points: line.join(' '), 'class': 'rate' }));
    }
    var total = 0; points.forEach(function (p) { total += p.restarts; });
    text($('l-restarts'), total);
  }

  function onFrame(frame) {
    points.push({ at: frame.at, rate: frame.totals.msgsPerSec, restarts: frame.totals.newRestarts });
    while (points.length > 0 && points[0].at < frame.at - WINDOW_MS) points.shift();
    renderTotals(frame);
    renderTable(frame);
    renderChart(frame.at);
    document.body.setAttribute('data-frames', String((Number(document.body.getAttribute('data-frames')) || 0) + 1));
  }

  function onEvent(block) {
    var data = [];
    block.split(/\\r?\\n/).forEach(function (line) {
      if (line.indexOf('data:') === 0) data.push(line.slice(line.charAt(5) === ' ' ? 6 : 5));
      else if (line.indexOf('retry:') === 0) { var r = Number(line.slice(6)); if (r > 0) retryMs = r; }
    });
    if (data.length > 0) onFrame(JSON.parse(data.join('\\n')));
  }

  function connect() {
    var headers = { Accept: 'text/event-stream' };
    if (streamKey) headers.Authorization = 'Bearer ' + streamKey;
    fetch('events', { headers: headers, cache: 'no-store', credentials: 'omit' }).then(function (res) {
      if (res.status === 401) { setConn('down', 'unauthorized: reload the page'); return; }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      setConn('live', 'live');
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var buffer = '';
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) throw new Error('stream ended');
          buffer += decoder.decode(r.value, { stream: true }).replace(/\\r\\n/g, '\\n');
          var end;
          while ((end = buffer.indexOf('\\n\\n')) !== -1) { onEvent(buffer.slice(0, end)); buffer = buffer.slice(end + 2); }
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      setConn('down', 'disconnected, retrying');
      setTimeout(connect, retryMs);
    });
  }

  connect();
})();
`;

const hash = (s: string): string => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

/** The page's Content-Security-Policy: its own inline script and style (by hash), `fetch` to itself, nothing else. */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The status page. `streamKey`: the key the page presents to `/events` (only when the ops server
 * has a token); base64url, so it needs no escaping in the attribute.
 */
export function statusPageHtml(streamKey?: string): string {
  if (streamKey !== undefined && !/^[A-Za-z0-9_-]+$/.test(streamKey)) throw new Error('a stream key is base64url');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<meta name="threadvisor-stream-key" content="${streamKey ?? ''}">
<title>threadvisor status</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>threadvisor status</h1><span id="conn">connecting</span><span id="runtime"></span><span id="updated"></span></header>
<div class="cards">
  <div class="card"><div class="k">instances</div><div class="v" id="t-instances">&ndash;</div></div>
  <div class="card"><div class="k">connected</div><div class="v" id="t-connected">&ndash;</div></div>
  <div class="card"><div class="k">in error</div><div class="v" id="t-error">&ndash;</div></div>
  <div class="card"><div class="k">msgs/s (out + in)</div><div class="v" id="t-rate">&ndash;</div></div>
  <div class="card"><div class="k">queued</div><div class="v" id="t-queue">&ndash;</div></div>
  <div class="card"><div class="k">restarts</div><div class="v" id="t-restarts">&ndash;</div></div>
</div>
<section>
  <h2>Last 5 minutes</h2>
  <svg id="chart" role="img" aria-label="total messages per second and restarts over the last five minutes"></svg>
  <div class="legend"><span><span class="sw rate"></span>msgs/s (out + in)</span><span><span class="sw restart"></span>restarts (<span id="l-restarts">0</span> in the window)</span></div>
</section>
<section>
  <h2>Instances</h2>
  <table>
    <thead><tr><th>instance</th><th>channel</th><th>status</th><th class="num" title="outbound messages delivered per second">sent/s</th><th class="num">queue</th><th>pressure</th><th class="num">restarts</th><th>last error</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>
  <div id="empty">no instance</div>
</section>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
