// The admin token's check, apart from the console's routes: the receiver checks it at start-up without loading them.
import { ConfigError } from '../errors.ts';

/** Throws ConfigError unless `token` is a string of at least 16 characters (not counting surrounding spaces). */
export function checkAdminToken(token: unknown): asserts token is string {
  if (typeof token !== 'string' || token.trim().length < 16) {
    throw new ConfigError(
      'adminToken must be at least 16 characters (a random token, e.g. openssl rand -hex 32), or leave it out to keep the admin console off',
    );
  }
}
