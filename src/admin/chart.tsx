/** @jsxRuntime automatic */
/** @jsxImportSource hono/jsx */
// The overview's chart of the last hour, drawn on the server as SVG: deliveries received per minute above, handler
// outcomes (done, dead) per minute below. No script: each bar has a <title>, and the numbers are in a table too.
import type { Activity } from './data.ts';
import { count, plural } from './format.ts';

const W = 720;
const LEFT = 44;
const RIGHT = 8;
const PANEL = 70;
const TOP1 = 18;
const TOP2 = TOP1 + PANEL + 32;
const H = TOP2 + PANEL + 28;

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);

interface Series {
  values: number[];
  className: string;
  /** Stacked on top of these (same length), when given. */
  base?: number[];
}

function Panel(props: {
  top: number;
  label: string;
  max: number;
  series: Series[];
  start: number;
  bucketMs: number;
  unit: string[];
}) {
  const n = props.series[0]?.values.length ?? 0;
  const step = (W - LEFT - RIGHT) / Math.max(1, n);
  const bar = Math.max(1, step - 2);
  const scale = (v: number) => (props.max === 0 ? 0 : (v / props.max) * PANEL);
  const bottom = props.top + PANEL;
  return (
    <g>
      <text x={0} y={props.top - 6}>
        {props.label}
      </text>
      <text x={LEFT - 6} y={props.top + 10} text-anchor="end">
        {count(props.max)}
      </text>
      <text x={LEFT - 6} y={bottom} text-anchor="end">
        0
      </text>
      <line class="axis" x1={LEFT} x2={W - RIGHT} y1={bottom + 0.5} y2={bottom + 0.5} />
      {props.series.map((s, k) =>
        s.values.map((v, i) => {
          if (v === 0) return null;
          const below = s.base ? scale(s.base[i] ?? 0) : 0;
          const h = Math.max(1, scale(v));
          const minute = hhmm(props.start + i * props.bucketMs);
          return (
            <rect
              class={s.className}
              x={(LEFT + i * step + 1).toFixed(1)}
              y={(bottom - below - h).toFixed(1)}
              width={bar.toFixed(1)}
              height={h.toFixed(1)}
            >
              <title>{`${minute} UTC: ${plural(v, props.unit[k] ?? '')}`}</title>
            </rect>
          );
        }),
      )}
    </g>
  );
}

export function ActivityChart(props: { activity: Activity }) {
  const a = props.activity;
  const finished = a.done.map((d, i) => d + (a.dead[i] ?? 0));
  const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
  const totals = { received: sum(a.received), done: sum(a.done), dead: sum(a.dead) };
  const n = a.received.length;
  const step = (W - LEFT - RIGHT) / Math.max(1, n);
  const ticks = [0, 15, 30, 45, n - 1];
  const summary =
    `${plural(totals.received, 'delivery', 'deliveries')} received and ${count(totals.done)} done, ` +
    `${count(totals.dead)} dead in the last hour, per minute`;
  const rows = a.received
    .map((r, i) => ({
      minute: hhmm(a.start + i * a.bucketMs),
      received: r,
      done: a.done[i] ?? 0,
      dead: a.dead[i] ?? 0,
    }))
    .filter((row) => row.received + row.done + row.dead > 0);
  return (
    <figure class="chart">
      <svg
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-labelledby="chart-title chart-desc"
        xmlns="http://www.w3.org/2000/svg"
      >
        <title id="chart-title">Deliveries and handler outcomes, last hour</title>
        <desc id="chart-desc">{summary}</desc>
        <Panel
          top={TOP1}
          label="Received per minute"
          max={Math.max(0, ...a.received)}
          series={[{ values: a.received, className: 'received' }]}
          start={a.start}
          bucketMs={a.bucketMs}
          unit={['delivery']}
        />
        <Panel
          top={TOP2}
          label="Finished per minute"
          max={Math.max(0, ...finished)}
          series={[
            { values: a.done, className: 'done' },
            { values: a.dead, className: 'dead', base: a.done },
          ]}
          start={a.start}
          bucketMs={a.bucketMs}
          unit={['done', 'dead']}
        />
        {ticks.map((i) => (
          <text x={(LEFT + i * step + step / 2).toFixed(1)} y={H - 6} text-anchor="middle">
            {i === n - 1 ? 'now' : hhmm(a.start + i * a.bucketMs)}
          </text>
        ))}
      </svg>
      <ul class="legend">
        <li>
          <span class="key received" aria-hidden="true" />
          {plural(totals.received, 'delivery', 'deliveries')} received
        </li>
        <li>
          <span class="key done" aria-hidden="true" />
          {count(totals.done)} done
        </li>
        <li>
          <span class="key dead" aria-hidden="true" />
          {count(totals.dead)} dead
        </li>
      </ul>
      <figcaption>
        Times in UTC. Outcomes count events received since {hhmm(a.seenSince)} UTC.
        {a.truncated ? ` Drawn from the newest ${count(a.scanned)} records only: earlier minutes are incomplete.` : ''}
      </figcaption>
      {rows.length > 0 ? (
        <details>
          <summary>Per-minute numbers</summary>
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Minute (UTC)</th>
                  <th scope="col">Received</th>
                  <th scope="col">Done</th>
                  <th scope="col">Dead</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((row) => (
                  <tr>
                    <td>{row.minute}</td>
                    <td>{count(row.received)}</td>
                    <td>{count(row.done)}</td>
                    <td>{count(row.dead)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      ) : null}
    </figure>
  );
}
