// The lava-webhooks command line: send signed test events, sign bodies, and inspect, replay and purge the inbox.
// Runs on Bun, Deno (-A) and Node (tsx); `npm run cli -- …` and the `lava-webhooks` bin run it on Bun.
import process from 'node:process';
import { parseArgs } from 'node:util';
import { listCommand, purgeCommand, requeueCommand, showCommand, statsCommand } from './cli/events.ts';
import { CliError, EXIT_FAILED, EXIT_USAGE, UsageError, err, out } from './cli/output.ts';
import { sendCommand, signCommand } from './cli/send.ts';

type OptionSpec = { type: 'string' | 'boolean'; short?: string };

const STORE_OPTIONS: Record<string, OptionSpec> = {
  db: { type: 'string' },
  store: { type: 'string' },
  kv: { type: 'string' },
  'database-url': { type: 'string' },
};
const COMMON: Record<string, OptionSpec> = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } };

interface Command {
  usage: string;
  options: Record<string, OptionSpec>;
  /** How many positional arguments it takes. */
  positionals: number;
  run(positionals: string[], flags: Record<string, string | boolean | undefined>, env: Env): Promise<number>;
}

type Env = Record<string, string | undefined>;

const STORE_HELP = `Store (same choice as the server; flags override the environment):
  --db <file>            SQLite file (LAVA_WEBHOOK_DB, default ./data/lava-webhooks.sqlite)
  --kv <path>            Deno KV database (LAVA_WEBHOOK_KV; Deno only)
  --database-url <url>   Postgres (DATABASE_URL)
  --store <kind>         sqlite | kv | postgres (LAVA_WEBHOOK_STORE)`;

const COMMANDS: Record<string, Command> = {
  send: {
    usage: `send <event> [options]   POST a realistic sample event, signed as Lava signs it
  --url <url>            receiver URL (default http://127.0.0.1:$PORT$LAVA_WEBHOOK_PATH = http://127.0.0.1:3000/webhooks/lava)
  --secret <secret>      signing secret (default: LAVA_WEBHOOK_SECRET)
  --customer <id>        customer_id in the payload (default: a new one per event)
  --data <json>          fields merged into data, e.g. '{"balance":"12.50"}'
  --count <n>            send n events (default 1)
  --duplicate            send each event twice: the second answer says duplicate
  --webhook-id <id>      send a webhook-id header (the key where the receiver trusts it:
                         LAVA_WEBHOOK_TRUST_WEBHOOK_ID=true); -1, -2, … appended with --count
  events: customer.created, customer.wallet.balance.updated, customer.deleted (legacy connection.* too)`,
    options: {
      url: { type: 'string' },
      secret: { type: 'string' },
      customer: { type: 'string' },
      data: { type: 'string' },
      count: { type: 'string' },
      duplicate: { type: 'boolean' },
      'webhook-id': { type: 'string' },
    },
    positionals: 1,
    run: (p, f, env) => sendCommand(p[0], f, env),
  },
  sign: {
    usage: `sign [--secret <s>] [--header] < body.json   print the signature of the exact bytes on stdin
  --header               print a ready "X-Webhook-Signature: …" line
  with curl, send the same bytes: curl --data-binary @body.json (not -d, which strips newlines)`,
    options: { secret: { type: 'string' }, header: { type: 'boolean' } },
    positionals: 0,
    run: (_p, f, env) => signCommand(f, env),
  },
  'events list': {
    usage: `events list [options]    recorded events, oldest first
  --status <s>           pending | retrying | dead | done
  --event <name>         only this event
  --customer <id>        only this customer
  --limit <n>            at most n (default 50)
  --after <seq>          the next page: events after this seq`,
    options: {
      ...STORE_OPTIONS,
      status: { type: 'string' },
      event: { type: 'string' },
      customer: { type: 'string' },
      limit: { type: 'string' },
      after: { type: 'string' },
    },
    positionals: 0,
    run: (_p, f, env) => listCommand(f, env),
  },
  'events show': {
    usage: `events show <key> [--reveal]   one event: headers (secrets masked), body, attempts, last error, times
  --reveal               print the body's secrets and personal data (masked by default; signatures stay masked)`,
    options: { ...STORE_OPTIONS, reveal: { type: 'boolean' } },
    positionals: 1,
    run: (p, f, env) => showCommand(p[0], f, env),
  },
  'events requeue': {
    usage: `events requeue <key> | --all-dead [--event <name>]   run events again (attempts reset)
  --all-dead             every dead letter (with --event: of that event only)
  --force                requeue an event even while a worker is running it`,
    options: { ...STORE_OPTIONS, 'all-dead': { type: 'boolean' }, event: { type: 'string' }, force: { type: 'boolean' } },
    positionals: 1,
    run: (p, f, env) => requeueCommand(p[0], f, env),
  },
  'events purge': {
    usage: `events purge --before <date|duration> [--include-dead]   delete finished events
  --before <when>        2026-11-01, an ISO time, or an age such as 7d, 12h
  --include-dead         purge dead letters too (kept by default)`,
    options: { ...STORE_OPTIONS, before: { type: 'string' }, 'include-dead': { type: 'boolean' } },
    positionals: 0,
    run: (_p, f, env) => purgeCommand(f, env),
  },
  stats: {
    usage: `stats                    how many events are pending, retrying, dead and done`,
    options: STORE_OPTIONS,
    positionals: 0,
    run: (_p, f, env) => statsCommand(f, env),
  },
};

