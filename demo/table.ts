/**
 * Rendering for the gateway demo: the live table (redrawn in place on a TTY) and the periodic
 * log line (when the output is not a terminal). Pure functions of a {@link Frame}.
 *
 * Up to {@link MAX_ROWS} instances, the table has one row per instance. Beyond that (hundreds or
 * thousands of instances packed several per worker) it shows summary rows instead: counts by
 * status and pressure, one row per worker (or per worker size, when there are many workers) with
 * its instances, rates, totals and restarts, and then only the instances that need attention
 * (faulted, not connected, in error, under pressure, restarted), at most {@link ATTENTION_ROWS}.
 *
 * @packageDocumentation
 */

/** One instance's line of the table. */
export interface InstanceRow {
  name: string;
  /** The fault this instance receives, or `-` for an undisturbed sibling. */
  fault: string;
  status: string;
  inPerSec: number;
  outPerSec: number;
  /** Outbound queue depth (queued, including retries waiting out their backoff). */
  depth: number;
  /** Sends handed to the worker, not yet acknowledged. */
  inFlight: number;
  pressure: string;
  restarts: number;
  reconnectAttempt: number;
  /** Worker state: `up`, `restarting`, `down`. */
  worker: string;
  /** The worker's thread id, or null while the instance has none. */
  threadId: number | null;
  /** How many instances share that worker (1: a worker of its own; 0: none). */
  workerInstances: number;
  /** Messages in, and replies delivered, since the start. */
  inbound: number;
  delivered: number;
  lastError: string | null;
}

/** Up to this many instances, one table row each; beyond, summary rows (see the module doc). */
export const MAX_ROWS = 24;
/** At most this many instance rows under "needs attention" in the summary view. */
export const ATTENTION_ROWS = 8;
/** The summary view shows this many of the most recent events (about 40 lines in all). */
const SUMMARY_EVENTS = 8;
/** Up to this many workers, one summary row each; beyond, one row per worker size. */
const WORKER_ROWS = 8;

/** Everything one redraw shows. */
export interface Frame {
  elapsedMs: number;
  durationMs: number;
  header: string;
  rows: InstanceRow[];
  agents: { resident: number; saving: number; hibernated: number; started: number; thaws: number; hibernations: number };
  /** `refused`: rejected at admission (`not_running`, `queue_full`): never accepted. */
  sends: { accepted: number; delivered: number; rejected: number; refused: number; pending: number };
  inbound: number;
  /** The most recent event lines, oldest first. */
  events: string[];
}

const ANSI = { home: '\x1b[H', clear: '\x1b[2J', clearDown: '\x1b[J', bold: '\x1b[1m', dim: '\x1b[2m', red: '\x1b[31m', green: '\x1b[32m', yellow: '\x1b[33m', reset: '\x1b[0m' };

function cut(text: string, width: number): string {
  return text.length <= width ? text.padEnd(width) : `${text.slice(0, width - 1)}…`;
}

function statusColour(status: string): string {
  if (status === 'connected') return ANSI.green;
  if (status === 'error') return ANSI.red;
  return ANSI.yellow;
}

/** `t=12.3s` style elapsed time. */
export function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

type Paint = (code: string, text: string) => string;

const HEAD = [
  'instance'.padEnd(8),
  'fault'.padEnd(9),
  'status'.padEnd(12),
  'in/s'.padStart(6),
  'out/s'.padStart(6),
  'queue'.padStart(6),
  'infl'.padStart(5),
  'pressure'.padEnd(8),
  'rst'.padStart(3),
  'rcn'.padStart(3),
  'worker'.padEnd(10),
  'last error',
].join(' ');

function instanceLine(r: InstanceRow, c: Paint, errWidth: number): string {
  return [
    r.name.padEnd(8),
    c(r.fault === '-' ? ANSI.dim : ANSI.yellow, r.fault.padEnd(9)),
    c(statusColour(r.status), r.status.padEnd(12)),
    r.inPerSec.toFixed(0).padStart(6),
    r.outPerSec.toFixed(0).padStart(6),
    String(r.depth).padStart(6),
    String(r.inFlight).padStart(5),
    c(r.pressure === 'normal' ? '' : ANSI.red, r.pressure.padEnd(8)),
    String(r.restarts).padStart(3),
    String(r.reconnectAttempt).padStart(3),
    r.worker.padEnd(10),
    c(ANSI.dim, cut(r.lastError ?? '-', errWidth)),
  ].join(' ');
}

