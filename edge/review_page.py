"""The pages a person uses on a session: the review page (/review) and the lab page's session panel.

Plain HTML, CSS and a little JavaScript, no external files (the device is offline). Both talk to the
daemon with fetch(): GET /session, POST /session/{start,stop,reset}, POST /cells/<id>/label. Bound
beyond loopback the daemon wants a token: the pages take it from ``?token=`` once, keep it in the
browser's localStorage, send it as ``Authorization: Bearer ...`` and ask for it on a 403.
"""
from __future__ import annotations

import html
import json

from .differential import NOT_A_CELL, UNCERTAIN, clinical_order
from .session_report import title

# the JavaScript both pages share: a POST with the token, asking for one when refused
_POST_JS = """
const TOKEN_KEY = 'scopelite-token';
(() => { const t = new URLSearchParams(location.search).get('token');
         if (t) localStorage.setItem(TOKEN_KEY, t); })();
async function post(path, body, retried) {
  const headers = {'Content-Type': 'application/json'};
  const tok = localStorage.getItem(TOKEN_KEY);
  if (tok) headers['Authorization'] = 'Bearer ' + tok;
  const r = await fetch(path, {method: 'POST', headers, body: JSON.stringify(body || {})});
  if (r.status === 403 && !retried) {
    const t = prompt('This daemon wants its token (printed by celledge watch or review when it started):');
    if (t) { localStorage.setItem(TOKEN_KEY, t.trim()); return post(path, body, true); }
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || ('HTTP ' + r.status));
  return data;
}
"""


def keys_for(labels) -> list[dict]:
    """The review keys: 1-8 the classes in clinical order, 9 uncertain, 0 not a cell."""
    out = [{"key": str(i + 1), "label": lab, "title": title(lab)} for i, lab in enumerate(clinical_order(labels)[:8])]
    out += [{"key": "9", "label": UNCERTAIN, "title": "Uncertain"}, {"key": "0", "label": NOT_A_CELL,
                                                                      "title": "Not a cell"}]
    return out


def _script_json(obj) -> str:
    return json.dumps(obj).replace("</", "<\\/")


def _disk_line(disk: dict | None) -> str:
    """A warning when the sessions' disk runs low or full (``diskspace.DiskRoom.info``); nothing otherwise."""
    if not disk or disk.get("state") not in ("low", "full"):
        return ""
    what = ("<b>The sessions disk is full</b>: cells are counted without their pictures"
            if disk["state"] == "full" else "<b>The sessions disk is running out of room</b>")
    return (f'<p id="disk" class="bad">{what} ({disk["free_mb"]} MB free). Export the sessions reviewed '
            '(celledge export) and delete old ones (docs/differential.md).</p>')


def _unrecorded_line(unrecorded: dict | None) -> str:
    """A warning when the session cannot be written (``Sessions.summary``'s ``unrecorded``); nothing otherwise."""
    if not unrecorded:
        return ""
    if unrecorded.get("error"):
        return (f'<p id="unrecorded" class="bad"><b>This session cannot be written</b> '
                f'({html.escape(unrecorded["error"])}): cells are counted but not recorded '
                f'({unrecorded["cells"]} so far). Check the disk.</p>')
    return (f'<p id="unrecorded" class="bad">{unrecorded["cells"]} cells counted in this run were not recorded '
            'in its session (the disk failed for a while).</p>')


def lab_panel(summary: dict, frames_come: bool = True) -> str:
    """The lab page's session controls: which session, its state and progress, start/stop/reset, links.
    ``frames_come``: the source gives frames (an open session with no camera said "counting": a visual review)."""
    d = summary["differential"]
    counting = "open: counting" if frames_come else "open: waiting for frames (the count goes on when they come)"
    state = counting if summary["state"] == "open" else f'closed ({summary.get("reason") or "stopped"})'
    n, done = summary["cells_total"], summary["reviewed"]
    return f"""<div id="session"><h2>Session {html.escape(summary["id"])}</h2>
<p id="session-state">{html.escape(state)} · {d["white_total"]} white cells{
        f' of {summary["target"]}' if summary.get("target") else ''} · {n} cells, {done} reviewed</p>
<p><button id="start" onclick="act('start')"{" disabled" if summary["state"] == "open" else ""}>Start</button>
<button id="stop" onclick="act('stop')"{" disabled" if summary["state"] != "open" else ""}>Stop</button>
<button id="reset" onclick="act('reset')" title="discard this count and start again">Reset</button>
· <a href="/review">Review cells</a> · <a href="/session/report.html">Report</a>
<span id="session-error" class="bad"></span></p>{_disk_line(summary.get("disk"))}{
        _unrecorded_line(summary.get("unrecorded"))}</div>
<script>{_POST_JS}
async function act(what) {{
  if (what === 'reset' && !confirm('Discard this count and start again?')) return;
  try {{ await post('/session/' + what); location.reload(); }}
  catch (e) {{ document.getElementById('session-error').textContent = e.message; }}
}}
</script>"""


