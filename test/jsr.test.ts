// The JSR package (deno.json): `deno publish --dry-run` passes with no slow-types error and no warning (an
// unanalyzable dynamic import among them), publishes the library's sources and leaves the server-only ones out, and
// every entry point opens with a `@module` doc comment, the page JSR shows for it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { ROOT, binAvailable } from './helpers/server-process.ts';

const deno = JSON.parse(readFileSync(join(ROOT, 'deno.json'), 'utf8')) as {
  name: string;
  exports: Record<string, string>;
};
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  exports: Record<string, string | Record<string, string>>;
};

/** Every diagnostic deno publish printed (`error[slow-type…]`, `warning[unanalyzable-dynamic-import]`, …). */
function problems(output: string): string[] {
  return [...output.matchAll(/^(error|warning)(\[[\w-]+\])?: .*$/gm)].map((m) => m[0]);
}

/** The doc comment a file opens with, or null: JSR documents a module from its leading `/** … @module *\/`. */
function moduleDoc(source: string): string | null {
  const m = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  return m && /^\s*\*\s*@module\s*$/m.test(m[1] as string) ? (m[1] as string) : null;
}

describe('JSR package', { skip: !binAvailable('deno') && 'no deno in node_modules/.bin' }, () => {
  let output = '';
  let status: number | null = null;

  before(() => {
    const r = spawnSync(join(ROOT, 'node_modules', '.bin', 'deno'), ['publish', '--dry-run', '--allow-dirty'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 300_000,
      env: { ...process.env, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
    });
    output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    status = r.status;
  });

  test('deno publish --dry-run passes: no slow types, no unanalyzable dynamic import, no other warning', () => {
    assert.deepEqual(problems(output), [], output);
    assert.equal(status, 0, output);
    assert.match(output, new RegExp(`Simulating publish of ${deno.name.replace('/', '\\/')}@`));
    assert.match(output, /Success Dry run complete/);
    // Slow types were checked, not skipped.
    assert.match(output, /Checking for slow types in the public API/);
  });

  test('it publishes each entry point and the README, LICENSE and docs, and no server-only file', () => {
    const files = [...output.matchAll(/^\s+file:\/\/\S+?\/((?:src|docs)\/\S+|README\.md|LICENSE|deno\.json)\b/gm)].map(
      (m) => m[1] as string,
    );
    for (const target of Object.values(deno.exports)) assert.ok(files.includes(target.slice(2)), `${target}`);
    for (const f of ['README.md', 'LICENSE', 'deno.json', 'docs/stores.md', 'src/stores/sqlite-store.ts']) {
      assert.ok(files.includes(f), `${f} is published`);
    }
    const serverOnly = files.filter((f) =>
      /^src\/(server|cli|config|samples)\.ts$|^src\/(cli|runtime|http)\/|^src\/stores\/sqlite-entry-/.test(f),
    );
    assert.deepEqual(serverOnly, [], 'the server, the CLI and the npm-only SQLite entries stay out');
  });

  test('every entry point, on JSR and on npm, opens with a `@module` doc comment', () => {
    const sources = new Set(Object.values(deno.exports));
    for (const conditions of Object.values(pkg.exports)) {
      if (typeof conditions === 'string') continue;
      for (const target of Object.values(conditions)) {
        sources.add(target.replace(/^\.\/dist\//, './src/').replace(/(\.d\.ts|\.js)$/, '.ts'));
      }
    }
    assert.ok(sources.size >= 8, [...sources].join(', '));
    for (const source of sources) {
      const doc = moduleDoc(readFileSync(join(ROOT, source), 'utf8'));
      assert.ok(doc, `${source} opens with /** … @module */`);
      assert.ok((doc as string).replace(/^\s*\*\s?/gm, '').trim().length > 60, `${source}: the doc says something`);
    }
  });

  test('the checks themselves catch a warning, an error, and a file without a module doc', () => {
    const sample = [
      'Check src/mod.ts',
      'warning[unanalyzable-dynamic-import]: unable to analyze dynamic import',
      'error[missing-explicit-type]: missing explicit type in the public API',
      'error: Found 1 problem',
    ].join('\n');
    assert.equal(problems(sample).length, 3);
    assert.equal(moduleDoc('// a comment\n/** Docs. @module */'), null);
    assert.equal(moduleDoc('/** Docs without the tag. */\nexport {};'), null);
    assert.notEqual(moduleDoc('/**\n * Docs.\n *\n * @module\n */\nexport {};'), null);
  });
});
