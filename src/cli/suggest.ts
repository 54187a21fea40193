// "Did you mean …?" for a mistyped flag or command: the one candidate it starts, else the nearest by edit distance.

/** Optimal string alignment distance: Levenshtein plus swapping two neighbours (`stauts` is one edit from `status`). */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] as number[];
    const up = d[i - 1] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, ((d[i - 2] as number[])[j - 2] as number) + 1);
      row[j] = best;
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** The candidate the user most likely meant, or undefined when none is close (about a third of the word may differ). */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const starting = candidates.filter((c) => c.startsWith(word));
  if (word.length >= 2 && starting.length === 1) return starting[0];
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const n = distance(word, c);
    if (n < bestDistance) {
      best = c;
      bestDistance = n;
    }
  }
  return best;
}