/** `a 3 · b 2` for the counts of `key` over the rows, the most frequent first. */
function countBy(rows: readonly InstanceRow[], key: (r: InstanceRow) => string): string {
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(key(r), (counts.get(key(r)) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n} ${k}`).join(' · ');
}

/** Why an instance is listed under "needs attention" (lower first), or undefined when it is not. */
function attention(r: InstanceRow): number | undefined {
  if (r.fault !== '-') return 0;
  if (r.status === 'error') return 1;
  if (r.status !== 'connected') return 2;
  if (r.lastError !== null || r.pressure !== 'normal') return 3;
  if (r.restarts > 0) return 4;
  return undefined;
}

/** The worker summary rows: one per worker (few workers), or one per worker size. */
function workerLines(rows: readonly InstanceRow[]): string[] {
  const byThread = new Map<number | null, InstanceRow[]>();
  for (const r of rows) {
    const list = byThread.get(r.threadId);
    if (list) list.push(r);
    else byThread.set(r.threadId, [r]);
  }
  const threads = [...byThread.keys()].filter((k): k is number => k !== null);
  // A bucket: the instances of one worker, or of every worker of one size; `null`: no worker now.
  const buckets: Array<{ label: string; workers: number; rows: InstanceRow[] }> = [];
  if (threads.length <= WORKER_ROWS) {
    for (const id of threads.sort((a, b) => a - b)) {
      const list = byThread.get(id) ?? [];
      buckets.push({ label: `#${id}`, workers: 1, rows: list });
    }
  } else {
    const bySize = new Map<number, { workers: number; rows: InstanceRow[] }>();
    for (const id of threads) {
      const list = byThread.get(id) ?? [];
      const b = bySize.get(list.length) ?? { workers: 0, rows: [] };
      b.workers++;
      b.rows.push(...list);
      bySize.set(list.length, b);
    }
    for (const [size, b] of [...bySize].sort((x, y) => y[0] - x[0])) buckets.push({ label: `${b.workers} × ${size}`, workers: b.workers, rows: b.rows });
  }
  const none = byThread.get(null);
  if (none) buckets.push({ label: 'none', workers: 0, rows: none });
  const head = ['worker'.padEnd(10), 'insts'.padStart(6), 'conn'.padStart(6), 'in/s'.padStart(7), 'out/s'.padStart(7), 'queue'.padStart(6), 'infl'.padStart(5), 'inbound'.padStart(9), 'delivered'.padStart(9), 'rst'.padStart(5)].join(' ');
  const sum = (list: InstanceRow[], pick: (r: InstanceRow) => number) => list.reduce((n, r) => n + pick(r), 0);
  return [
    head,
    ...buckets.map((b) =>
      [
        b.label.padEnd(10),
        String(b.rows.length).padStart(6),
        String(b.rows.filter((r) => r.status === 'connected').length).padStart(6),
        sum(b.rows, (r) => r.inPerSec).toFixed(0).padStart(7),
        sum(b.rows, (r) => r.outPerSec).toFixed(0).padStart(7),
        String(sum(b.rows, (r) => r.depth)).padStart(6),
        String(sum(b.rows, (r) => r.inFlight)).padStart(5),
        String(sum(b.rows, (r) => r.inbound)).padStart(9),
        String(sum(b.rows, (r) => r.delivered)).padStart(9),
        String(sum(b.rows, (r) => r.restarts)).padStart(5),
      ].join(' '),
    ),
  ];
}

/** The summary view's lines between the header and the totals (see the module doc). */
function summaryLines(f: Frame, c: Paint, errWidth: number): string[] {
  const threads = new Set(f.rows.flatMap((r) => (r.threadId === null ? [] : [r.threadId])));
  const flagged = f.rows
    .map((r, i) => ({ r, i, why: attention(r) }))
    .filter((x): x is { r: InstanceRow; i: number; why: number } => x.why !== undefined)
    .sort((a, b) => a.why - b.why || a.i - b.i);
  const shown = flagged.slice(0, ATTENTION_ROWS);
  const rest = flagged.slice(ATTENTION_ROWS).map((x) => x.r);
  const [workerHead = '', ...workerRows] = workerLines(f.rows);
  const lines = [
    `status   ${countBy(f.rows, (r) => r.status)}      pressure ${countBy(f.rows, (r) => r.pressure)}`,
    `workers  ${threads.size} threads for ${f.rows.length} instances · ${countBy(f.rows, (r) => (r.workerInstances === 0 ? 'without a worker' : r.workerInstances === 1 ? 'alone in a worker' : `in workers of ${r.workerInstances}`))}`,
    '',
    c(ANSI.bold, workerHead),
    ...workerRows,
    '',
    c(ANSI.bold, `needs attention: ${flagged.length} of ${f.rows.length} (faulted, not connected, in error, under pressure or restarted)`),
  ];
  if (shown.length > 0) lines.push(c(ANSI.bold, HEAD), ...shown.map((x) => instanceLine(x.r, c, errWidth)));
  if (rest.length > 0) {
    const what = countBy(rest, (r) => (r.status !== 'connected' ? r.status : r.restarts > 0 ? 'restarted, connected again' : 'connected, with an error or pressure'));
    lines.push(c(ANSI.dim, `… and ${rest.length} more: ${what}`));
  }
  return lines;
}

