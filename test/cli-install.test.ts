// The installed `lava-webhooks` command in a project of its own, outside this repository: `npm pack` (its prepack
// builds dist/), then the tarball installed the way a user installs it, with the package's dependencies but none of
// its devDependencies (no bun, no tsx). The bin runs the built CLI (dist/cli.js) under whatever the project has:
// Node alone, Node with Bun on PATH, Bun, Deno.
import assert from 'node:assert/strict';
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { lavaSign } from './helpers/lava.ts';
import { ROOT, binAvailable } from './helpers/server-process.ts';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  dependencies: Record<string, string>;
};
const BIN = join(ROOT, 'node_modules', '.bin');
const BODY = '{"event":"customer.created","data":{"customer_id":"cus_installed"}}';
const SECRET = 'whsec_installed';

const npm = spawnSync('npm', ['--version'], { encoding: 'utf8' });

/** The real Node on PATH (under `bun test`, process.execPath is Bun and process.versions.node is Bun's claim). */
const node = spawnSync('node', ['-p', 'process.versions.bun ? "" : process.execPath + " " + process.version'], {
  encoding: 'utf8',
});
const [nodePath = '', nodeVersion = ''] = node.stdout.trim().split(' ');
const skip = npm.status !== 0 ? 'npm is not on PATH' : nodePath === '' ? 'no Node on PATH' : false;
if (skip) console.log(`[skip] installed CLI tests: ${skip}`);

/** node:sqlite, which the SQLite store needs on Node: 22.13+ (23.4+ on 23). */
const [major = 0, minor = 0] = nodeVersion.replace(/^v/, '').split('.').map(Number);
const nodeHasSqlite = major > 23 || (major === 23 && minor >= 4) || (major === 22 && minor >= 13);