def review_page(labels, lab_page: bool = True) -> str:
    """The review page: cells grouped by class (uncertain first, least sure first), keys and clicks to label.
    ``lab_page``: a daemon's live page is beside it (not under ``celledge review``, where "/" is this page)."""
    keys = keys_for(labels)
    legend = " ".join(f"<kbd>{k['key']}</kbd>&nbsp;{html.escape(k['title'])}" for k in keys)
    buttons = "".join(f'<button data-label="{k["label"]}">{k["key"]} {html.escape(k["title"])}</button>'
                      for k in keys)
    links = ('<a href="/">Lab page</a> · ' if lab_page else "") + '<a href="/session/report.html">Report</a>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>scopelite review</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;margin:0 1em 9em;color:#222}}h1{{font-size:1.3em}}h2{{font-size:1.05em;margin:.8em 0 .3em}}
.grid{{display:flex;flex-wrap:wrap;gap:6px}}.cell{{width:104px;font-size:11px;text-align:center;border:3px solid
transparent;border-radius:4px;cursor:pointer;padding:2px}}.cell img{{width:96px;height:96px;display:block;margin:auto;
background:#eee}}.cell.sel{{border-color:#1f6feb}}.cell.done{{opacity:.55}}.ok{{color:#1a7f37}}.low{{color:#b42318}}
#bar{{position:fixed;left:0;right:0;bottom:0;background:#f6f8fa;border-top:1px solid #ccc;padding:.5em 1em}}
#bar button{{margin:2px}}kbd{{border:1px solid #999;border-radius:3px;padding:0 4px;background:#fff}}
#msg{{color:#b42318}}.note{{color:#666}}</style></head><body>
<h1>Review · <span id="title">session</span></h1>
<p class="note" id="summary"></p><p class="low" id="stale"></p>
<p class="note">Click a cell or move with <kbd>←</kbd><kbd>→</kbd><kbd>↑</kbd><kbd>↓</kbd>; <kbd>Enter</kbd> or
<kbd>c</kbd> confirms its label; {legend}: relabel it; <kbd>r</kbd> redraws the page with the newest cells. {links}</p>
<div id="groups"></div>
<div id="bar"><b id="selected">no cell selected</b> <button data-label="confirm">Enter · confirm</button>{buttons}
<span id="msg"></span></div>
<script>{_POST_JS}
const KEYS = {_script_json(keys)};
const TITLES = Object.fromEntries(KEYS.map(k => [k.label, k.title]));
const ORDER = ['{UNCERTAIN}', ...KEYS.map(k => k.label).filter(l => l !== '{UNCERTAIN}' && l !== '{NOT_A_CELL}'),
               '{NOT_A_CELL}'];
let cells = [], order = [], sel = null;

function groupsOf(list) {{
  const g = {{}};
  for (const c of list) (g[c.final] = g[c.final] || []).push(c);
  const names = ORDER.filter(n => g[n]).concat(Object.keys(g).filter(n => !ORDER.includes(n)).sort());
  return names.map(n => [n, g[n].sort((a, b) => a.score - b.score || a.id - b.id)]);
}}

let sid = null, shown = {{}};  // the session and labels on screen: a label is refused if either changed since
function render(data) {{
  cells = data.cells;
  sid = data.id;
  shown = {{}};
  for (const c of cells) shown[c.id] = c.final;
  document.getElementById('title').textContent = 'session ' + data.id + (data.state === 'open' ? ' (open)' : ' (closed)');
  document.getElementById('summary').textContent = data.cells_total + ' cells, ' + data.reviewed + ' reviewed · '
    + data.differential.white_total + ' white cells' + (data.target ? ' of ' + data.target : '');
  const root = document.getElementById('groups');
  root.textContent = '';
  order = [];
  seen = {{id: data.id, cells: data.cells_total, state: data.state}};
  document.getElementById('stale').textContent = '';
  if (!cells.length) root.innerHTML = '<p class="note" id="empty">No cells counted in this session yet.</p>';
  for (const [name, list] of groupsOf(cells)) {{
    const h = document.createElement('h2');
    h.textContent = (TITLES[name] || name) + ' (' + list.length + ')';
    const grid = document.createElement('div');
    grid.className = 'grid';
    for (const c of list) {{
      order.push(c.id);
      const d = document.createElement('div');
      d.className = 'cell' + (c.reviewed !== null ? ' done' : '');
      d.id = 'cell-' + c.id;
      d.dataset.id = c.id;
      const was = c.reviewed !== null && c.reviewed !== c.label ? ' (model: ' + (TITLES[c.label] || c.label) + ')' : '';
      d.innerHTML = (c.crop ? '<img alt="" src="/cells/' + c.id + '.png">' : '<img alt="no crop">')
        + '<span>#' + c.id + ' <span class="'
        + (c.score < 0.7 ? 'low' : '') + '">' + c.score.toFixed(2) + '</span>'
        + (c.reviewed !== null ? ' <span class="ok">✓</span>' : '') + '</span><br><span class="was"></span>';
      d.querySelector('.was').textContent = was + (c.why ? ' ' + c.why : '');  // why uncertain: platelet-sized
      d.onclick = () => select(c.id);
      grid.appendChild(d);
    }}
    root.append(h, grid);
  }}
  if (sel === null || !order.includes(sel)) sel = order.length ? order[0] : null;
  select(sel);
}}

function select(id) {{
  document.querySelectorAll('.cell.sel').forEach(e => e.classList.remove('sel'));
  sel = id;
  const el = id === null ? null : document.getElementById('cell-' + id);
  const c = cells.find(x => x.id === id);
  document.getElementById('selected').textContent = c ? '#' + c.id + ': ' + (TITLES[c.final] || c.final)
    + (c.final === '{UNCERTAIN}'
       ? ' (best guess ' + (TITLES[c.best] || c.best) + (c.why ? '; ' + c.why : '') + ')' : '')
    + ' · score ' + c.score.toFixed(2) + (c.reviewed !== null ? ' · reviewed' : '') : 'no cell selected';
  if (el) {{ el.classList.add('sel'); el.scrollIntoView({{block: 'nearest'}}); }}
}}

function move(step) {{
  if (!order.length) return;
  const i = order.indexOf(sel);
  select(order[Math.min(Math.max(i + step, 0), order.length - 1)]);
}}

let pending = 0;  // requests in flight (the browser test waits for 0)
async function label(value) {{
  if (sel === null) return;
  // on to the next cell not yet reviewed in the page's order (a reviewed one regrouped just after this one was
  // selected, and its next key relabelled it unseen); none after it: the next cell, as before
  const id = sel, i = order.indexOf(id);
  const open = order.slice(i + 1).find(o => (cells.find(x => x.id === o) || {{}}).reviewed === null);
  const next = open !== undefined ? open : (order[i + 1] !== undefined ? order[i + 1] : id);
  pending++;
  try {{
    await post('/cells/' + id + '/label', {{label: value, session: sid, was: shown[id]}});
    document.getElementById('msg').textContent = '';
    if (sel === id) sel = next;  // on to the next cell, unless the person moved meanwhile
    await load();
  }} catch (e) {{ document.getElementById('msg').textContent = e.message; }}
  finally {{ pending--; }}
}}

// the page is not redrawn under a person's eyes: every 15 s it looks whether the session moved on (new cells, closed,
// another session) and says so; r (or the link) redraws it (a visual review found it showing 0 cells, "open", while
// the session had 11 and was closed)
let seen = null;
async function lookForNews() {{
  if (pending || seen === null) return;
  try {{
    const r = await fetch('/session/brief', {{cache: 'no-store'}});  // not every cell: 1.3 MB at 4,000 cells
    if (!r.ok) return;
    const d = await r.json();
    const news = [];
    if (d.id !== seen.id) news.push('another session (' + d.id + ')');
    else {{
      if (d.cells_total !== seen.cells) news.push((d.cells_total - seen.cells) + ' new cells');
      if (d.state !== seen.state) news.push('the session is ' + (d.state === 'open' ? 'open' : 'closed'));
    }}
    document.getElementById('stale').innerHTML = news.length
      ? 'Since this page was drawn: ' + news.join(', ') + '. <a href="#" onclick="load(); return false">Redraw</a> '
        + '(<kbd>r</kbd>)' : '';
  }} catch (e) {{}}
}}
setInterval(lookForNews, 15000);

async function load() {{
  const r = await fetch('/session', {{cache: 'no-store'}});
  if (r.ok) render(await r.json());
  else document.getElementById('msg').textContent = 'no session (HTTP ' + r.status + ')';
}}

document.addEventListener('keydown', e => {{
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = KEYS.find(x => x.key === e.key);
  if (k) {{ label(k.label); e.preventDefault(); }}
  else if (e.key === 'Enter' || e.key === 'c') {{ label('confirm'); e.preventDefault(); }}
  else if (e.key === 'ArrowRight' || e.key === 'ArrowDown') {{ move(1); e.preventDefault(); }}
  else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') {{ move(-1); e.preventDefault(); }}
  else if (e.key === 'r') {{ load(); e.preventDefault(); }}
}});
document.querySelectorAll('#bar button').forEach(b => b.onclick = () => {{ b.blur(); label(b.dataset.label); }});
load();
</script></body></html>"""
