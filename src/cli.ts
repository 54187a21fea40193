// The lava-webhooks command line: send signed test events, sign bodies, and inspect, follow, replay, resend and
// purge the inbox. Runs on Bun, Deno (-A) and Node (22.15+ through the bin launcher, or tsx); `npm run cli -- …`
// runs it on Bun.
import { readFileSync, realpathSync } from 'node:fs';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { listCommand, purgeCommand, requeueCommand, showCommand, statsCommand } from './cli/events.ts';
import { CliError, EXIT_FAILED, EXIT_USAGE, UsageError, err, out } from './cli/output.ts';
import { resendCommand } from './cli/resend.ts';
import { sendCommand, signCommand } from './cli/send.ts';
import { closest } from './cli/suggest.ts';
import { tailCommand } from './cli/tail.ts';

type OptionSpec = { type: 'string' | 'boolean'; short?: string };
type Flags = Record<string, string | boolean | undefined>;
type Env = Record<string, string | undefined>;

const STORE_OPTIONS: Record<string, OptionSpec> = {
  db: { type: 'string' },
  store: { type: 'string' },
  kv: { type: 'string' },
  'database-url': { type: 'string' },
};
const SECRET_OPTIONS: Record<string, OptionSpec> = {
  secret: { type: 'string' },
  'secret-stdin': { type: 'boolean' },
};
const COMMON: Record<string, OptionSpec> = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } };

interface Command {
  usage: string;
  options: Record<string, OptionSpec>;
  /** How many positional arguments it takes. */
  positionals: number;
  run(positionals: string[], flags: Flags, env: Env): Promise<number>;
}

const STORE_HELP = `Store (same choice as the server; flags override the environment):
  --db <file>            SQLite file (LAVA_WEBHOOK_DB, default ./data/lava-webhooks.sqlite)
  --kv <path>            Deno KV database (LAVA_WEBHOOK_KV; Deno only)
  --database-url <url>   Postgres (DATABASE_URL)
  --store <kind>         sqlite | kv | postgres (LAVA_WEBHOOK_STORE)`;

const SECRET_HELP = `Secret (the webhook secret Lava gave you; a flag overrides the environment):
  LAVA_WEBHOOK_SECRET    the receiver's own setting (the first, when it lists several)
  --secret-stdin         read it from stdin, e.g. printenv LAVA_SECRET | lava-webhooks … --secret-stdin
  --secret <secret>      works, but warns: it lands in shell history and process listings`;

const ID_HELP = `<id> is the event's seq (42, or '#42' quoted), its full key, or the start of its key when only one event has it`;