function usage(): string {
  const lines = ['usage: lava-webhooks <command> [options] [--json]', '', 'Commands:'];
  for (const c of Object.values(COMMANDS)) lines.push(`  ${c.usage.split('\n')[0]}`);
  lines.push(
    '',
    STORE_HELP,
    '',
    'Every command takes --json (output for scripts) and --help.',
    'Exit codes: 0 done, 1 failed (rejected, unreachable, not found, store error), 2 bad usage.',
  );
  return lines.join('\n');
}

function commandUsage(name: string): string {
  const c = COMMANDS[name] as Command;
  const store = Object.keys(c.options).includes('db') ? `\n\n${STORE_HELP}` : '';
  return `usage: lava-webhooks ${c.usage}${store}\n\n  --json                 output for scripts`;
}

function pickCommand(args: string[]): { name: string; rest: string[] } | null {
  const [first, second, ...rest] = args;
  if (first === 'events') {
    const name = `events ${second ?? ''}`;
    return COMMANDS[name] ? { name, rest } : null;
  }
  if (first && COMMANDS[first]) return { name: first, rest: args.slice(1) };
  return null;
}

export async function main(args: string[], env: Env): Promise<number> {
  if (args.length === 0 || args[0] === 'help' || args[0] === '--help' || args[0] === '-h') {
    if (args.length === 0) {
      err(usage());
      return EXIT_USAGE;
    }
    out(usage());
    return 0;
  }
  const picked = pickCommand(args);
  if (!picked) {
    const what = args[0] === 'events' ? `events ${args[1] ?? ''}`.trim() : args[0];
    throw new UsageError(`unknown command: ${what}`);
  }
  const command = COMMANDS[picked.name] as Command;
  const options = { ...command.options, ...COMMON };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: picked.rest, options, allowPositionals: true, strict: true });
  } catch (error) {
    // The runtimes word this differently; name the flag ourselves when it is an unknown one.
    const unknown = picked.rest.find((a) => a.startsWith('-') && !(a.replace(/^--?/, '').split('=')[0] as string in options) && !Object.values(options).some((o) => `-${o.short}` === a));
    throw new UsageError(unknown ? `unknown option for ${picked.name}: ${unknown}` : (error as Error).message.split('\n')[0] as string, picked.name);
  }
  const flags = parsed.values as Record<string, string | boolean | undefined>;
  if (flags.help) {
    out(commandUsage(picked.name));
    return 0;
  }
  if (parsed.positionals.length > command.positionals) {
    throw new UsageError(`unexpected argument: ${parsed.positionals[command.positionals]}`, picked.name);
  }
  return command.run(parsed.positionals, flags, env);
}

export async function run(): Promise<void> {
  let code: number;
  try {
    code = await main(process.argv.slice(2), process.env);
  } catch (error) {
    if (error instanceof UsageError) {
      err(`lava-webhooks: ${error.message}\n`);
      err(error.command ? commandUsage(error.command) : usage());
      code = error.exitCode;
    } else if (error instanceof CliError) {
      err(`lava-webhooks: ${error.message}`);
      code = error.exitCode;
    } else {
      err(`lava-webhooks: unexpected error: ${(error as Error)?.stack ?? String(error)}`);
      code = EXIT_FAILED;
    }
  }
  // Let piped output drain before exiting (process.exit does not wait for it on Node).
  await new Promise<void>((r) => process.stdout.write('', () => r()));
  process.exit(code);
}

// Imported (by the bin launcher on Bun, or a test) it waits to be told; run directly it runs.
if (import.meta.main !== false) await run();
