// The console's stylesheet, served from its own URL so the Content-Security-Policy can forbid inline styles. Readable
// on a phone (one column, tables scroll sideways), visible keyboard focus, and a dark scheme when the system has one.
export const STYLESHEET = `
:root {
  color-scheme: light dark;
  --bg: #f7f7f8; --fg: #1c1d21; --muted: #5d6068; --card: #fff; --line: #d9dbe0; --link: #0b57d0;
  --pending: #8a5a00; --retrying: #b34700; --done: #1b7a3a; --dead: #b3261e; --focus: #0b57d0; --bar: #4c6ef5;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #141518; --fg: #e8e9ec; --muted: #a3a6ae; --card: #1d1f23; --line: #353840; --link: #8ab4f8;
    --pending: #f2c14e; --retrying: #ff9e5e; --done: #6ccf8e; --dead: #ff8a80; --focus: #8ab4f8; --bar: #8c9eff;
  }
}
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--fg); }
a { color: var(--link); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.skip { position: absolute; left: -9999px; }
.skip:focus { left: 1rem; top: 1rem; background: var(--card); padding: .5rem; z-index: 1; }
header.top { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1.5rem; padding: .75rem 1rem; background: var(--card); border-bottom: 1px solid var(--line); }
header.top .brand { font-weight: 600; }
header.top nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
header.top nav a[aria-current="page"] { font-weight: 600; text-decoration-thickness: 2px; }
header.top form { margin-left: auto; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem; margin-bottom: 1rem; }
.card > h2:first-child { margin-top: 0; }
.counts { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .75rem; list-style: none; padding: 0; margin: 0 0 1rem; }
.counts li { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem; }
.counts a { text-decoration: none; color: inherit; display: block; }
.counts .n { display: block; font-size: 1.6rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 0 .5rem; border-radius: 999px; border: 1px solid currentColor; font-size: .85rem; white-space: nowrap; }
.status-pending { color: var(--pending); } .status-retrying { color: var(--retrying); }
.status-done { color: var(--done); } .status-dead { color: var(--dead); }
.table-wrap { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .45rem .75rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .85rem; color: var(--muted); font-weight: 600; }
tbody tr:last-child td { border-bottom: 0; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9rem; overflow-wrap: anywhere; }
table.records td { white-space: nowrap; }
.muted { color: var(--muted); }
form.filters { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .75rem; align-items: end; }
label { display: block; font-size: .85rem; font-weight: 600; margin-bottom: .2rem; }
input, select, button { font: inherit; color: inherit; }
input, select { width: 100%; padding: .4rem .5rem; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); }
button, .button { display: inline-block; padding: .45rem .9rem; border-radius: 6px; border: 1px solid var(--line); background: var(--card); cursor: pointer; text-decoration: none; color: inherit; }
button.primary { background: var(--link); border-color: var(--link); color: #fff; }
@media (prefers-color-scheme: dark) { button.primary { color: #10131a; } }
button.danger { background: var(--dead); border-color: var(--dead); color: #fff; }
@media (prefers-color-scheme: dark) { button.danger { color: #10131a; } }
.actions { display: flex; flex-wrap: wrap; gap: .75rem; align-items: center; margin: 1rem 0; }
.actions form { margin: 0; }
nav.pager { display: flex; justify-content: space-between; margin: 1rem 0; }
.notice, .problem { border-radius: 8px; padding: .75rem 1rem; margin-bottom: 1rem; border: 1px solid; }
.notice { border-color: var(--done); } .problem { border-color: var(--dead); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .35rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); font-weight: 600; }
dl.facts dd { margin: 0; word-break: break-word; }
pre { margin: 0; padding: .75rem; font-size: .85rem; }
.scroll { overflow-x: auto; background: var(--bg); border: 1px solid var(--line); border-radius: 6px; }
.login { max-width: 24rem; margin: 10vh auto; }
.login input { margin-bottom: 1rem; }
figure.chart { margin: 0; }
figure.chart svg { width: 100%; height: auto; display: block; }
figure.chart figcaption { font-size: .85rem; color: var(--muted); margin-top: .25rem; }
.chart .axis { stroke: var(--line); stroke-width: 1; }
.chart text { fill: var(--muted); font-size: 11px; }
.chart .received { fill: var(--bar); }
.chart .done { fill: var(--done); }
.chart .dead { fill: var(--dead); }
.legend { display: flex; flex-wrap: wrap; gap: 1rem; list-style: none; padding: 0; margin: .5rem 0 0; font-size: .85rem; }
.legend .key { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; margin-right: .35rem; vertical-align: -1px; }
.legend .received { background: var(--bar); } .legend .done { background: var(--done); } .legend .dead { background: var(--dead); }
@media (max-width: 40rem) {
  main { padding: .75rem; }
  /* A list of records becomes one small card per record: label, value. */
  table.records thead { position: absolute; left: -9999px; }
  table.records tr { display: block; padding: .5rem .75rem; border-bottom: 1px solid var(--line); }
  table.records tbody tr:last-child { border-bottom: 0; }
  table.records td { display: block; border: 0; padding: .1rem 0; white-space: normal; }
  table.records td::before { content: attr(data-label); display: inline-block; min-width: 6.5rem; color: var(--muted); font: 600 .85rem system-ui, sans-serif; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dd { margin-bottom: .5rem; }
}
`;

/** A small mark for the browser tab (else the browser asks for /favicon.ico, outside the console). */
export const FAVICON =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#4c6ef5"/>' +
  '<path d="M9 8v16h14" fill="none" stroke="#fff" stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/></svg>';
