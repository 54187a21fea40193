// The core stays web-standard: no `bun`, `bun:*` or `node:*` import, no `Bun`/`Deno`/`process` global, and no
// import of a non-core file (which could bring one in). Runtime-specific code lives in src/runtime and the stores.
// The built package keeps optional backends optional: importing `lava-webhooks`, or a store's entry point, loads
// no Postgres driver, SQLite driver, `node:*` or `bun:*` module it does not need (checked on dist/ as built).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { before, describe, test } from 'node:test';
import { ROOT } from './helpers/server-process.ts';

const CORE = [
  'src/intake',
  'src/processing',
  'src/observability',
  'src/relay',
  'src/app.ts',
  'src/receiver.ts',
  'src/mod.ts',
  'src/config.ts',
  'src/samples.ts',
  'src/errors.ts',
  'src/stores/store.ts',
  'src/stores/memory.ts',
  'src/stores/guard.ts',
  'src/stores/options.ts',
  'src/stores/records.ts',
  'src/stores/group-commit.ts',
  'src/admin',
];
/** Packages the core may import: they run on every fetch runtime. */
const ALLOWED_PACKAGES = new Set(['hono', 'zod']);

function files(path: string): string[] {
  const abs = join(ROOT, path);
  if (!statSync(abs).isDirectory()) return [abs];
  return readdirSync(abs).flatMap((name) => files(join(path, name)));
}

