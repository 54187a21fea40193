// `npm run bench:profile -- <target> [seconds]`: one Bun target of the benchmark (bench/lib/targets.mjs) under the
// same load (wrk, unique signed events, pinned cores), with Bun's sampling CPU profiler on, so a ratio in
// bench/RESULTS.md can be traced to where the server's time goes. Bun writes the profile as markdown (hot functions,
// call tree, callers) into BENCH_PROFILE_DIR (default: a new temporary folder); its path is printed at the end.
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstOk, pgAdmin, runWrk, startProcess, stop } from './lib/processes.mjs';
import { TARGETS } from './lib/targets.mjs';

const [id = 'c', seconds = '8'] = process.argv.slice(2);
const target = TARGETS[id];
if (!target) throw new Error(`no target ${id}; one of ${Object.keys(TARGETS).join(', ')}`);
const out = process.env.BENCH_PROFILE_DIR ?? mkdtempSync(join(tmpdir(), `lava-profile-${id}-`));
const dir = mkdtempSync(join(tmpdir(), 'lava-profile-data-'));
const profiled = (port) => {
  const [runtime, ...rest] = target.cmd(port);
  if (runtime.endsWith('bun')) return [runtime, '--cpu-prof-md', `--cpu-prof-dir=${out}`, ...rest];
  throw new Error(`target ${id} is not run by Bun`);
};
// A Postgres target gets a schema of its own, dropped afterwards (as in the benchmark).
const pg = target.postgres ? await pgAdmin() : null;
if (pg?.reason) throw new Error(`(${id}) needs Postgres: ${pg.reason}`);
const ctx = pg ? { schema: `lava_profile_${Date.now().toString(36)}` } : {};
const proc = startProcess(profiled, target.env?.(dir, ctx) ?? {});
await firstOk(proc, target.mode ?? 'lava');
const result = await runWrk(proc.port, target.mode ?? 'lava', Number(seconds), 5_000_000);
console.log(`(${id}) ${target.name}: ${Math.round(result.requests / Number(seconds))} requests/s`);
await stop(proc);
if (pg) {
  await pg.unsafe(`DROP SCHEMA IF EXISTS "${ctx.schema}" CASCADE`);
  await pg.end({ timeout: 2 });
}
console.log(`profile: ${out} (${readdirSync(out).join(', ')})`);
