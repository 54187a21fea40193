// Replays the Dockerfile without a Docker engine: its build context (.dockerignore), COPY and RUN steps, ENV, USER,
// CMD, HEALTHCHECK and STOPSIGNAL, read from the Dockerfile text, in a clean temporary copy of the repository.
import assert from 'node:assert/strict';
import { type SpawnOptions, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { after, describe, test } from 'node:test';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, waitFor } from './helpers/lava.ts';
import { ROOT, binAvailable, freePort } from './helpers/server-process.ts';

// ---- Reading the Dockerfile ----

export interface Instruction {
  op: string;
  args: string;
}

/** Instructions in order: continuation lines joined, comments and blank lines dropped. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full === '') continue;
    const m = /^(\S+)\s+([\s\S]*)$/.exec(full);
    if (m) out.push({ op: (m[1] as string).toUpperCase(), args: (m[2] as string).trim() });
  }
  return out;
}

/** `["a", "b"]` → argv; shell form → `sh -c`, as Docker does. */
export function commandOf(args: string): string[] {
  return args.startsWith('[') ? (JSON.parse(args) as string[]) : ['/bin/sh', '-c', args];
}

/** `ENV A=1 B="two"` (and the legacy `ENV A 1`). */
export function parseEnvArgs(args: string): Record<string, string> {
  const env: Record<string, string> = {};
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const [name, ...rest] = args.split(/\s+/);
    env[name as string] = rest.join(' ');
    return env;
  }
  for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    const value = m[2] as string;
    env[m[1] as string] = value.startsWith('"') ? (JSON.parse(value) as string) : value;
  }
  return env;
}

/** VOLUME /a /b or VOLUME ["/a", "/b"]. */
export function volumePaths(args: string): string[] {
  return args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
}

/** HEALTHCHECK [--options] CMD <command> → its argv. */
export function healthcheckCommand(args: string): string[] {
  const m = /^(?:--\S+\s+)*CMD\s+([\s\S]+)$/.exec(args);
  assert.ok(m, `HEALTHCHECK without CMD: ${args}`);
  return commandOf(m[1] as string);
}

// ---- .dockerignore ----

function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*' && pattern[i + 1] === '*') {
      i++;
      if (pattern[i + 1] === '/') {
        i++;
        re += '(?:.*/)?';
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Docker's rules: patterns are relative to the context root, the last match wins, `!` re-includes. */
export function dockerignoreMatcher(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const p = posix.normalize((negate ? l.slice(1) : l).replace(/^\/+/, '')).replace(/\/$/, '');
      return { negate, re: globToRegExp(p) };
    });
  return (path) => {
    // A pattern that matches a directory excludes everything under it.
    const parts = path.split('/');
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const rule of rules) if (candidates.some((c) => rule.re.test(c))) excluded = !rule.negate;
    return excluded;
  };
}

// ---- The replay ----

const runtime = globalThis as { Bun?: unknown; Deno?: unknown };
const skip = !runtime.Bun
  ? 'replayed once, under bun test, to save CI time (it spawns its own processes, so one runtime is enough)'
  : !binAvailable('bun')
    ? 'node_modules/.bin/bun is missing (run npm ci)'
    : false;
if (skip) console.log(`[skip] Dockerfile replay: ${skip}`);

const dockerfileText = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const instructions = parseDockerfile(dockerfileText);
const all = (op: string) => instructions.filter((i) => i.op === op);
const one = (op: string) => {
  const found = all(op);
  assert.equal(found.length, 1, `expected one ${op} in the Dockerfile, found ${found.length}`);
  return (found[0] as Instruction).args;
};

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Whom the container's USER becomes here: nobody when we are root (and setpriv exists), else ourselves. */
function hostUser(): { uid: number; gid: number; wrap: string[]; note: string } {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  if (uid !== 0) return { uid, gid, wrap: [], note: `as the current non-root user (uid ${uid})` };
  for (const setpriv of ['/usr/bin/setpriv', '/bin/setpriv']) {
    if (existsSync(setpriv)) {
      return {
        uid: 65534,
        gid: 65534,
        wrap: [setpriv, '--reuid=65534', '--regid=65534', '--clear-groups', '--'],
        note: 'as nobody (uid 65534) through setpriv',
      };
    }
  }
  return { uid, gid, wrap: [], note: 'as root: setpriv is missing, so the non-root start is not reproduced' };
}

