// Helpers for the type-level tests in this folder. These files are checked by `npm run typecheck` and never run.

/** True only when A and B are the same type (not merely assignable: `any` is equal to nothing but `any`). */
export type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

/** `equal<A, B>(true)` compiles only when A and B are the same type. */
export function equal<A, B>(proof: Equal<A, B>): Equal<A, B> {
  return proof;
}
