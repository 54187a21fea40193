// The documentation stays true to the code: every environment variable the server reads is in
// docs/configuration.md, every relative link in README.md and docs/*.md resolves, and the README stays a front door.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { ENV_VARIABLES, relayUrls } from '../src/config.ts';

const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/** README.md and every Markdown file under docs/, as paths relative to the repository. */
function markdownFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`);
  return ['README.md', ...docs];
}

/** The text outside fenced code blocks, line by line (a link or heading inside a code sample is not one). */
function proseLines(markdown: string): string[] {
  const out: string[] = [];
  let fence: string | null = null;
  for (const line of markdown.split('\n')) {
    const m = /^\s*(`{3,}|~{3,})/.exec(line);
    if (m) {
      const marker = m[1] as string;
      if (fence === null) fence = marker[0] as string;
      else if (marker[0] === fence) fence = null;
      out.push('');
      continue;
    }
    out.push(fence === null ? line : '');
  }
  return out;
}

/** Inline code spans blanked out, so `[x](y)` quoted in code is not taken for a link. */
const withoutCode = (line: string) => line.replace(/(`+)[^`]*?\1/g, (span) => ' '.repeat(span.length));

/**
 * GitHub's anchor for a heading: the rendered text in lower case, without punctuation, spaces as hyphens; a repeated
 * heading gets -1, -2, … in order.
 */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of proseLines(markdown)) {
    const m = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const text = (m[1] as string)
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/<[^>]+>/g, '')
      .toLowerCase();
    const base = text.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

interface Link {
  file: string;
  line: number;
  target: string;
}

