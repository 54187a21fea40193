// `npm run bench:profile -- <target> [seconds]`: one Bun target of the benchmark (bench/lib/targets.mjs) under the
// same load (wrk, unique signed events, pinned cores, a fresh store), with Bun's sampling CPU profiler on, so a ratio
// in bench/RESULTS.md can be traced to where the server's time goes. Bun writes the profile as markdown (hot
// functions, call tree, callers) into BENCH_PROFILE_DIR (default: a new temporary folder); its path is printed at the
// end.
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanup, onFreshServer, unavailable } from './lib/measure.mjs';
import { runWrk } from './lib/processes.mjs';
import { TARGETS } from './lib/targets.mjs';

const [id = 'c', seconds = '8'] = process.argv.slice(2);
const target = TARGETS[id];
if (!target) throw new Error(`no target ${id}; one of ${Object.keys(TARGETS).join(', ')}`);
const out = process.env.BENCH_PROFILE_DIR ?? mkdtempSync(join(tmpdir(), `lava-profile-${id}-`));
const profiled = (port) => {
  const [runtime, ...rest] = target.cmd(port);
  if (runtime.endsWith('bun')) return [runtime, '--cpu-prof-md', `--cpu-prof-dir=${out}`, ...rest];
  throw new Error(`target ${id} is not run by Bun`);
};
try {
  const why = await unavailable(id);
  if (why) throw new Error(`(${id}) cannot run here: ${why}`);
  // The profile is written as the server exits, which onFreshServer waits for.
  const rate = await onFreshServer(
    id,
    'profile-',
    async (proc, mode) => (await runWrk(proc.port, mode, Number(seconds), 5_000_000)).requests / Number(seconds),
    profiled,
  );
  console.log(`(${id}) ${target.name}: ${Math.round(rate)} requests/s`);
} finally {
  await cleanup();
}
console.log(`profile: ${out} (${readdirSync(out).join(', ')})`);
