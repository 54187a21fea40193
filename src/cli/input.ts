// What the CLI reads from the user besides flags: bytes on stdin, the signing secret, and a yes/no on a terminal.
import { Buffer } from 'node:buffer';
import process from 'node:process';
import { createInterface } from 'node:readline';
import { UsageError, err } from './output.ts';

type Env = Record<string, string | undefined>;

export async function readStdin(): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(typeof chunk === 'string' ? new TextEncoder().encode(chunk) : (chunk as Uint8Array));
  }
  return new Uint8Array(Buffer.concat(chunks));
}

export interface SecretFlags {
  secret?: string;
  'secret-stdin'?: boolean;
}

export const SECRET_ON_COMMAND_LINE =
  'warning: a secret passed with --secret is kept in your shell history and shown in process listings (ps); ' +
  'set LAVA_WEBHOOK_SECRET or pipe it to --secret-stdin instead';

/**
 * The secret to sign with: --secret (with a warning), else the secret piped to --secret-stdin, else the first of
 * LAVA_WEBHOOK_SECRET (the receiver's own setting, where a comma separates the secrets of a rotation).
 */
export async function readSecret(flags: SecretFlags, env: Env, command: string): Promise<string> {
  if (flags.secret !== undefined && flags['secret-stdin']) {
    throw new UsageError('pass --secret or --secret-stdin, not both', command);
  }
  if (flags.secret !== undefined) {
    err(`lava-webhooks: ${SECRET_ON_COMMAND_LINE}`);
    if (flags.secret === '') throw new UsageError('--secret is empty', command);
    return flags.secret;
  }
  if (flags['secret-stdin']) {
    if (process.stdin.isTTY) err('type the secret, then Enter and Ctrl-D (it is shown as you type; a pipe is better)');
    const text = new TextDecoder().decode(await readStdin()).trim();
    if (text === '') {
      throw new UsageError(
        '--secret-stdin: stdin was empty: pipe the secret in, e.g. printenv LAVA_SECRET | lava-webhooks …',
        command,
      );
    }
    if (/[\r\n]/.test(text))
      throw new UsageError('--secret-stdin: stdin has several lines: pipe in the secret alone', command);
    return text;
  }
  const secret = env.LAVA_WEBHOOK_SECRET?.split(',')
    .map((s) => s.trim())
    .find(Boolean);
  if (!secret) {
    throw new UsageError(
      'no secret: set LAVA_WEBHOOK_SECRET or pipe it to --secret-stdin (the webhook secret Lava gave you)',
      command,
    );
  }
  return secret;
}

/** Asks a yes/no question on stderr and reads the answer from the terminal; anything but y or yes is no. */
export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await new Promise<string>((res) => {
      rl.question(`${question} [y/N] `, res);
      // Ctrl-D closes the input without an answer: that is a no.
      rl.once('close', () => res(''));
    });
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
