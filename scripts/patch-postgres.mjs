// Applied by `npm ci` / `npm install` in this repository (the "prepare" script): guards postgres.js against a crash.
//
// postgres.js 3.4.9 (the latest release) queues small writes with setImmediate. When the connection closes before
// that callback runs, the callback calls write on a socket that is already null and throws from the timer: an
// uncaught TypeError that ends a Node or Deno process (porsager/postgres#1066, #1154, #1208; the fixes proposed in
// #1168, #1176 and #1209 are not released). Our Postgres outage test hit it in about one run in three on Node. The
// guard below settles the queued queries with CONNECTION_CLOSED instead, which the store reports as unavailable.
// Bun's server uses Bun's own SQL client and is not affected.
//
// Each copy of connection.js in the package (ESM, CommonJS, Workers) gets the guard once; a copy whose nextWrite no
// longer looks like 3.4.9's (a fixed release) is left alone with a notice.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const PACKAGE = join(ROOT, 'node_modules', 'postgres');
const MARKER = 'lava-webhooks: socket closed before this queued write';
const ORIGINAL = `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)`;
const GUARDED = `  function nextWrite(fn) {
    if (socket === null) { // ${MARKER}
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options))
      return false
    }
    const x = socket.write(chunk, fn)`;

if (!existsSync(PACKAGE)) {
  console.log('patch-postgres: postgres.js is not installed; nothing to patch');
} else {
  for (const file of ['src/connection.js', 'cjs/src/connection.js', 'cf/src/connection.js']) {
    const path = join(PACKAGE, file);
    if (!existsSync(path)) continue;
    const text = readFileSync(path, 'utf8');
    if (text.includes(MARKER)) continue;
    if (!text.includes(ORIGINAL)) {
      console.log(`patch-postgres: ${file} has no unguarded nextWrite of 3.4.9; left as it is`);
      continue;
    }
    writeFileSync(path, text.replace(ORIGINAL, GUARDED));
    console.log(`patch-postgres: guarded nextWrite in node_modules/postgres/${file}`);
  }
}
