// `events resend`: POSTs a stored event's exact body to any endpoint, signed afresh as Lava signs it. The store keeps
// no signature (one at rest would be a replayable delivery), so the signature is made here with the given secret.
import { sign } from '../intake/signature.ts';
import { openCliStore, type StoreFlags } from './events.ts';
import { findEvent } from './find.ts';
import { type SecretFlags, readSecret } from './input.ts';
import { CliError, UsageError, out, printJson } from './output.ts';
import { describeFailure, post } from './send.ts';

type Env = Record<string, string | undefined>;

const USAGE = 'events resend';

export interface ResendFlags extends StoreFlags, SecretFlags {
  to?: string;
}

function parseTo(raw: string | undefined): string {
  if (raw === undefined) {
    throw new UsageError('resend: where to? pass --to <URL>, e.g. --to http://localhost:3000/webhooks/lava', USAGE);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--to: not a URL: ${raw} (expected e.g. http://localhost:3000/webhooks/lava)`, USAGE);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UsageError(`--to: expected an http or https URL, got ${raw}`, USAGE);
  return url.toString();
}

export async function resendCommand(id: string | undefined, flags: ResendFlags, env: Env): Promise<number> {
  if (!id)
    throw new UsageError('resend: which event? pass its seq, key or the start of its key (see events list)', USAGE);
  const url = parseTo(flags.to);
  const secret = await readSecret(flags, env, USAGE);
  const { store } = await openCliStore(flags, env);
  let record: Awaited<ReturnType<typeof findEvent>>;
  try {
    record = await findEvent(store, id);
  } finally {
    await store.close();
  }
  if (record.tombstone) {
    throw new CliError(
      `${record.key} (seq ${record.seq}) is a tombstone: purge kept only its key, not its body, so there is nothing to resend`,
    );
  }
  const signature = await sign(secret, record.body);
  const answer = await post(url, record.body, { signature, contentType: record.headers['content-type'] });
  const ok = answer.status >= 200 && answer.status < 300;
  if (flags.json) {
    printJson({
      seq: record.seq,
      key: record.key,
      url,
      bytes: record.body.length,
      status: answer.status,
      answer: answer.answer,
      ok,
    });
  } else {
    out(`resent #${record.seq} ${record.key} (${record.body.length} bytes) to ${url}`);
    out(`→ ${answer.status} ${typeof answer.answer === 'string' ? answer.answer : JSON.stringify(answer.answer)}`);
  }
  if (!ok) throw new CliError(describeFailure(answer.status, answer.answer, url, '--to'));
  return 0;
}