describe('installed lava-webhooks command, in a project without the devDependencies', { skip }, () => {
  let project = '';
  /** A PATH with node and nothing else: no bun, deno or tsx can be found on it. */
  let nodeOnly = '';
  let withBun = '';

  function run(command: string, args: string[], env: Record<string, string>, input?: string): SpawnSyncReturns<string> {
    return spawnSync(command, args, {
      cwd: project,
      env: { HOME: process.env.HOME ?? '/tmp', LAVA_WEBHOOK_SECRET: SECRET, ...env },
      input: input ?? '',
      encoding: 'utf8',
      timeout: 60_000,
    });
  }
  const installed = () => join(project, 'node_modules', '.bin', 'lava-webhooks');

  before(() => {
    project = mkdtempSync(join(tmpdir(), 'lava-installed-'));
    // With its scripts: prepack builds dist/ first (on stderr, so stdout is npm's JSON alone).
    const packed = spawnSync('npm', ['pack', '--json', '--pack-destination', project], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    assert.equal(packed.status, 0, packed.stderr);
    const tarball = join(project, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0]?.filename as string);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
    writeFileSync(join(project, 'body.json'), BODY);
    writeFileSync(join(project, 'empty.sqlite'), '');
    // The registry is out of reach in tests: the package's dependencies come from this repository's node_modules,
    // installed by path next to the tarball, so npm resolves them without asking the registry.
    const deps = Object.keys(pkg.dependencies).map((d) => join(ROOT, 'node_modules', d));
    const install = spawnSync(
      'npm',
      ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', '--install-links', tarball, ...deps],
      { cwd: project, encoding: 'utf8', timeout: 120_000 },
    );
    if (install.status !== 0) {
      // Lay node_modules out as npm would (package, dependencies, bin link) so the launcher is still tested.
      console.log(
        `[note] npm install --offline failed, laying out node_modules by hand:\n${install.stderr.slice(-500)}`,
      );
      const target = join(project, 'node_modules', pkg.name);
      mkdirSync(target, { recursive: true });
      assert.equal(spawnSync('tar', ['-xzf', tarball, '-C', target, '--strip-components=1']).status, 0);
      for (const d of Object.keys(pkg.dependencies))
        cpSync(join(ROOT, 'node_modules', d), join(project, 'node_modules', d), { recursive: true });
      mkdirSync(join(project, 'node_modules', '.bin'), { recursive: true });
      symlinkSync(`../${pkg.name}/bin/lava-webhooks.mjs`, installed());
    }
    nodeOnly = join(project, 'path-node');
    mkdirSync(nodeOnly);
    symlinkSync(nodePath, join(nodeOnly, 'node'));
    withBun = join(project, 'path-bun');
    mkdirSync(withBun);
    symlinkSync(join(BIN, 'bun'), join(withBun, 'bun'));
  });
  after(() => rmSync(project, { recursive: true, force: true }));

  test('the project has the package and its dependencies, but no bun, deno or tsx', () => {
    const modules = readFileSync(join(project, 'node_modules', pkg.name, 'package.json'), 'utf8');
    assert.equal((JSON.parse(modules) as { version: string }).version, pkg.version);
    for (const dev of ['bun', 'tsx', 'deno', 'typescript']) {
      assert.equal(spawnSync('test', ['-e', join(project, 'node_modules', dev)]).status, 1, `${dev} is not installed`);
    }
  });

  test('lava-webhooks --version answers with Node alone', () => {
    const r = run(installed(), ['--version'], { PATH: nodeOnly });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  test('lava-webhooks runs the built CLI with Node alone: sign, and help', () => {
    const r = run(installed(), ['sign', '--file', 'body.json'], { PATH: nodeOnly });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${lavaSign(SECRET, BODY)}\n`);
    assert.doesNotMatch(r.stderr, /Warning/);
    const help = run(installed(), ['events', '--help'], { PATH: nodeOnly });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /events resend <id> --to <url>/);
  });

  test(
    nodeHasSqlite
      ? `lava-webhooks opens a SQLite database with Node alone (Node ${nodeVersion} has node:sqlite)`
      : `lava-webhooks on Node ${nodeVersion} (no node:sqlite) and no Bun: a SQLite command says what to run, exits 1`,
    () => {
      const r = run(installed(), ['stats', '--db', 'empty.sqlite'], { PATH: nodeOnly });
      if (nodeHasSqlite) {
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /^total\s+0$/m);
      } else {
        assert.equal(r.status, 1, r.stdout);
        assert.match(r.stderr, new RegExp(`node:sqlite is not available on this runtime \\(Node ${major}\\.`));
        assert.match(r.stderr, /run with Bun, Deno, or Node >= 22\.13/);
      }
    },
  );

  test('lava-webhooks hands over to a Bun found on PATH where Node has no node:sqlite: sign, help, a store', {
    skip: !binAvailable('bun') && 'no bun',
  }, () => {
    const env = { PATH: `${nodeOnly}:${withBun}` };
    const signed = run(installed(), ['sign', '--file', 'body.json'], env);
    assert.equal(signed.status, 0, signed.stderr);
    assert.equal(signed.stdout, `${lavaSign(SECRET, BODY)}\n`);
    const help = run(installed(), ['events', '--help'], env);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /events resend <id> --to <url>/);
    const store = run(installed(), ['stats', '--db', 'missing.sqlite'], env);
    assert.equal(store.status, 1);
    assert.match(store.stderr, /no database at missing\.sqlite/);
    // Bun's SQLite (or node:sqlite, on a Node that has it) opens the database.
    const opened = run(installed(), ['stats', '--db', 'empty.sqlite', '--json'], env);
    assert.equal(opened.status, 0, opened.stderr);
    assert.equal((JSON.parse(opened.stdout) as { total: number }).total, 0);
  });

  test('bun and deno run the installed bin directly', () => {
    const runtimes: Array<[string, string[]]> = [];
    if (binAvailable('bun')) runtimes.push([join(BIN, 'bun'), [installed()]]);
    else console.log('[skip] bun: node_modules/.bin/bun is missing');
    if (binAvailable('deno')) runtimes.push([join(BIN, 'deno'), ['run', '-A', installed()]]);
    else console.log('[skip] deno: node_modules/.bin/deno is missing');
    for (const [runtime, prefix] of runtimes) {
      const env = { PATH: dirname(runtime), DENO_NO_UPDATE_CHECK: '1' };
      const signed = run(runtime, [...prefix, 'sign', '--secret-stdin', '--file', 'body.json'], env, SECRET);
      assert.equal(signed.status, 0, `${runtime}: ${signed.stderr}`);
      assert.equal(signed.stdout, `${lavaSign(SECRET, BODY)}\n`);
      const version = run(runtime, [...prefix, 'events', 'list', '--help'], env);
      assert.equal(version.status, 0, `${runtime}: ${version.stderr}`);
      const store = run(runtime, [...prefix, 'stats', '--db', 'missing.sqlite'], env);
      assert.match(store.stderr, /no database at missing\.sqlite/, `${runtime}: ${store.stderr}`);
    }
  });
});
