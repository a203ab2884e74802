/**
 * The gateway demo's command line: its flags, their defaults and bounds, and the usage text.
 * A bad flag prints the usage to stderr and exits 2; `--help` prints it to stdout and exits 0.
 *
 * @packageDocumentation
 */
import { parseArgs } from 'node:util';

/** Requests per second per token the simulator allows (getUpdates excepted) before it answers 429. */
export const SIM_RATE_LIMIT = 30;

/** The `--help` text. */
export const USAGE = `threadvisor gateway demo: instances on worker threads talking HTTP to a platform simulator,
rooms as keyed agents, faults injected on a schedule, and a summary that must show nothing lost.

usage: npm run demo -- [options]        (or: node dist/demo/gateway.js [options])

  --duration <s>       seconds to run after warm-up (default 30, at least 6)
  --instances <n>      instances (default 8, at least 2); min(5, n - 1) of them get
                       a fault, the rest are siblings; beyond 24 instances the table shows
                       summary rows and only the instances that need attention
  --per-worker <n>     instances per worker thread, placement.instancesPerWorker (default 1:
                       a worker each; at most 1000). Shared workers: the heap blow-up still
                       gets a worker of its own (its resourceLimits), the other faulted
                       instances stay in shared workers, one per worker as far as there are
                       workers. A crash is attributed to its instance, which alone restarts
                       in place. A hang ends the worker and restarts all of its instances
                       (restart kind group): those worker-mates, read from
                       health().worker.threadId before the fault, are expected casualties and
                       must only be restarted and connected again; all others, undisturbed
  --rooms <n>          rooms per instance (default 24; a quarter of them are hot)
  --rate <n>           inbound messages per second per instance (default 20)
  --loopback           in-memory loopback instances instead of HTTP against the simulator
                       (which allows ${SIM_RATE_LIMIT} requests per second per token, answering
                       429 + retry_after beyond)
  --ops-port <n>       port of the ops endpoint and its live status page, on 127.0.0.1
                       (default 0: a free port; the URL is printed at start)
  --json               print the summary as one JSON object on the last line of stdout;
                       everything else goes to stderr
  --log-level <level>  level of the library's pino logs on stderr: fatal, error, warn (default),
                       info, debug, trace, silent
  --help               this text

exit code: 0 when nothing was lost, no sibling was disturbed (expected casualties came back)
and every fault was detected (over HTTP also: no request over the limit, no 409).`;

/** The runtime's largest `placement.instancesPerWorker`. */
export const MAX_PER_WORKER = 1000;

/** The pino levels `--log-level` takes. */
export const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** The parsed flags. */
export interface Args {
  durationMs: number;
  instances: number;
  perWorker: number;
  rooms: number;
  rate: number;
  loopback: boolean;
  opsPort: number;
  json: boolean;
  logLevel: string;
}

/** Parses `process.argv`; exits 2 on a bad flag, 0 after `--help`. */
export function parseCli(): Args {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: 'string', default: '30' },
        instances: { type: 'string', default: '8' },
        'per-worker': { type: 'string', default: '1' },
        rooms: { type: 'string', default: '24' },
        rate: { type: 'string', default: '20' },
        loopback: { type: 'boolean', default: false },
        'ops-port': { type: 'string', default: '0' },
        json: { type: 'boolean', default: false },
        'log-level': { type: 'string', default: 'warn' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const num = (name: string, raw: string, min: number, integer: boolean, max = Infinity): number => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      const range = max === Infinity ? `>= ${min}` : `from ${min} to ${max}`;
      process.stderr.write(`--${name} must be ${integer ? 'an integer' : 'a number'} ${range}, got ${raw}\n\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  const logLevel = values['log-level'];
  if (!LEVELS.includes(logLevel)) {
    process.stderr.write(`--log-level must be one of ${LEVELS.join(', ')}\n`);
    process.exit(2);
  }
  return {
    durationMs: Math.round(num('duration', values.duration, 6, false) * 1000),
    instances: num('instances', values.instances, 2, true),
    perWorker: num('per-worker', values['per-worker'], 1, true, MAX_PER_WORKER),
    rooms: num('rooms', values.rooms, 1, true),
    rate: num('rate', values.rate, 1, false),
    loopback: values.loopback,
    opsPort: num('ops-port', values['ops-port'], 0, true, 65535),
    json: values.json,
    logLevel,
  };
}