/** Source with comments blanked out (strings kept), so a comment that mentions `Deno.openKv` is not a violation. */
function stripComments(src: string): string {
  let out = '';
  let i = 0;
  let quote: string | null = null;
  while (i < src.length) {
    const c = src[i] as string;
    const next = src[i + 1];
    if (quote) {
      out += c;
      if (c === '\\') {
        out += next ?? '';
        i += 2;
        continue;
      }
      if (c === quote) quote = null;
      i++;
    } else if (c === '/' && next === '/') {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === '/' && next === '*') {
      const end = src.indexOf('*/', i + 2);
      i = end < 0 ? src.length : end + 2;
      out += ' ';
    } else {
      if (c === "'" || c === '"' || c === '`') quote = c;
      out += c;
      i++;
    }
  }
  return out;
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)(['"])([^'"]+)\1/g;
const GLOBALS: Array<[RegExp, string]> = [
  [/\bBun\s*\./, 'the Bun global'],
  [/\bDeno\s*\./, 'the Deno global'],
  [/\bglobalThis\s*(?:\.\s*|\[\s*['"])(?:Bun|Deno|process)\b/, 'a runtime global through globalThis'],
  [/(?<![\w.])process\s*\./, "Node's process global"],
];

/** Every rule the file breaks, one line each. */
function violations(file: string, source: string, isCore: (abs: string) => boolean): string[] {
  const code = stripComments(source);
  const found: string[] = [];
  for (const m of code.matchAll(SPECIFIER)) {
    const spec = m[2] as string;
    if (spec === 'bun' || spec.startsWith('bun:') || spec.startsWith('node:')) found.push(`imports ${spec}`);
    else if (spec.startsWith('.')) {
      const target = resolve(dirname(file), spec);
      if (!isCore(target)) found.push(`imports ${spec}, which is not part of the core`);
    } else {
      const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string);
      if (!ALLOWED_PACKAGES.has(pkg))
        found.push(`imports the package ${spec} (allowed: ${[...ALLOWED_PACKAGES].join(', ')})`);
    }
  }
  for (const [pattern, what] of GLOBALS) if (pattern.test(code)) found.push(`uses ${what}`);
  return found;
}

describe('core purity', () => {
  const coreFiles = CORE.flatMap(files).filter((f) => /\.tsx?$/.test(f));
  const coreSet = new Set(coreFiles);

  test('the core imports nothing from bun, bun:*, node:* and uses no Bun, Deno or process global', () => {
    assert.ok(coreFiles.length >= 15, `found the core (${coreFiles.length} files)`);
    const report: string[] = [];
    for (const file of coreFiles) {
      for (const v of violations(file, readFileSync(file, 'utf8'), (abs) => coreSet.has(abs))) {
        report.push(`${relative(ROOT, file)}: ${v}`);
      }
    }
    assert.deepEqual(report, [], `runtime-specific code belongs in src/runtime or a store file:\n${report.join('\n')}`);
  });

  test('the check catches each kind of violation, and ignores comments', () => {
    const f = join(ROOT, 'src/intake/example.ts');
    const core = (abs: string) => abs.startsWith(join(ROOT, 'src/intake'));
    const bad = [
      "import { Database } from 'bun:sqlite';",
      "import { createHmac } from 'node:crypto';",
      "const s = await import('bun');",
      "import { x } from '../runtime/open-store.ts';",
      "import pg from 'postgres';",
      'const kv = await Deno.openKv();',
      'Bun.serve({ fetch });',
      "const e = globalThis['process'];",
      'const port = process.env.PORT;',
    ];
    for (const line of bad) assert.notDeepEqual(violations(f, line, core), [], line);
    const fine = [
      "// Deno.openKv and Bun.serve and 'node:fs' live elsewhere\nimport { z } from 'zod';",
      "/* process.env */ import { Hono } from 'hono'; import { a } from './body.ts';",
      "const url = 'https://example.com/x'; // node:crypto",
    ];
    for (const src of fine) assert.deepEqual(violations(f, src, core), [], src);
    assert.ok(existsSync(join(ROOT, 'src/runtime')), 'runtime-specific code has its own folder');
  });
});

/** A built module's imports, as esbuild reads them (strings and comments that merely mention one do not count). */
interface Imported {
  path: string;
  kind: string;
  external?: boolean;
}

/**
 * The modules a dist/ entry point loads when it is imported, static imports only (what runs before any of its code),
 * and everything it can load later through a dynamic import as well.
 */
async function builtGraph(entry: string): Promise<{ staticOnly: Imported[]; withDynamic: Imported[] }> {
  const esbuild = await import('esbuild');
  const built = await esbuild.build({
    entryPoints: [join(ROOT, entry)],
    absWorkingDir: ROOT,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    write: false,
    metafile: true,
    logLevel: 'silent',
    external: ['node:*', 'bun', 'bun:*', 'postgres', 'postgres/*', 'hono', 'hono/*', 'zod', 'zod/*'],
  });
  const inputs = built.metafile.inputs as Record<string, { imports: Imported[] }>;
  const closure = (kinds: string[]): Imported[] => {
    const seen = new Set<string>([entry]);
    const found: Imported[] = [];
    const queue = [entry];
    while (queue.length > 0) {
      for (const imp of inputs[queue.shift() as string]?.imports ?? []) {
        if (!kinds.includes(imp.kind)) continue;
        found.push(imp);
        if (!imp.external && !seen.has(imp.path)) {
          seen.add(imp.path);
          queue.push(imp.path);
        }
      }
    }
    return found;
  };
  return {
    staticOnly: closure(['import-statement']),
    withDynamic: closure(['import-statement', 'dynamic-import']),
  };
}

const RUNTIME_MODULE = /^(node:|bun$|bun:|postgres($|\/))/;
const runtimeModules = (imports: Imported[]) =>
  [...new Set(imports.filter((i) => i.external && RUNTIME_MODULE.test(i.path)).map((i) => i.path))].sort();
const packages = (imports: Imported[]) =>
  [
    ...new Set(imports.filter((i) => i.external && !RUNTIME_MODULE.test(i.path)).map((i) => i.path.split('/')[0])),
  ].sort();

describe('the built package keeps optional backends optional', () => {
  before(() => {
    // The same build as `npm run build`; dist/ is never committed, so this test makes its own.
    const r = spawnSync('node', [join(ROOT, 'scripts', 'build.mjs')], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, `build: ${r.stderr}${r.stdout}`);
  });

  test('lava-webhooks (and /stores/memory) loads hono and zod, and no node:, bun:, Postgres or SQLite module', async () => {
    for (const entry of ['dist/mod.js', 'dist/stores/memory.js']) {
      const { withDynamic } = await builtGraph(entry);
      assert.deepEqual(runtimeModules(withDynamic), [], `${entry}: runtime modules`);
      assert.deepEqual(packages(withDynamic), entry === 'dist/mod.js' ? ['hono', 'zod'] : [], `${entry}: packages`);
      assert.deepEqual(
        withDynamic.filter((i) => /sqlite|postgres|deno-kv/.test(i.path)),
        [],
        `${entry} reaches no store but memory`,
      );
    }
  });

  test('/stores/postgres imports no Postgres library, /stores/deno-kv nothing of a runtime', async () => {
    for (const entry of ['dist/stores/postgres.js', 'dist/stores/deno-kv/mod.js']) {
      const { withDynamic } = await builtGraph(entry);
      assert.deepEqual(runtimeModules(withDynamic), [], entry);
    }
  });

  test('/stores/sqlite: each export condition loads its own driver, the default one only when asked', async () => {
    // bun: bun:sqlite, statically (Bun always has it).
    const bun = await builtGraph('dist/stores/sqlite-entry-bun.js');
    assert.deepEqual(runtimeModules(bun.staticOnly), ['bun:sqlite', 'node:fs', 'node:path']);
    // default (Node, Deno): node:sqlite through a dynamic import, so Node 20 loads the entry and hears why.
    const node = await builtGraph('dist/stores/sqlite-entry-node.js');
    assert.deepEqual(runtimeModules(node.staticOnly), []);
    assert.deepEqual(runtimeModules(node.withDynamic), ['node:fs', 'node:path', 'node:sqlite']);
    // workerd, edge-light, worker, browser: no driver at all.
    const none = await builtGraph('dist/stores/sqlite-entry-unavailable.js');
    assert.deepEqual(runtimeModules(none.withDynamic), []);
    // The repository's (and JSR's) entry picks at run time, between both drivers.
    const picking = await builtGraph('dist/stores/sqlite.js');
    assert.deepEqual(runtimeModules(picking.staticOnly), []);
    assert.deepEqual(runtimeModules(picking.withDynamic), ['bun:sqlite', 'node:fs', 'node:path', 'node:sqlite']);
  });

  test('the graph check sees a static import of a runtime module, and ignores one only named in a string', async () => {
    // postgres.ts names `from "bun"` in an error message: no import. sqlite-node.js imports node:sqlite.
    const postgres = await builtGraph('dist/stores/postgres.js');
    assert.match(readFileSync(join(ROOT, 'dist/stores/postgres.js'), 'utf8'), /from "bun"/);
    assert.deepEqual(runtimeModules(postgres.withDynamic), []);
    const driver = await builtGraph('dist/stores/sqlite-node.js');
    assert.deepEqual(runtimeModules(driver.staticOnly), ['node:fs', 'node:path', 'node:sqlite']);
  });
});
