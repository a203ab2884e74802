/**
 * Rendering for the gateway demo: the live table (redrawn in place on a TTY) and the periodic
 * log line (when the output is not a terminal). Pure functions of a {@link Frame}.
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
  lastError: string | null;
}

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

/** The table, as text to write after cursor-home + clear (ANSI colours when `colour`). */
export function renderTable(f: Frame, colour: boolean, columns = 120): string {
  const c = (code: string, text: string) => (colour ? `${code}${text}${ANSI.reset}` : text);
  const head = [
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
  const fixed = head.length - 'last error'.length;
  const errWidth = Math.max(20, columns - fixed - 1);
  const lines = [
    c(ANSI.bold, `${f.header}   t=${secs(f.elapsedMs)} / ${secs(f.durationMs)}`),
    '',
    c(ANSI.bold, head),
  ];
  for (const r of f.rows) {
    lines.push(
      [
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
      ].join(' '),
    );
  }
  const a = f.agents;
  const s = f.sends;
  lines.push(
    '',
    `agents   ${a.resident} resident · ${a.saving} saving · ${a.hibernated} hibernated · ${a.started} activations (${a.thaws} thawed from disk) · ${a.hibernations} hibernations`,
    `sends    ${s.accepted} accepted · ${s.delivered} delivered · ${s.rejected} rejected · ${s.pending} pending · ${s.refused} refused      inbound ${f.inbound}`,
    '',
    c(ANSI.bold, 'events'),
    ...f.events.map((e) => `  ${e}`),
  );
  return lines.join('\n');
}

/** Cursor-home + clear, then the table: a redraw in place. */
export function redraw(f: Frame, columns: number): string {
  return `${ANSI.home}${ANSI.clear}${renderTable(f, true, columns)}\n`;
}

/** One compact line for non-TTY output. */
export function renderLogLine(f: Frame): string {
  const sumIn = f.rows.reduce((n, r) => n + r.inPerSec, 0);
  const sumOut = f.rows.reduce((n, r) => n + r.outPerSec, 0);
  const notConnected = f.rows.filter((r) => r.status !== 'connected').map((r) => `${r.name}=${r.status}`);
  const queued = f.rows.reduce((n, r) => n + r.depth + r.inFlight, 0);
  const restarts = f.rows.reduce((n, r) => n + r.restarts, 0);
  return [
    `[${secs(f.elapsedMs).padStart(7)}]`,
    `in ${sumIn.toFixed(0)}/s out ${sumOut.toFixed(0)}/s`,
    `queued ${queued}`,
    `restarts ${restarts}`,
    `agents ${f.agents.resident} resident/${f.agents.saving} saving/${f.agents.hibernated} hibernated`,
    `sends ${f.sends.accepted} accepted/${f.sends.delivered} delivered/${f.sends.rejected} rejected/${f.sends.pending} pending/${f.sends.refused} refused`,
    notConnected.length > 0 ? `not connected: ${notConnected.join(' ')}` : 'all connected',
  ].join(' | ');
}
