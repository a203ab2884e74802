/** Runs every bench script in its own process (so one's threads do not skew another's). */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const scripts = ['lifecycle', 'channel-import', 'send', 'tail', 'alloc-profile', 'outbound', 'pool', 'siblings', 'manager', 'packing', 'cluster', 'durable', 'metrics'];
let failed = 0;
for (const name of scripts) {
  const file = fileURLToPath(new URL(`./${name}.js`, import.meta.url));
  const r = spawnSync(process.execPath, ['--expose-gc', file, ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exitCode = failed ? 1 : 0;
