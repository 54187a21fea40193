// Checks the event names a user wrote as handler keys and in `ignore`: a misspelt key would otherwise never run, and
// its events would look handled. Names are checked against the schemas, legacy names pointed to their current ones.
import { EVENT_NAMES, type EventName, LEGACY_EVENTS } from '../intake/events.ts';

/** Edit distance (insertions, deletions, substitutions), for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
    }
    prev = row;
  }
  return prev[b.length] as number;
}

/** The known name closest to `name`, when it is close enough to be a typo of it (within a third of its length). */
export function closestEventName(name: string): EventName | null {
  let best: EventName | null = null;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const known of EVENT_NAMES) {
    const d = distance(name.toLowerCase(), known);
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

/** What is wrong with one name the user wrote under `where` (`handlers` or `ignore`), or null when it is known. */
function nameProblem(where: string, name: string): string | null {
  if ((EVENT_NAMES as readonly string[]).includes(name)) return null;
  if (Object.hasOwn(LEGACY_EVENTS, name)) {
    const current = LEGACY_EVENTS[name] as string;
    return (
      `${where}: "${name}" is Lava's legacy name of "${current}"; use "${current}" (legacy deliveries run that ` +
      'handler, and ctx.deliveredAs says which name arrived)'
    );
  }
  const close = closestEventName(name);
  const hint = close ? `did you mean "${close}"?` : `the known events are ${EVENT_NAMES.join(', ')}`;
  return `${where}: "${name}" is not a known event; ${hint}`;
}

/**
 * Every problem with a handler map and an ignore list, one line each: unknown or legacy names, a handler that is
 * not a function, an event both handled and ignored. Empty when all is well.
 */
export function handlerProblems(handlers: Record<string, unknown>, ignore: readonly string[]): string[] {
  const problems: string[] = [];
  for (const [name, handler] of Object.entries(handlers)) {
    const problem = nameProblem('handlers', name);
    if (problem) problems.push(problem);
    else if (typeof handler !== 'function' && handler !== undefined) {
      problems.push(`handlers: "${name}" must be a function, got ${handler === null ? 'null' : typeof handler}`);
    }
  }
  for (const name of ignore) {
    if (typeof name !== 'string') {
      problems.push(`ignore: expected event names, got ${JSON.stringify(name)}`);
      continue;
    }
    const problem = nameProblem('ignore', name);
    if (problem) problems.push(problem);
    else if (typeof handlers[name] === 'function') problems.push(`"${name}" is both handled and ignored; keep one`);
  }
  return problems;
}

/** The known events with neither a handler nor a place in `ignore`. */
export function unhandledEvents(handlers: Record<string, unknown>, ignore: readonly string[]): EventName[] {
  return EVENT_NAMES.filter((name) => typeof handlers[name] !== 'function' && !ignore.includes(name));
}
