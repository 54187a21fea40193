// The benchmark's events: one body template and a file of precomputed signatures, so every request wrk sends is a
// unique, correctly signed Lava event. Body i is the template with customer `i % 997` and balance `i`.
import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BENCH_SECRET = 'whsec_bench_secret_not_for_production';

// Three parts joined by the customer number and the balance; the Lua script joins them the same way.
export const TEMPLATE = [
  '{"event":"customer.wallet.balance.updated","data":{"customer_id":"cus_bench_',
  '","reference_id":"user_42","contact":{"phone":null,"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"},"subscription":{"subscription_id":"sub_1","plan_id":"plan_pro","name":"Pro","status":"active"},"metadata":{},"balance":"',
  '.00","created_at":"2026-01-01T00:00:00.000Z"}}',
];

export function body(i) {
  return `${TEMPLATE[0]}${i % 997}${TEMPLATE[1]}${i}${TEMPLATE[2]}`;
}

/**
 * Makes (or reuses) `dir/sigs-<n>.bin`: n signatures of 64 hex digits back to back (no separators), and
 * `dir/template.txt` (the three parts, one per line). Returns their paths.
 */
export function prepare(dir, n) {
  mkdirSync(dir, { recursive: true });
  const template = join(dir, 'template.txt');
  writeFileSync(template, `${TEMPLATE.join('\n')}\n`);
  const sigs = join(dir, `sigs-${n}.bin`);
  if (existsSync(sigs) && statSync(sigs).size === n * 64) return { sigs, template };
  const t0 = performance.now();
  const out = Buffer.allocUnsafe(n * 64);
  for (let i = 0; i < n; i++)
    out.write(createHmac('sha256', BENCH_SECRET).update(body(i)).digest('hex'), i * 64, 'latin1');
  writeFileSync(`${sigs}.tmp`, out);
  renameSync(`${sigs}.tmp`, sigs);
  console.log(`prepared ${n} signed events in ${Math.round(performance.now() - t0)} ms (${sigs})`);
  return { sigs, template };
}
