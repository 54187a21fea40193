// What a user installs: `npm run build` compiles src/ into dist/ (JavaScript and declarations), `npm pack` ships
// dist/, the bin launcher, docs, README and LICENSE only, every exports target exists and is shipped, deno.json
// exports the same entry points for JSR from src/, and the built package imports by its own name on plain Node (no
// TypeScript loader), on Bun (its own SQLite entry), and in a Workers bundle; its declarations need no runtime's
// types. Inside the repository the name means src/ (tsconfig paths, deno.json imports): that is checked here too.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT, binAvailable } from './helpers/server-process.ts';

type Conditions = string | Record<string, string>;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, Conditions>;
  files: string[];
  bin?: Record<string, string>;
  dependencies: Record<string, string>;
  sideEffects?: boolean;
  private?: boolean;
  license?: string;
};
const deno = JSON.parse(readFileSync(join(ROOT, 'deno.json'), 'utf8')) as {
  exports: Record<string, string>;
  imports?: Record<string, string>;
  license?: string;
};
/** tsconfig files may hold comments: drop whole-line ones before parsing. */
const jsonc = (path: string) =>
  JSON.parse(
    readFileSync(join(ROOT, path), 'utf8')
      .split('\n')
      .filter((l) => !/^\s*\/\//.test(l))
      .join('\n'),
  );
const tsconfig = jsonc('tsconfig.json') as { compilerOptions: { paths: Record<string, string[]> } };
const tsconfigBuild = jsonc('tsconfig.build.json') as { files: string[] };

const ENTRIES = ['.', './stores/memory', './stores/sqlite', './stores/postgres', './stores/deno-kv'];
const targets = (c: Conditions): string[] => (typeof c === 'string' ? [c] : Object.values(c));
/** The source a dist/ declaration is built from: ./dist/stores/x.d.ts → ./src/stores/x.ts. */
const sourceOf = (dts: string) => dts.replace(/^\.\/dist\//, './src/').replace(/\.d\.ts$/, '.ts');
/** `lava-webhooks`, `lava-webhooks/stores/x`: the specifier a user writes for an entry point. */
const specifier = (entry: string) => (entry === '.' ? pkg.name : `${pkg.name}${entry.slice(1)}`);

/** The values each entry point exports, no more (types: test/types/public-api.ts). */
const EXPORTED: Record<string, string[]> = {
  '.': [
    'ConfigError',
    'DEFAULT_KEEP_HEADERS',
    'DEFAULT_RETRY_SCHEDULE_MS',
    'EVENT_NAMES',
    'Metrics',
    'NonRetryableError',
    'StoreSchemaError',
    'StoreUnavailableError',
    'StoreUsageError',
    'createLavaWebhooks',
    'jsonLogger',
    'memoryStore',
    'relay',
    'schemas',
    'sign',
    'silentLogger',
  ],
  './stores/memory': ['memoryStore'],
  './stores/sqlite': ['isSqliteAvailable', 'sqliteStore', 'sqliteUnavailableReason'],
  './stores/postgres': ['postgresStore'],
  './stores/deno-kv': ['denoKvStore'],
};

/** A Node found on PATH (under `bun test` process.execPath is Bun). */
const node = spawnSync('node', ['-p', 'process.versions.bun ? "" : process.execPath'], { encoding: 'utf8' });
const nodePath = node.stdout?.trim() ?? '';

function run(command: string, args: string[], cwd: string, timeout = 120_000) {
  const r = spawnSync(command, args, {
    cwd,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

describe('packaging', { skip: nodePath === '' && 'no Node on PATH' }, () => {
  let packed: string[] = [];
  /** A project outside the repository whose node_modules has the package (a link to it) and its dependencies. */
  let project = '';

  before(() => {
    const build = run(nodePath, [join(ROOT, 'scripts', 'build.mjs')], ROOT);
    assert.equal(build.status, 0, `npm run build: ${build.stderr}${build.stdout}`);
    const r = run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], ROOT);
    assert.equal(r.status, 0, r.stderr);
    packed = ((JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]?.files ?? []).map((f) => f.path);
    project = mkdtempSync(join(tmpdir(), 'lava-packaging-'));
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    mkdirSync(join(project, 'node_modules'));
    symlinkSync(ROOT, join(project, 'node_modules', pkg.name));
    for (const dep of Object.keys(pkg.dependencies)) {
      symlinkSync(join(ROOT, 'node_modules', dep), join(project, 'node_modules', dep));
    }
  });
  after(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  test('package.json is publishable: not private, MIT with a LICENSE file, free of module side effects', () => {
    assert.equal(pkg.private, undefined);
    assert.equal(pkg.license, 'MIT');
    assert.equal(deno.license, 'MIT');
    assert.match(
      readFileSync(join(ROOT, 'LICENSE'), 'utf8'),
      /^MIT License\n\nCopyright \(c\) \d{4} lava-webhooks contributors\n/,
    );
    assert.equal(pkg.sideEffects, false);
  });

  test('npm pack ships dist/, the bin, docs/, README.md, LICENSE and package.json, and nothing else', () => {
    for (const p of ['dist/mod.js', 'dist/mod.d.ts', 'dist/cli.js', 'README.md', 'LICENSE', 'package.json']) {
      assert.ok(packed.includes(p), `${p} is packed`);
    }
    const bins = Object.values(pkg.bin ?? {}).map((b) => b.replace(/^\.\//, ''));
    assert.ok(bins.length > 0);
    for (const b of bins) assert.ok(packed.includes(b), `bin ${b} is packed`);
    const stray = packed.filter(
      (p) => !/^(dist|docs)\//.test(p) && !['README.md', 'LICENSE', 'package.json', ...bins].includes(p),
    );
    assert.deepEqual(stray, [], 'only what a user needs');
    assert.deepEqual(
      packed.filter((p) => /(^|\/)(src|test|tests|bench|examples|data|scripts)\/|\.test\.|\.sqlite|\.tsx?$/.test(p)),
      packed.filter((p) => p.endsWith('.d.ts') && !p.includes('.test.')),
      'no source, test, bench, example, script or data file (declarations are the only .ts)',
    );
    // Every README link into docs/ still resolves inside the package.
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const [, link] of readme.matchAll(/\]\((docs\/[^)#]+)/g)) {
      assert.ok(packed.includes(link as string), `README links ${link}, which is packed`);
    }
  });

  test('every exports target is built and packed; types first, default last, in each condition object', () => {
    assert.deepEqual(Object.keys(pkg.exports).sort(), [...ENTRIES, './package.json'].sort());
    for (const entry of ENTRIES) {
      const conditions = pkg.exports[entry];
      assert.ok(conditions && typeof conditions === 'object', `package.json exports ${entry} by condition`);
      const keys = Object.keys(conditions);
      assert.equal(keys[0], 'types', `${entry}: "types" comes first`);
      assert.equal(keys.at(-1), 'default', `${entry}: "default" comes last`);
      assert.match(conditions.types as string, /^\.\/dist\/.+\.d\.ts$/);
      for (const target of targets(conditions)) {
        assert.match(target, /^\.\/dist\/.+\.(js|d\.ts)$/, `${entry} → ${target} is built output`);
        assert.ok(existsSync(join(ROOT, target)), `${entry} → ${target} exists after the build`);
        assert.ok(packed.includes(target.slice(2)), `${entry} → ${target} is packed`);
      }
    }
    assert.equal(pkg.exports['./package.json'], './package.json');
    // The SQLite entry: Bun's driver under `bun`, none where there is no SQLite, node:sqlite otherwise.
    assert.deepEqual(pkg.exports['./stores/sqlite'], {
      types: './dist/stores/sqlite.d.ts',
      bun: './dist/stores/sqlite-entry-bun.js',
      workerd: './dist/stores/sqlite-entry-unavailable.js',
      'edge-light': './dist/stores/sqlite-entry-unavailable.js',
      worker: './dist/stores/sqlite-entry-unavailable.js',
      browser: './dist/stores/sqlite-entry-unavailable.js',
      default: './dist/stores/sqlite-entry-node.js',
    });
  });

  test('npm and JSR agree: deno.json exports each entry from the source its dist/ declarations are built from', () => {
    const npmEntries = ENTRIES.filter((e) => e in pkg.exports);
    assert.deepEqual(Object.keys(deno.exports).sort(), [...npmEntries].sort());
    for (const entry of ENTRIES) {
      const types = (pkg.exports[entry] as Record<string, string>).types as string;
      assert.equal(deno.exports[entry], sourceOf(types), `${entry}: deno.json ↔ package.json`);
      assert.ok(existsSync(join(ROOT, deno.exports[entry] as string)));
      const source = (deno.exports[entry] as string).slice(2);
      // The build compiles it, and in the repository the package's name resolves to it for TypeScript, Bun, tsx,
      // esbuild (tsconfig paths) and Deno (deno.json imports) alike.
      assert.ok(tsconfigBuild.files.includes(source), `tsconfig.build.json compiles ${source}`);
      assert.deepEqual(tsconfig.compilerOptions.paths[specifier(entry)], [deno.exports[entry]]);
      assert.equal(deno.imports?.[specifier(entry)], deno.exports[entry]);
    }
    // The conditional SQLite entries are compiled too.
    for (const target of Object.values(pkg.exports['./stores/sqlite'] as Record<string, string>)) {
      if (target.endsWith('.js'))
        assert.ok(tsconfigBuild.files.includes(sourceOf(target.replace(/\.js$/, '.d.ts')).slice(2)));
    }
  });

  test('in the repository, the package name means src/: each entry exports exactly its public values', async () => {
    for (const [entry, names] of Object.entries(EXPORTED)) {
      const mod = (await import(specifier(entry))) as Record<string, unknown>;
      assert.deepEqual(Object.keys(mod).sort(), [...names].sort(), `${specifier(entry)} exports`);
      const source = (await import(join(ROOT, deno.exports[entry] as string))) as Record<string, unknown>;
      for (const name of names) assert.equal(mod[name], source[name], `${specifier(entry)} is ${deno.exports[entry]}`);
    }
  });

  test('plain Node, no TypeScript loader: each entry of the built package exports exactly its public values', () => {
    const script = `
      const out = {};
      for (const s of ${JSON.stringify(ENTRIES.map(specifier))}) out[s] = Object.keys(await import(s)).sort();
      const sqlite = await import('${pkg.name}/stores/sqlite');
      out.sqlite = { available: sqlite.isSqliteAvailable(), reason: sqlite.sqliteUnavailableReason };
      if (sqlite.isSqliteAvailable()) out.sqlite.counts = sqlite.sqliteStore({ path: ':memory:' }).counts();
      const { createLavaWebhooks, memoryStore } = await import('${pkg.name}');
      const { EVENT_NAMES, silentLogger } = await import('${pkg.name}');
      const lava = createLavaWebhooks({
        secret: 's', store: memoryStore(), handlers: {}, ignore: EVENT_NAMES, logger: silentLogger,
      });
      out.status = (await lava.fetch(new Request('http://x/healthz'))).status;
      console.log(JSON.stringify(out));`;
    const r = run(nodePath, ['--input-type=module', '-e', script], project);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown> & {
      sqlite: { available: boolean; reason: string | null; counts?: Record<string, number> };
    };
    for (const entry of ENTRIES) assert.deepEqual(out[specifier(entry)], EXPORTED[entry], specifier(entry));
    assert.equal(out.status, 200, 'the receiver built from dist/ answers');
    const nodeVersion = run(nodePath, ['-p', 'process.versions.node'], project).stdout.trim();
    const [major = 0, minor = 0] = nodeVersion.split('.').map(Number);
    if (major > 23 || (major === 23 && minor >= 4) || (major === 22 && minor >= 13)) {
      assert.equal(out.sqlite.available, true, `Node ${nodeVersion} has node:sqlite`);
      assert.equal(out.sqlite.counts?.pending, 0);
    } else {
      assert.equal(out.sqlite.available, false);
      assert.match(
        out.sqlite.reason ?? '',
        new RegExp(`node:sqlite is not available on this runtime \\(Node ${nodeVersion}\\)`),
      );
    }
  });

  test('Bun: the `bun` condition loads bun:sqlite, and the WAL checkpointer thread starts from dist/', {
    skip: !binAvailable('bun') && 'no bun in node_modules/.bin',
  }, () => {
    const script = `
      import { statSync } from 'node:fs';
      import { join } from 'node:path';
      const sqlite = await import('${pkg.name}/stores/sqlite');
      const resolved = import.meta.resolve('${pkg.name}/stores/sqlite');
      const path = join(process.cwd(), 'bun.sqlite');
      const store = sqlite.sqliteStore({ path, backgroundCheckpoint: { everyMs: 20 } });
      const before = statSync(path).size;
      const body = new Uint8Array(2000).fill(7);
      for (let i = 0; i < 300; i++) {
        const customerId = 'c' + (i % 50);
        store.insert({ key: 'k' + i, event: 'customer.created', customerId, body, headers: {}, receivedAt: 1, status: 'pending' });
      }
      let grown = false;
      for (let t = 0; t < 100 && !grown; t++) {
        await new Promise((r) => setTimeout(r, 50));
        grown = statSync(path).size > before + 300 * 2000;
      }
      const available = sqlite.isSqliteAvailable();
      console.log(JSON.stringify({ resolved, available, pending: store.counts().pending, grown }));
      store.close();`;
    writeFileSync(join(project, 'bun-probe.mjs'), script);
    const r = run(join(ROOT, 'node_modules', '.bin', 'bun'), ['bun-probe.mjs'], project);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { resolved: string; available: boolean; pending: number; grown: boolean };
    assert.match(out.resolved, /\/dist\/stores\/sqlite-entry-bun\.js$/);
    assert.equal(out.available, true);
    assert.equal(out.pending, 300);
    assert.equal(out.grown, true, 'the checkpointer (dist/stores/sqlite-checkpointer.js) copied the WAL into the file');
  });

  test('a Workers bundle (conditions workerd, worker, browser) of every entry has no node:, bun: or postgres import', async () => {
    const esbuild = await import('esbuild');
    const entry = join(project, 'worker-probe.js');
    writeFileSync(entry, ENTRIES.map((e, i) => `export * as e${i} from '${specifier(e)}';`).join('\n'));
    const built = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      conditions: ['workerd', 'worker', 'browser'],
      mainFields: ['module', 'main'],
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const inputs = Object.keys(built.metafile.inputs);
    assert.ok(
      inputs.some((i) => i.endsWith('dist/stores/sqlite-entry-unavailable.js')),
      'the SQLite entry without SQLite',
    );
    assert.deepEqual(
      inputs.filter((i) => /dist\/stores\/sqlite-(bun|node|entry-bun|entry-node)\.js$|\/src\//.test(i)),
      [],
      'no SQLite driver, and no source file, in the bundle',
    );
    // Nothing left unresolved for the runtime (esbuild fails on a node: import it cannot place, unless external).
    const imported = Object.values(built.metafile.inputs).flatMap((i) => i.imports.map((imp) => imp.path));
    assert.deepEqual(
      imported.filter((p) => /^(node:|bun$|bun:|postgres$)/.test(p) || /node_modules\/postgres\//.test(p)),
      [],
    );
    assert.deepEqual(
      inputs.filter((i) => /node_modules\/postgres\//.test(i)),
      [],
      'the Postgres store takes a client, imports none',
    );
  });

  test("the declarations type-check in a strict project with no runtime's types (no @types/node, no bun-types)", () => {
    writeFileSync(
      join(project, 'consumer.ts'),
      `import { type HandlerMap, createLavaWebhooks } from '${pkg.name}';
      import { memoryStore } from '${pkg.name}/stores/memory';
      import { isSqliteAvailable, sqliteStore } from '${pkg.name}/stores/sqlite';
      import { type PostgresClient, postgresStore } from '${pkg.name}/stores/postgres';
      import { denoKvStore } from '${pkg.name}/stores/deno-kv';
      const handlers: HandlerMap = { 'customer.created': async (event) => void event.data.customer_id.toUpperCase() };
      const store = isSqliteAvailable() ? sqliteStore({ path: ':memory:', groupCommit: true }) : memoryStore();
      export const lava = createLavaWebhooks({ secret: 's', store, handlers });
      export const pg = (sql: PostgresClient) => postgresStore({ sql });
      export { denoKvStore };
      // @ts-expect-error: the types are real: a handler for no known event is refused
      export const typo: HandlerMap = { 'customer.craeted': async () => {} };`,
    );
    for (const moduleResolution of ['nodenext', 'bundler']) {
      writeFileSync(
        join(project, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            strict: true,
            noEmit: true,
            target: 'es2022',
            module: moduleResolution === 'bundler' ? 'esnext' : 'nodenext',
            moduleResolution,
            lib: ['ES2022', 'DOM', 'DOM.Iterable'],
            types: [],
            skipLibCheck: false,
          },
          files: ['consumer.ts'],
        }),
      );
      const r = run(nodePath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], project);
      assert.equal(r.status, 0, `${moduleResolution}: ${r.stdout}${r.stderr}`);
    }
  });
});
