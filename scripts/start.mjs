// `npm start`: runs the server (src/server.ts) with Bun. Bun is a devDependency, so after a production install
// (`npm ci --omit=dev`) it is there only if installed on the machine; without it, say what to do instead of npm's
// "bun: not found". Signals are passed on, so SIGTERM still drains the server, and its exit code is ours.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const exe = process.platform === 'win32' ? 'bun.exe' : 'bun';

/** node_modules/.bin first (what `npm ci` installed), then PATH (npm run puts node_modules/.bin there too). */
function findBun() {
  const dirs = [join(root, 'node_modules', '.bin'), ...(process.env.PATH ?? '').split(delimiter).filter(Boolean)];
  for (const dir of dirs) {
    const candidate = join(dir, exe);
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

const bun = findBun();
if (bun === null) {
  console.error(
    [
      'lava-webhooks: npm start runs the server with Bun, and no bun was found (neither in node_modules/.bin nor on PATH).',
      'Bun is a devDependency, so `npm ci --omit=dev` leaves it out. For production, either:',
      '  - install Bun on the machine (https://bun.sh), then `npm ci --omit=dev && npm start` (or `bun run src/server.ts`),',
      '  - or use the Docker image (Dockerfile: Bun with the production dependencies only),',
      '  - or run it with Deno: `deno task start`.',
    ].join('\n'),
  );
  process.exit(1);
}

const child = spawn(bun, ['run', join(root, 'src', 'server.ts'), ...process.argv.slice(2)], { stdio: 'inherit' });
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => child.kill(signal));
child.on('error', (error) => {
  console.error(`lava-webhooks: could not run ${bun}: ${error.message}`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  if (code !== null) process.exit(code);
  // Killed by a signal: end the same way, so whoever started npm sees what happened.
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
});