function run(argv: string[], options: SpawnOptions): Promise<{ code: number | string; output: string }> {
  return new Promise((res, rej) => {
    const child = spawn(argv[0] as string, argv.slice(1), { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (d) => (output += d));
    child.stderr?.on('data', (d) => (output += d));
    child.on('error', rej);
    child.on('exit', (code, signal) => res({ code: code ?? signal ?? -1, output }));
  });
}

describe('Dockerfile', () => {
  test('Dockerfile pins the bun base image to the bun devDependency and bakes in no secret', () => {
    const bunVersion = (
      JSON.parse(readFileSync(join(ROOT, 'node_modules/bun/package.json'), 'utf8')) as { version: string }
    ).version;
    assert.match(one('FROM'), new RegExp(`^oven/bun:${bunVersion.replace(/\./g, '\\.')}(-[a-z]+)?$`));
    const env = Object.assign({}, ...all('ENV').map((i) => parseEnvArgs(i.args))) as Record<string, string>;
    const args = all('ARG').map((i) => i.args);
    for (const name of ['LAVA_WEBHOOK_SECRET', 'DATABASE_URL']) {
      assert.ok(!(name in env), `${name} must not be baked into the image`);
      assert.ok(!args.some((a) => a.startsWith(name)), `${name} must not be a build argument`);
    }
    const user = one('USER');
    assert.ok(!['root', '0', '0:0'].includes(user), 'the image must not run as root');
    assert.equal(one('STOPSIGNAL'), 'SIGTERM');
    assert.match(healthcheckCommand(one('HEALTHCHECK')).join(' '), /\/healthz/);
    const volumes = all('VOLUME').flatMap((i) => volumePaths(i.args));
    assert.ok(env.LAVA_WEBHOOK_DB, 'LAVA_WEBHOOK_DB must point into the volume');
    assert.ok(
      volumes.includes(posix.dirname(env.LAVA_WEBHOOK_DB)),
      `LAVA_WEBHOOK_DB=${env.LAVA_WEBHOOK_DB} is not in a VOLUME`,
    );
    assert.deepEqual(commandOf(one('CMD')), ['bun', 'run', 'src/server.ts']);
  });

  test('.dockerignore keeps tests, benches, data, node_modules and .git out of the build context', () => {
    const ignored = dockerignoreMatcher(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
    for (const p of [
      'test/e2e.test.ts',
      'bench/run.ts',
      'data/lava-webhooks.sqlite',
      'node_modules/hono/package.json',
      'examples/node/server.ts',
      '.git/HEAD',
      'some/where/x.sqlite',
      'x.sqlite-wal',
      '.env',
    ]) {
      assert.ok(ignored(p), `${p} should be left out of the build context`);
    }
    for (const p of ['package.json', 'package-lock.json', 'src/server.ts', 'src/stores/sqlite-bun.ts']) {
      assert.ok(!ignored(p), `${p} is needed in the build context`);
    }
  });

  test('replay: install from the lockfile, start CMD as USER, /healthz, one signed delivery, HEALTHCHECK, SIGTERM', {
    skip,
    timeout: 180_000,
  }, async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'lava-docker-'));
    dirs.push(tmp);
    chmodSync(tmp, 0o755); // the non-root user must reach the files, as in an image
    const context = join(tmp, 'context');
    const rootfs = join(tmp, 'rootfs');

    // The build context: what is in the working tree (tracked or not, minus .gitignore), minus .dockerignore.
    const ignored = dockerignoreMatcher(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
    const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: ROOT })
      .toString()
      .split('\0')
      .filter((f) => f && existsSync(join(ROOT, f)) && !ignored(f));
    for (const f of files) {
      mkdirSync(dirname(join(context, f)), { recursive: true });
      cpSync(join(ROOT, f), join(context, f));
    }
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')));

    // `bun` on PATH is the pinned one from node_modules, as it is in the image.
    const binDir = join(tmp, 'bin');
    mkdirSync(binDir);
    symlinkSync(join(ROOT, 'node_modules/.bin/bun'), join(binDir, 'bun'));

    const user = hostUser();
    console.log(`[docker replay] USER ${one('USER')} is replayed ${user.note}`);
    const userName = one('USER').split(':')[0] as string;

    // Container paths (WORKDIR, VOLUME) live under rootfs here; the base image's own settings are mirrored.
    const containerDirs = [...all('WORKDIR').map((i) => i.args), ...all('VOLUME').flatMap((i) => volumePaths(i.args))];
    const toHost = (text: string) =>
      containerDirs.reduce(
        (t, d) =>
          t.replace(new RegExp(`(^|[\\s=:])${d.replace(/\//g, '\\/')}(?=/|\\s|$)`, 'g'), `$1${join(rootfs, d)}`),
        text,
      );
    const home = join(rootfs, 'home', userName);
    mkdirSync(home, { recursive: true });
    chownSync(home, user.uid, user.gid);
    const env: Record<string, string> = {
      PATH: `${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      HOME: home,
      BUN_RUNTIME_TRANSPILER_CACHE_PATH: '0', // set by the oven/bun image
    };
    let workdir = rootfs;
    for (const { op, args } of instructions) {
      if (op === 'WORKDIR') {
        workdir = join(rootfs, args);
        mkdirSync(workdir, { recursive: true });
      } else if (op === 'ENV') {
        for (const [k, v] of Object.entries(parseEnvArgs(args))) env[k] = toHost(v);
      } else if (op === 'COPY') {
        const parts = args.split(/\s+/).filter((p) => !p.startsWith('--'));
        const dest = parts.pop() as string;
        const target = dest.startsWith('/') ? join(rootfs, dest) : join(workdir, dest);
        for (const src of parts) {
          const from = join(context, src);
          assert.ok(existsSync(from), `COPY ${src}: not in the build context (check .dockerignore)`);
          const isDir = statSync(from).isDirectory();
          cpSync(from, dest.endsWith('/') && !isDir ? join(target, posix.basename(src)) : target, { recursive: true });
        }
      } else if (op === 'RUN') {
        // As in `docker build`: the build steps run as root (or as us), the container's user only at run time.
        const command = toHost(args).replace(
          new RegExp(`\\bchown\\s+${userName}(:${userName})?\\b`, 'g'),
          `chown ${user.uid}:${user.gid}`,
        );
        // The build keeps our HOME, so bun install can use the package cache the toolchain install filled.
        const r = await run(commandOf(command), { cwd: workdir, env: { ...env, HOME: process.env.HOME ?? tmp } });
        assert.equal(r.code, 0, `RUN ${args} failed:\n${r.output}`);
      }
    }
    // The install left dev dependencies out and resolved what the lockfile says.
    const app = workdir;
    assert.ok(existsSync(join(app, 'node_modules/hono/package.json')), 'hono was not installed');
    assert.ok(!existsSync(join(app, 'node_modules/typescript')), 'a dev dependency was installed');
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { version: string }>;
    };
    for (const name of ['hono', 'zod']) {
      const installed = (
        JSON.parse(readFileSync(join(app, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
      ).version;
      assert.equal(installed, lock.packages[`node_modules/${name}`]?.version, `${name} differs from package-lock.json`);
    }

    // `docker run -e LAVA_WEBHOOK_SECRET=… -p …`: the secret and the port come from outside.
    const port = await freePort();
    const runEnv = {
      ...env,
      LAVA_WEBHOOK_SECRET: SECRET,
      PORT: String(port),
      LAVA_WEBHOOK_HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
    };
    const cmd = commandOf(one('CMD'));
    const argv = [...user.wrap, ...cmd];
    const server = spawn(argv[0] as string, argv.slice(1), {
      cwd: app,
      env: runEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    server.stdout?.on('data', (d) => (output += d));
    server.stderr?.on('data', (d) => (output += d));
    const exited = new Promise<number | string>((res) =>
      server.on('exit', (code, signal) => res(code ?? signal ?? -1)),
    );
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor(
        async () => {
          try {
            return (await fetch(`${url}/healthz`)).status === 200;
          } catch {
            return false;
          }
        },
        20_000,
        `/healthz of the replayed container\n${output}`,
      );
      const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_docker' }));
      const res = await fetch(signedRequest(`${url}/webhooks/lava`, body));
      assert.equal(res.status, 200, output);
      assert.deepEqual(await res.json(), { received: true });

      // The database landed in the volume, owned by the container's user.
      const db = env.LAVA_WEBHOOK_DB as string;
      assert.ok(db.startsWith(rootfs) && existsSync(db), `no database at ${db}`);
      assert.equal(statSync(db).uid, user.uid);

      const check = healthcheckCommand(one('HEALTHCHECK'));
      const healthy = await run([...user.wrap, ...check], { cwd: app, env: runEnv });
      assert.equal(healthy.code, 0, `HEALTHCHECK failed on a healthy server:\n${healthy.output}`);

      server.kill(one('STOPSIGNAL') as NodeJS.Signals);
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))]);
      assert.equal(code, 0, `the server did not drain and exit 0 on ${one('STOPSIGNAL')}:\n${output}`);

      const down = await run([...user.wrap, ...check], { cwd: app, env: runEnv });
      assert.notEqual(down.code, 0, 'HEALTHCHECK passed with no server running');
    } finally {
      server.kill('SIGKILL');
    }
  });
});