/**
 * The table, as text to write after cursor-home + clear (ANSI colours when `colour`): one row per
 * instance up to `maxRows` instances, the summary view beyond.
 */
export function renderTable(f: Frame, colour: boolean, columns = 120, maxRows = MAX_ROWS): string {
  const c: Paint = (code, text) => (colour && code !== '' ? `${code}${text}${ANSI.reset}` : text);
  const fixed = HEAD.length - 'last error'.length;
  const errWidth = Math.max(20, columns - fixed - 1);
  const lines = [c(ANSI.bold, `${f.header}   t=${secs(f.elapsedMs)} / ${secs(f.durationMs)}`), ''];
  const perInstance = f.rows.length <= maxRows;
  if (perInstance) lines.push(c(ANSI.bold, HEAD), ...f.rows.map((r) => instanceLine(r, c, errWidth)));
  else lines.push(...summaryLines(f, c, errWidth));
  const events = perInstance ? f.events : f.events.slice(-SUMMARY_EVENTS);
  const a = f.agents;
  const s = f.sends;
  lines.push(
    '',
    `agents   ${a.resident} resident · ${a.saving} saving · ${a.hibernated} hibernated · ${a.started} activations (${a.thaws} thawed from disk) · ${a.hibernations} hibernations`,
    `sends    ${s.accepted} accepted · ${s.delivered} delivered · ${s.rejected} rejected · ${s.pending} pending · ${s.refused} refused      inbound ${f.inbound}`,
  );
  if (events.length > 0) lines.push('', c(ANSI.bold, 'events'), ...events.map((e) => `  ${e}`));
  return lines.join('\n');
}

/** Cursor-home + clear, then the table: a redraw in place. */
export function redraw(f: Frame, columns: number): string {
  return `${ANSI.home}${ANSI.clear}${renderTable(f, true, columns)}\n`;
}

/** At most this many not-connected instances are named in a log line. */
const LOG_NAMES = 8;

/** One compact line for non-TTY output. */
export function renderLogLine(f: Frame): string {
  const sumIn = f.rows.reduce((n, r) => n + r.inPerSec, 0);
  const sumOut = f.rows.reduce((n, r) => n + r.outPerSec, 0);
  const notConnected = f.rows.filter((r) => r.status !== 'connected').map((r) => `${r.name}=${r.status}`);
  const queued = f.rows.reduce((n, r) => n + r.depth + r.inFlight, 0);
  const restarts = f.rows.reduce((n, r) => n + r.restarts, 0);
  const threads = new Set(f.rows.flatMap((r) => (r.threadId === null ? [] : [r.threadId])));
  const named = notConnected.slice(0, LOG_NAMES).join(' ') + (notConnected.length > LOG_NAMES ? ` … (${notConnected.length} in all)` : '');
  return [
    `[${secs(f.elapsedMs).padStart(7)}]`,
    `in ${sumIn.toFixed(0)}/s out ${sumOut.toFixed(0)}/s`,
    `queued ${queued}`,
    `restarts ${restarts}`,
    ...(threads.size < f.rows.length ? [`${threads.size} workers`] : []),
    `agents ${f.agents.resident} resident/${f.agents.saving} saving/${f.agents.hibernated} hibernated`,
    `sends ${f.sends.accepted} accepted/${f.sends.delivered} delivered/${f.sends.rejected} rejected/${f.sends.pending} pending/${f.sends.refused} refused`,
    notConnected.length > 0 ? `not connected: ${named}` : 'all connected',
  ].join(' | ');
}
