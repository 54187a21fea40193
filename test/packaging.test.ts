// What a user installs: `npm pack` ships only the library (no tests, bench, examples or data), every exports target
// exists and is shipped, deno.json exports the same entry points for JSR, and the package imports by its own name.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT } from './helpers/server-process.ts';

type Conditions = string | Record<string, string>;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, Conditions>;
  files: string[];
  bin?: Record<string, string>;
};
const deno = JSON.parse(readFileSync(join(ROOT, 'deno.json'), 'utf8')) as { exports: Record<string, string> };

const targets = (c: Conditions): string[] => (typeof c === 'string' ? [c] : Object.values(c));

describe('packaging', () => {
  test('npm pack ships src/, the bin launcher, README.md and package.json only, and every exports target', () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const [packed] = JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>;
    const paths = (packed?.files ?? []).map((f) => f.path);
    assert.ok(paths.includes('src/mod.ts') && paths.includes('README.md') && paths.includes('package.json'));
    const bins = Object.values(pkg.bin ?? {}).map((b) => b.replace(/^\.\//, ''));
    for (const b of bins) assert.ok(paths.includes(b), `bin ${b} is packed`);
    const stray = paths.filter(
      (p) => !p.startsWith('src/') && p !== 'README.md' && p !== 'package.json' && !bins.includes(p),
    );
    assert.deepEqual(stray, [], 'only what a user needs');
    assert.deepEqual(
      paths.filter((p) => /(^|\/)(test|tests|bench|examples|data)\/|\.test\.ts$|\.sqlite/.test(p)),
      [],
      'no test, bench, example or data file',
    );
    for (const [entry, conditions] of Object.entries(pkg.exports)) {
      for (const target of targets(conditions)) {
        assert.ok(existsSync(join(ROOT, target)), `${entry} → ${target} exists`);
        assert.ok(paths.includes(target.replace(/^\.\//, '')), `${entry} → ${target} is packed`);
      }
    }
  });

  test('exports: the library and each store, types first; deno.json exports the same entry points', () => {
    const entries = ['.', './stores/memory', './stores/sqlite', './stores/postgres', './stores/deno-kv'];
    for (const entry of entries) {
      const conditions = pkg.exports[entry];
      assert.ok(conditions && typeof conditions === 'object', `package.json exports ${entry}`);
      assert.equal(Object.keys(conditions)[0], 'types', `${entry}: "types" comes first`);
      assert.equal(deno.exports[entry], conditions.default, `deno.json exports ${entry} the same file`);
      assert.ok(existsSync(join(ROOT, deno.exports[entry] as string)));
    }
    assert.deepEqual(Object.keys(deno.exports).sort(), [...entries].sort());
  });

  test('the package imports by its own name, as a user would', async () => {
    const lib = (await import(`${pkg.name}`)) as Record<string, unknown>;
    assert.equal(typeof lib.createLavaWebhooks, 'function');
    assert.equal(typeof lib.memoryStore, 'function');
    const factories: Record<string, string> = {
      memory: 'memoryStore',
      sqlite: 'sqliteStore',
      postgres: 'postgresStore',
      'deno-kv': 'denoKvStore',
    };
    for (const [store, factory] of Object.entries(factories)) {
      const mod = (await import(`${pkg.name}/stores/${store}`)) as Record<string, unknown>;
      assert.equal(typeof mod[factory], 'function', `${pkg.name}/stores/${store} exports ${factory}`);
    }
  });

  test('each entry point exports exactly its public values, no internals (types: test/types/public-api.ts)', async () => {
    const expected: Record<string, string[]> = {
      '': [
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
      '/stores/memory': ['memoryStore'],
      '/stores/sqlite': ['isSqliteAvailable', 'sqliteStore', 'sqliteUnavailableReason'],
      '/stores/postgres': ['postgresStore'],
      '/stores/deno-kv': ['denoKvStore'],
    };
    for (const [entry, names] of Object.entries(expected)) {
      const mod = (await import(`${pkg.name}${entry}`)) as Record<string, unknown>;
      assert.deepEqual(Object.keys(mod).sort(), [...names].sort(), `${pkg.name}${entry} exports`);
    }
  });
});
