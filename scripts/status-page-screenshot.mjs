// Makes docs/status-page.png: a runtime with a few loopback instances (traffic, a queue under
// pressure, restarts, one in error), its ops status page in headless chromium, a screenshot after
// about a minute of traffic. Run after `npm run build`: node scripts/status-page-screenshot.mjs [out.png] [seconds]
import { execFileSync } from 'node:child_process';
import { pino } from 'pino';
import { chromium } from 'playwright-core';
import { Runtime } from '../dist/src/index.js';
import { serveOps } from '../dist/src/ops.js';

const out = process.argv[2] ?? 'docs/status-page.png';
const seconds = Number(process.argv[3] ?? 75);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const rt = await Runtime.start({ logger: pino({ level: 'silent' }), restart: { recoverAfterMs: Infinity }, sendWindow: 16, onMessage: () => undefined });
const start = (id, settings = {}, extra = {}) =>
  rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback', settings, ...extra }, settings.fatalConnect ? undefined : { waitFor: 'connected', timeoutMs: 20_000 });
await Promise.all([
  start('support-bot', { inbound: { ratePerSec: 30 } }),
  start('sales-bot'),
  start('eu-relay', { latencyMs: 400 }, { queueCapacity: 200 }),
  start('alerts', { faults: true }),
  start('billing-bot', { fatalConnect: true }),
]);
const ops = await serveOps(rt, { pageIntervalMs: 1000 });
const browser = await chromium.launch({ executablePath: execFileSync('which', ['chromium'], { encoding: 'utf8' }).trim(), args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1200, height: 760 }, deviceScaleFactor: 1 });
await page.goto(`${ops.url}/`);

const send = (id, n) => Promise.allSettled(Array.from({ length: n }, (_, i) => rt.send(id, { text: `m${i}` })));
for (let s = 0; s < seconds; s++) {
  const wave = 20 + Math.round(15 * Math.sin(s / 8));
  void send('sales-bot', wave);
  void send('eu-relay', s >= seconds - 8 ? 60 : 10);
  void send('alerts', 3);
  if (s === Math.round(seconds / 3) || s === Math.round((2 * seconds) / 3)) void rt.send('alerts', { fault: 'crash' }).catch(() => undefined);
  await sleep(1000);
}
await page.screenshot({ path: out, fullPage: true });
console.log(`saved ${out}`);
await browser.close();
await ops.close();
await rt.stop();