const COMMANDS: Record<string, Command> = {
  send: {
    usage: `send <event> [options]   POST a realistic sample event, signed as Lava signs it
  --url <url>            receiver URL (default http://127.0.0.1:$PORT$LAVA_WEBHOOK_PATH = http://127.0.0.1:3000/webhooks/lava)
  --customer <id>        customer_id in the payload (default: a new one per event)
  --data <json>          fields merged into data, e.g. '{"balance":"12.50"}'
  --count <n>            send n events (default 1)
  --duplicate            send each event twice: the second answer says duplicate
  --webhook-id <id>      send a webhook-id header (the key where the receiver trusts it:
                         LAVA_WEBHOOK_TRUST_WEBHOOK_ID=true); -1, -2, … appended with --count
  events: customer.created, customer.wallet.balance.updated, customer.deleted (legacy connection.* too)

${SECRET_HELP}`,
    options: {
      ...SECRET_OPTIONS,
      url: { type: 'string' },
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
    usage: `sign [--header] [--file <path>] < body.json   print the signature of the exact bytes of a body
  --header               print a ready "X-Webhook-Signature: …" line
  --file <path>          read the body from a file instead of stdin (needed with --secret-stdin)
  with curl, send the same bytes: curl --data-binary @body.json (not -d, which strips newlines)

${SECRET_HELP}`,
    options: { ...SECRET_OPTIONS, header: { type: 'boolean' }, file: { type: 'string' } },
    positionals: 0,
    run: (_p, f, env) => signCommand(f, env),
  },
  'events list': {
    usage: `events list [options]    recorded events, oldest first; the SEQ column is the short id other commands take
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
    usage: `events show <id> [--reveal]   one event: headers (secrets masked), body, attempts, last error, times
  --reveal               print the body's secrets and personal data (masked by default; signatures stay masked)
  ${ID_HELP}`,
    options: { ...STORE_OPTIONS, reveal: { type: 'boolean' } },
    positionals: 1,
    run: (p, f, env) => showCommand(p[0], f, env),
  },
  'events tail': {
    usage: `events tail [options]    follow new events live: a line when one arrives, a line when it is done, retried or dead
  --event <name>         only this event
  --customer <id>        only this customer
  --status <s,…>         only lines with these statuses (pending = the "received" lines), e.g. --status retrying,dead
  --after <seq>          start after this seq instead of now (--after 0: from the first event)
  --interval <duration>  how often to poll the store (default 1s)
  --for <duration>       stop after this long, e.g. 30s (default: until Ctrl-C)
  --once                 poll once and exit
  --json                 one JSON object per line: {"type":"received"|"status", "seq", "key", …}`,
    options: {
      ...STORE_OPTIONS,
      event: { type: 'string' },
      customer: { type: 'string' },
      status: { type: 'string' },
      after: { type: 'string' },
      interval: { type: 'string' },
      for: { type: 'string' },
      once: { type: 'boolean' },
    },
    positionals: 0,
    run: (_p, f, env) => tailCommand(f, env),
  },
  'events requeue': {
    usage: `events requeue <id> | --all-dead [--event <name>]   run events again (attempts reset)
  --all-dead             every dead letter (with --event: of that event only)
  --force                requeue an event even while a worker is running it
  ${ID_HELP}`,
    options: {
      ...STORE_OPTIONS,
      'all-dead': { type: 'boolean' },
      event: { type: 'string' },
      force: { type: 'boolean' },
    },
    positionals: 1,
    run: (p, f, env) => requeueCommand(p[0], f, env),
  },
  'events resend': {
    usage: `events resend <id> --to <url>   POST a stored event's exact body to any endpoint, signed afresh
  --to <url>             where to send it, e.g. https://staging.example.com/webhooks/lava
  prints the endpoint's answer; exits 1 unless it is 2xx. A tombstone (purged, key only) has no body to send.
  ${ID_HELP}

${SECRET_HELP}`,
    options: { ...STORE_OPTIONS, ...SECRET_OPTIONS, to: { type: 'string' } },
    positionals: 1,
    run: (p, f, env) => resendCommand(p[0], f, env),
  },
  'events purge': {
    usage: `events purge --before <date|duration> [--include-dead] [--dry-run | --yes]   delete finished events
  --before <when>        2026-11-01, an ISO time, or an age such as 7d, 12h
  --include-dead         purge dead letters too (kept by default)
  --dry-run              only count what would be purged
  -y, --yes              do not ask; without it, purge asks on a terminal and refuses elsewhere (exit 2)`,
    options: {
      ...STORE_OPTIONS,
      before: { type: 'string' },
      'include-dead': { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      yes: { type: 'boolean', short: 'y' },
    },
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

const TOP_LEVEL = [...new Set(Object.keys(COMMANDS).map((n) => n.split(' ')[0] as string))];
const EVENTS_SUBCOMMANDS = Object.keys(COMMANDS)
  .filter((n) => n.startsWith('events '))
  .map((n) => n.slice('events '.length));

export function version(): string {
  try {
    return (
      JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url).href), 'utf8')) as {
        version: string;
      }
    ).version;
  } catch {
    return 'unknown';
  }
}

function usage(): string {
  const lines = ['usage: lava-webhooks <command> [options] [--json]', '', 'Commands:'];
  for (const c of Object.values(COMMANDS)) lines.push(`  ${c.usage.split('\n')[0]}`);
  lines.push(
    '',
    STORE_HELP,
    '',
    'Every command takes --json (output for scripts) and --help; lava-webhooks --version prints the version.',
    'Exit codes: 0 done, 1 failed (rejected, unreachable, not found, store error), 2 bad usage.',
  );
  return lines.join('\n');
}

function eventsUsage(): string {
  const lines = ['usage: lava-webhooks events <command> [options] [--json]', ''];
  for (const sub of EVENTS_SUBCOMMANDS) lines.push(`  ${(COMMANDS[`events ${sub}`] as Command).usage.split('\n')[0]}`);
  lines.push('', ID_HELP, 'lava-webhooks events <command> --help shows its options.');
  return lines.join('\n');
}

function commandUsage(name: string): string {
  if (name === 'events') return eventsUsage();
  const c = COMMANDS[name] as Command;
  const store = Object.keys(c.options).includes('db') ? `\n\n${STORE_HELP}` : '';
  return `usage: lava-webhooks ${c.usage}${store}\n\n  --json                 output for scripts\n  -h, --help             this help`;
}

const isHelp = (a: string | undefined) => a === '--help' || a === '-h';

/** The command named by the first words, or a usage error that suggests the nearest one. */
function pickCommand(args: string[]): { name: string; rest: string[] } {
  const [first = '', second, ...rest] = args;
  if (first === 'events') {
    if (second === undefined || second.startsWith('-') || second === 'help') {
      if (isHelp(second) || second === 'help') return { name: 'events', rest: ['--help'] };
      throw new UsageError(
        second === undefined ? 'events: which command?' : `events: which command? (got ${second})`,
        'events',
      );
    }
    const name = `events ${second}`;
    if (COMMANDS[name]) return { name, rest };
    const near = closest(second, EVENTS_SUBCOMMANDS);
    throw new UsageError(`unknown command: events ${second}${near ? ` (did you mean events ${near}?)` : ''}`, 'events');
  }
  if (COMMANDS[first]) return { name: first, rest: args.slice(1) };
  const near = closest(first, TOP_LEVEL);
  throw new UsageError(`unknown command: ${first}${near ? ` (did you mean ${near}?)` : ''}`);
}

/** The first argument that is not one of the command's flags, with the nearest flag it may have meant. */
function unknownFlag(args: string[], options: Record<string, OptionSpec>): string | null {
  for (const a of args) {
    if (a === '--') break;
    if (!a.startsWith('-') || a === '-') continue;
    if (a.startsWith('--')) {
      const name = a.slice(2).split('=')[0] as string;
      if (name in options) continue;
      const near = closest(name, Object.keys(options));
      return `${a}${near ? ` (did you mean --${near}?)` : ''}`;
    }
    const shorts = Object.entries(options).filter(([, o]) => o.short);
    if (shorts.some(([, o]) => a === `-${o.short}`)) continue;
    const near = closest(a.slice(1), Object.keys(options));
    return `${a}${near ? ` (did you mean --${near}?)` : ''}`;
  }
  return null;
}

export async function main(args: string[], env: Env): Promise<number> {
  const [first] = args;
  if (first === undefined) {
    err(usage());
    return EXIT_USAGE;
  }
  if (first === '--version' || first === '-v') {
    out(version());
    return 0;
  }
  if (isHelp(first) || first === 'help') {
    // `help events list` is `events list --help`.
    const rest = args.slice(1);
    if (first === 'help' && rest.length > 0) return main([...rest, '--help'], env);
    out(usage());
    return 0;
  }
  const picked = pickCommand(args);
  const end = picked.rest.indexOf('--');
  if (picked.rest.slice(0, end === -1 ? undefined : end).some(isHelp)) {
    out(commandUsage(picked.name));
    return 0;
  }
  const command = COMMANDS[picked.name] as Command;
  const options = { ...command.options, ...COMMON };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: picked.rest, options, allowPositionals: true, strict: true });
  } catch (error) {
    // The runtimes word this differently; name the flag ourselves when it is an unknown one.
    const unknown = unknownFlag(picked.rest, options);
    throw new UsageError(
      unknown ? `unknown option for ${picked.name}: ${unknown}` : ((error as Error).message.split('\n')[0] as string),
      picked.name,
    );
  }
  if (parsed.positionals.length > command.positionals) {
    throw new UsageError(`unexpected argument: ${parsed.positionals[command.positionals]}`, picked.name);
  }
  return command.run(parsed.positionals, parsed.values as Flags, env);
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

/**
 * Run as a script, it runs; imported (by the bin launcher, or a test), it waits to be told. Bun and Deno say which
 * through import.meta.main; Node before 24.2 does not set it, so there the script path is compared with this file.
 */
function invokedDirectly(): boolean {
  const main = (import.meta as { main?: boolean }).main;
  if (typeof main === 'boolean') return main;
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) await run();
