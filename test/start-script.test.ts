// `npm start` (scripts/start.mjs): runs the server with Bun when there is one, passes SIGTERM on so the server
// drains, and after a production install without Bun (`npm ci --omit=dev`: Bun is a devDependency) says what the
// supported production installs are instead of npm's "bun: not found".
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SECRET, sleep } from './helpers/lava.ts';
import { ROOT, binAvailable, freePort } from './helpers/server-process.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The node running this test (under Bun or Deno, the one on PATH). */
function nodePath(): string {
  const r = spawnSync('node', ['-p', 'process.execPath'], { encoding: 'utf8' });
  return r.stdout.trim();
}

describe('npm start', () => {
  test('package.json "start" execs the launcher (npm\'s shell would otherwise keep SIGTERM from the server)', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts.start, 'exec node scripts/start.mjs');
  });

  test('without Bun (a production install), it exits 1 and names the supported ways to run', () => {
    const root = mkdtempSync(join(tmpdir(), 'lava-start-'));
    dirs.push(root);
    mkdirSync(join(root, 'scripts'));
    copyFileSync(join(ROOT, 'scripts/start.mjs'), join(root, 'scripts/start.mjs'));
    // A PATH holding node and nothing else: no bun anywhere, as on a server with Node only.
    const bin = join(root, 'bin');
    mkdirSync(bin);
    symlinkSync(nodePath(), join(bin, 'node'));
    const r = spawnSync(join(bin, 'node'), [join(root, 'scripts/start.mjs')], {
      cwd: root,
      env: { PATH: bin, LAVA_WEBHOOK_SECRET: SECRET },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /npm start runs the server with Bun, and no bun was found/);
    assert.match(r.stderr, /npm ci --omit=dev/);
    assert.match(r.stderr, /https:\/\/bun\.sh/);
    assert.match(r.stderr, /Docker image/);
  });

  test('with Bun, npm start serves, and SIGTERM reaches the server, which drains and exits 0', {
    skip: binAvailable('bun') ? false : 'node_modules/.bin/bun is missing',
  }, async () => {
    const port = await freePort();
    const child = spawn('npm', ['start', '--silent'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        PORT: String(port),
        LAVA_WEBHOOK_HOST: '127.0.0.1',
        LAVA_WEBHOOK_SECRET: SECRET,
        LAVA_WEBHOOK_STORE: 'memory',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.on('data', (d) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d) => {
      out += d.toString();
    });
    const exited = new Promise<number | string>((r) => child.on('exit', (code, signal) => r(code ?? signal ?? -1)));
    try {
      let healthy = false;
      for (let i = 0; i < 200 && !healthy; i++) {
        healthy = (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null))?.status === 200;
        if (!healthy) await sleep(50);
      }
      assert.ok(healthy, out);
      child.kill('SIGTERM');
      const code = await exited;
      assert.ok(code === 0 || ('Deno' in globalThis && code === 'SIGTERM'), `exit ${code}\n${out}`);
      assert.match(out, /"msg":"shutting down"/);
      assert.match(out, /"msg":"closed"/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