/** Inline Markdown links `[text](target)` and images in prose, with the line they are on. */
function links(file: string): Link[] {
  const out: Link[] = [];
  proseLines(read(file)).forEach((raw, i) => {
    for (const m of withoutCode(raw).matchAll(/!?\[(?:[^\]]|\\\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      out.push({ file, line: i + 1, target: m[1] as string });
    }
  });
  return out;
}

/** Why a relative link does not resolve, or null when it does. */
function brokenReason(link: Link): string | null {
  const [path = '', anchor] = link.target.split('#', 2) as [string, string | undefined];
  const target =
    path === '' ? join(ROOT, link.file) : resolve(dirname(join(ROOT, link.file)), decodeURIComponent(path));
  if (!target.startsWith(ROOT)) return 'points outside the repository';
  if (!existsSync(target)) return `${relative(ROOT, target)} does not exist`;
  if (anchor === undefined) return null;
  if (statSync(target).isDirectory() || !target.endsWith('.md')) return `#${anchor} on a file that is not Markdown`;
  const known = anchors(readFileSync(target, 'utf8'));
  return known.has(decodeURIComponent(anchor).toLowerCase())
    ? null
    : `${relative(ROOT, target)} has no heading #${anchor}`;
}

/** Variable names in the first cell of the tables of a Markdown file (`| \`NAME\` | …`, several per cell allowed). */
function tableVariables(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const line of proseLines(markdown)) {
    const cell = /^\s*\|([^|]*)\|/.exec(line)?.[1];
    if (!cell) continue;
    for (const m of cell.matchAll(/`([A-Z][A-Z0-9_]*(?:<[A-Z]+>)?)`/g)) out.add(m[1] as string);
  }
  return out;
}

/** Every file of a path (a file itself, or the .ts files under a folder). */
function sourceFiles(path: string): string[] {
  const abs = join(ROOT, path);
  if (!existsSync(abs)) return [];
  if (!statSync(abs).isDirectory()) return [path];
  return readdirSync(abs)
    .flatMap((name) => sourceFiles(`${path}/${name}`))
    .filter((p) => p.endsWith('.ts'));
}

const ENV_READS = [
  /\benv\s*\.\s*([A-Z][A-Z0-9_]+)\b/g, // process.env.X, Bun.env.X, env.X
  /\benv\s*\[\s*['"`]([A-Z][A-Z0-9_]+)['"`]\s*\]/g, // env['X']
  /\benv\s*\.\s*(?:get|has)\s*\(\s*['"`]([A-Z][A-Z0-9_]+)['"`]/g, // Deno.env.get('X')
];

/** Variables a file reads from an environment object directly, besides the schema. */
function envReads(path: string): string[] {
  const source = read(path);
  return ENV_READS.flatMap((pattern) => [...source.matchAll(pattern)].map((m) => m[1] as string));
}

describe('docs/configuration.md', () => {
  const documented = tableVariables(read('docs/configuration.md'));

  test('documents, in a table, every variable the server config reads (ENV_VARIABLES)', () => {
    const keys = Object.keys(ENV_VARIABLES);
    assert.ok(keys.length >= 20, `read the schema (${keys.length} keys)`);
    const missing = keys.filter((k) => !documented.has(k));
    assert.deepEqual(missing, [], `add a table row to docs/configuration.md for: ${missing.join(', ')}`);
  });

  test('documents the per-event relay URL pattern LAVA_RELAY_URL_<EVENT> that loadConfig() reads', () => {
    // The pattern is still read: a per-event variable becomes that event's endpoint.
    assert.deepEqual(relayUrls({ LAVA_RELAY_URL_CUSTOMER_DELETED: 'https://app.example/x' }), {
      'customer.deleted': 'https://app.example/x',
    });
    assert.ok(documented.has('LAVA_RELAY_URL_<EVENT>'), 'add a `LAVA_RELAY_URL_<EVENT>` row to docs/configuration.md');
  });

  test('documents every variable src/server.ts, src/runtime and the CLI read from the environment directly', () => {
    const files = [
      'src/server.ts',
      'src/config.ts',
      'src/cli.ts',
      ...sourceFiles('src/cli'),
      ...sourceFiles('src/runtime'),
    ];
    const reads = new Set(files.flatMap(envReads));
    const missing = [...reads].filter((name) => !documented.has(name)).sort();
    assert.deepEqual(missing, [], `add a table row to docs/configuration.md for: ${missing.join(', ')}`);
  });

  test('the variable finder sees each way of reading the environment', () => {
    const found = (code: string) => ENV_READS.flatMap((p) => [...code.matchAll(p)].map((m) => m[1]));
    assert.deepEqual(found('const a = process.env.A_B;'), ['A_B']);
    assert.deepEqual(found("const b = env['C_D'] ?? Deno.env.get('E_F');"), ['C_D', 'E_F']);
    assert.deepEqual(found('const e = Deno.env.toObject(); env.lowercase;'), []);
  });
});

describe('Markdown links in README.md and docs/', () => {
  test('every relative link points at an existing file, and at an existing heading when it names one', () => {
    const all = markdownFiles().flatMap(links);
    assert.ok(all.length > 20, `found the links (${all.length})`);
    const broken: string[] = [];
    for (const link of all) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(link.target)) continue; // https:, mailto:, …
      const why = brokenReason(link);
      if (why) broken.push(`${link.file}:${link.line} (${link.target}): ${why}`);
    }
    assert.deepEqual(broken, [], `broken links:\n${broken.join('\n')}`);
  });

  test('the anchor finder follows GitHub: punctuation dropped, spaces as hyphens, repeats numbered', () => {
    const found = anchors(
      '# Several instances with Postgres (docker compose)\n## `ctx`\n### Options\n### Options\n```\n# not a heading\n```',
    );
    assert.deepEqual([...found], ['several-instances-with-postgres-docker-compose', 'ctx', 'options', 'options-1']);
  });

  test('every page in docs/ starts with one line saying what it covers and links back to the README', () => {
    for (const file of markdownFiles().filter((f) => f.startsWith('docs/'))) {
      const lines = read(file).split('\n');
      assert.match(lines[0] ?? '', /^# \S/, `${file} starts with its title`);
      const first = lines.slice(1).find((l) => l.trim() !== '') ?? '';
      assert.match(first, /\]\(\.\.\/README\.md\)/, `${file}: the line under the title links back to ../README.md`);
    }
  });
});

describe('README.md', () => {
  const readme = read('README.md');

  test('is under 200 lines and names the two commands, npm start and npm test', () => {
    const lines = readme.endsWith('\n') ? readme.split('\n').length - 1 : readme.split('\n').length;
    assert.ok(lines < 200, `README.md has ${lines} lines; move detail into docs/`);
    assert.match(readme, /\bnpm start\b/);
    assert.match(readme, /\bnpm test\b/);
  });

  test('links every page in docs/', () => {
    const linked = new Set(links('README.md').map((l) => l.target.split('#')[0]));
    const pages = markdownFiles().filter((f) => f.startsWith('docs/'));
    assert.ok(pages.length >= 9, `found the docs (${pages.length})`);
    assert.deepEqual(
      pages.filter((p) => !linked.has(p)),
      [],
      'every docs page is reachable from the README',
    );
  });
});
