// Loads the server's handlers module (LAVA_WEBHOOK_HANDLERS) and, when it cannot be loaded, says where and why: a
// syntax error names the file, line and column on Bun and on Deno, whose own messages differ in shape.
import type { HandlerMap, UnknownHandler } from '../processing/dispatch.ts';

type UrlTools = { fileURLToPath(url: string): string; pathToFileURL(path: string): URL };
// Bun has both as globals; node:url is imported only elsewhere (Deno, Node), which saves Bun 2 ms of every start.
const { fileURLToPath, pathToFileURL }: UrlTools =
  (globalThis as { Bun?: UrlTools }).Bun ?? ((await import('node:url')) as UrlTools);

export interface HandlersModule {
  handlers: HandlerMap;
  onUnknown?: UnknownHandler;
  /** Known events the module means not to handle (`export const ignore = ['customer.deleted']`). */
  ignore: string[];
}

/** A handlers module that could not be loaded or does not export what it should. */
export class HandlersModuleError extends Error {
  override name = 'HandlersModuleError';
}

interface Position {
  file: string;
  line: number;
  column: number;
  lineText?: string;
}

/** `file:///x.ts` or a path, as a path (a URL that is not a file URL stays as it is). */
function pathOf(file: string): string {
  try {
    return file.startsWith('file:') ? fileURLToPath(file) : file;
  } catch {
    return file;
  }
}

/** The line that failed, with a caret under the column. */
function excerpt(p: Position): string {
  if (p.lineText === undefined) return '';
  const gutter = `${p.line} | `;
  return `\n  ${gutter}${p.lineText}\n  ${' '.repeat(gutter.length - 2)}| ${' '.repeat(Math.max(0, p.column - 1))}^`;
}

/** Bun: a BuildMessage (one error) or an AggregateError of them, each with a `position`. */
function bunPositions(error: unknown): Array<{ message: string; position: Position }> {
  const out: Array<{ message: string; position: Position }> = [];
  const visit = (e: unknown) => {
    const position = (e as { position?: Position | null } | null)?.position;
    if (position && typeof position.line === 'number') out.push({ message: String((e as Error).message), position });
  };
  visit(error);
  for (const e of (error as { errors?: unknown[] } | null)?.errors ?? []) visit(e);
  return out;
}

/** Deno: "SyntaxError: <what>\n  |\n2 | <line>\n  | ~\n    at file:///x.ts:2:32" inside a TypeError's message. */
function denoPosition(error: unknown): { message: string; position: Position } | null {
  const text = String((error as Error | null)?.message ?? '');
  const m = /^\s*(?:[A-Za-z]*Error:\s*)?([^\n]*)[\s\S]*?\n\s*at (file:\/\/\S+?|\/\S+?):(\d+):(\d+)\s*$/.exec(text);
  if (!m || !/SyntaxError/.test(text)) return null;
  const line = Number(m[3]);
  const lineText = new RegExp(`^${line} \\| (.*)$`, 'm').exec(text)?.[1];
  return { message: m[1] as string, position: { file: m[2] as string, line, column: Number(m[4]), lineText } };
}

/** The first place in a stack trace that is not inside this loader or a runtime's internals. */
function thrownAt(error: unknown): string | null {
  const stack = String((error as Error | null)?.stack ?? '');
  for (const m of stack.matchAll(/(file:\/\/[^\s)]+|\/[^\s):]+\.[cm]?[jt]sx?):(\d+):(\d+)/g)) {
    const file = pathOf(m[1] as string);
    if (file.includes('/node_modules/') || file.endsWith('/handlers-module.ts')) continue;
    return `${file}:${m[2]}:${m[3]}`;
  }
  return null;
}

/** What went wrong importing the module at `path`, in one message that names the file (and line, when known). */
export function describeImportError(error: unknown, path: string): string {
  const bun = bunPositions(error);
  if (bun.length > 0) {
    return bun
      .slice(0, 5)
      .map(
        ({ message, position }) =>
          `syntax error at ${pathOf(position.file)}:${position.line}:${position.column}: ${message}${excerpt(position)}`,
      )
      .join('\n');
  }
  const deno = denoPosition(error);
  if (deno) {
    const p = deno.position;
    return `syntax error at ${pathOf(p.file)}:${p.line}:${p.column}: ${deno.message}${excerpt(p)}`;
  }
  const message = String((error as Error | null)?.message ?? error).split('\n')[0];
  const name = (error as Error | null)?.name;
  if (
    /Cannot find module|Module not found|not found/i.test(message ?? '') &&
    (error as { code?: unknown })?.code === 'ERR_MODULE_NOT_FOUND'
  ) {
    return `could not load ${path}: ${message}`;
  }
  const at = thrownAt(error);
  return `${path} threw while loading${at ? ` at ${at}` : ''}: ${name && name !== 'Error' ? `${name}: ` : ''}${message}`;
}

/**
 * Imports the handlers module named by `spec` (a path relative to `cwd`, or a file URL). It exports `handlers` (or a
 * default handler map), and optionally `onUnknown` and `ignore`.
 */
export async function loadHandlersModule(spec: string, cwd: string): Promise<HandlersModule> {
  const url = spec.startsWith('file:') ? spec : new URL(spec, pathToFileURL(cwd.replace(/\/?$/, '/'))).href;
  const path = pathOf(url);
  let mod: { handlers?: unknown; default?: unknown; onUnknown?: unknown; ignore?: unknown };
  try {
    mod = (await import(url)) as typeof mod;
  } catch (error) {
    throw new HandlersModuleError(describeImportError(error, path), { cause: error });
  }
  const handlers = mod.handlers ?? mod.default;
  if (!handlers || typeof handlers !== 'object') {
    throw new HandlersModuleError(`${path} exports no \`handlers\` object (or default export)`);
  }
  if (mod.onUnknown !== undefined && typeof mod.onUnknown !== 'function') {
    throw new HandlersModuleError(`${path}: \`onUnknown\` must be a function, got ${typeof mod.onUnknown}`);
  }
  const ignore = mod.ignore ?? [];
  if (!Array.isArray(ignore)) {
    throw new HandlersModuleError(`${path}: \`ignore\` must be an array of event names, e.g. ['customer.deleted']`);
  }
  return { handlers: handlers as HandlerMap, onUnknown: mod.onUnknown as UnknownHandler | undefined, ignore };
}
