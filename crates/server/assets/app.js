// The pmargin risk dashboard: views over the service's API, live over its stream.

import { api, getKey, setKey, clearKey, takeKeyFromFragment, health, openStream } from './api.js';
import { VirtualTable } from './table.js';
import { heatmap, stepChart, statusBar, compact } from './charts.js';

const $ = (id) => document.getElementById(id);
const STATUSES = ['healthy', 'restricted', 'liquidatable', 'bankrupt'];
const STAFF = ['admin', 'risk_committee', 'read_only'];
const FEED_TYPES = ['liquidation_fill', 'close_out', 'deleveraged', 'liquidations_suspended'];
const BACKLOG = 2000;

const S = {
  summary: null,
  rows: [],
  byId: new Map(),
  filtered: [],
  sort: { key: 'health', dir: 1 },
  oracle: null,
  params: null,
  feed: [],
  fundPast: [],
  fundSeen: [],
  fundLive: [],
  fundAnchor: null,
  stream: null,
  live: false,
  seq: -1,
  view: null,
  account: null,
  accountLoadedSeq: -1,
  spots: {},
  whatIf: null,
  table: null,
  marks: { start: performance.now() },
};
// For the browser tests: timings and state.
window.__pmargin = { marks: S.marks, state: S };

// ----- formatting -----

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const dec2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
function money(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return Math.abs(x) >= 100 ? int.format(x) : dec2.format(x);
}
function num(x, digits = 4) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  if (x !== 0 && Math.abs(x) < 10 ** -digits) return x.toExponential(2);
  return x.toLocaleString('en-US', { maximumFractionDigits: digits });
}
const pctOf = (x) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(1)}%`);
// capital_efficiency is isolated IM / portfolio IM (MODEL.md section 7): the share of the
// isolated requirement that portfolio margin saves is 1 - 1/efficiency.
function versusIsolated(efficiency) {
  if (!Number.isFinite(efficiency) || efficiency <= 0) return '';
  const saved = 1 - 1 / efficiency;
  return saved >= 0 ? `saves ${pctOf(saved)} vs isolated` : `${pctOf(-saved)} more than isolated`;
}
function signedPct(x) {
  if (!Number.isFinite(x)) return '–';
  const v = Math.round(x * 1000) / 10;
  return `${v > 0 ? '+' : v < 0 ? '−' : ''}${Math.abs(v)}%`;
}
const ratio = (r) => (r.mm > 0 ? r.mb / r.mm : Infinity);
const fmtHealth = (h) => (!Number.isFinite(h) ? '—' : h >= 1000 ? compact(h) : dec2.format(h));
function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** Builds an element: el('td', {class: 'num'}, 'text', child...). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces an element's children, skipping null, undefined and false. */
function put(target, ...children) {
  target.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function badge(status) {
  return el('span', { class: `badge st-${status}` }, status);
}

/** A table: columns [{label, num}], rows of cells (string, Node, or {v, class, data}). */
function table(columns, rows, attrs = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', { class: c.num ? 'num' : c.class }, c.label)));
  const body = rows.map((r) =>
    el(
      'tr',
      r.attrs || {},
      (r.cells || r).map((cell, i) => {
        const base = columns[i] && columns[i].num ? 'num' : columns[i] && columns[i].class;
        if (cell && typeof cell === 'object' && !(cell instanceof Node)) {
          return el('td', { class: [base, cell.class].filter(Boolean).join(' '), dataset: cell.data }, cell.v);
        }
        return el('td', { class: base }, cell);
      }),
    ),
  );
  return el('div', { class: 'tbl-wrap' }, el('table', { class: 'tbl', ...attrs }, el('thead', {}, head), el('tbody', {}, body)));
}

function toast(text, kind = 'info') {
  const t = $('toast');
  t.textContent = text;
  t.className = `toast ${kind}`;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    t.hidden = true;
  }, 4000);
}

// ----- data -----

async function loadSummary() {
  const s = await api('/v1/dashboard/summary');
  S.summary = s;
  S.seq = s.sequence;
  const rows = new Array(s.rows.length);
  const byId = new Map();
  for (let i = 0; i < s.rows.length; i += 1) {
    const [id, status, equity, mb, im, mm, und] = s.rows[i];
    const r = { id, status, equity, mb, im, mm, und: und.map((u) => s.underlyings[u]) };
    r.health = ratio(r);
    rows[i] = r;
    byId.set(id, r);
  }
  S.rows = rows;
  S.byId = byId;
  if (!S.fundAnchor) S.fundAnchor = { seq: s.sequence, fund: s.insurance_fund };
  const last = S.fundSeen[S.fundSeen.length - 1];
  if (!last || last.y !== s.insurance_fund || last.x !== s.sequence) {
    S.fundSeen.push({ x: s.sequence, y: s.insurance_fund });
    if (S.fundSeen.length > 5000) S.fundSeen.splice(0, S.fundSeen.length - 5000);
  }
  return s;
}

async function loadOracle() {
  S.oracle = await api('/v1/oracle');
}

const can = {
  governance: () => S.summary && STAFF.includes(S.summary.role),
  // Fills come from the venue (issue 15): a trader checks a trade with a what-if but cannot
  // place it; an admin or venue key places one, naming the counterparty.
  trade: () => S.summary && ['admin', 'venue'].includes(S.summary.role),
};

// ----- live updates -----

let refreshTimer = 0;
let refreshing = false;
/** Re-reads the summary (and what the open view shows) soon, at most a few times a second. */
function scheduleRefresh(delay = 250) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = 0;
    if (refreshing) return scheduleRefresh(delay);
    refreshing = true;
    try {
      await Promise.all([loadSummary(), loadOracle()]);
      renderChrome();
      renderView(false);
    } catch (e) {
      handleError(e);
    } finally {
      refreshing = false;
    }
  }, delay);
}

function onStream(m) {
  if (m.type === 'error') {
    toast(`Stream: ${m.message}`, 'error');
    return;
  }
  // Fund history before the first read: undo liquidation flows from the backlog.
  const anchor = S.fundAnchor;
  const delta = m.type === 'liquidation_fill' ? m.penalty || 0 : m.type === 'close_out' ? -(m.insurance_paid || 0) : 0;
  if (anchor && delta) (m.event_seq <= anchor.seq ? S.fundPast : S.fundLive).push({ x: m.event_seq, delta });
  S.feed.push(m);
  if (S.feed.length > 5000) S.feed.splice(0, S.feed.length - 5000);
  if (m.type === 'margin_change') {
    const r = S.byId.get(m.account);
    if (r && (!anchor || m.event_seq > anchor.seq)) {
      Object.assign(r, { status: m.to, mb: m.margin_balance, im: m.initial_margin, mm: m.maintenance_margin });
      r.health = ratio(r);
    }
  }
  if (S.view === 'liquidations') renderFeedSoon();
  scheduleRefresh(400);
}

function setLive(on) {
  S.live = on;
  const l = $('live');
  l.textContent = on ? 'live' : 'reconnecting';
  l.classList.toggle('on', on);
}

async function poll() {
  try {
    const h = await health();
    if (h.sequence !== S.seq) scheduleRefresh(0);
  } catch {
    setLive(false);
  }
}

// ----- routing -----

function parseRoute() {
  const h = location.hash.replace(/^#/, '') || '/overview';
  const parts = h.split('/').filter(Boolean);
  if (parts[0] === 'account' && parts[1]) return { view: 'account', id: decodeURIComponent(parts.slice(1).join('/')) };
  if (['overview', 'accounts', 'liquidations', 'params'].includes(parts[0])) return { view: parts[0] };
  return { view: 'overview' };
}

function show(view) {
  for (const s of document.querySelectorAll('main > .view')) s.hidden = s.id !== `view-${view}`;
  for (const a of $('tabs').querySelectorAll('a')) {
    const active = a.dataset.view === view || (view === 'account' && a.dataset.view === 'accounts');
    a.classList.toggle('active', active);
    if (active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function route() {
  const r = parseRoute();
  const changed = S.view !== r.view || (r.view === 'account' && S.account !== r.id);
  S.view = r.view;
  if (r.view === 'account') {
    if (S.account !== r.id) {
      S.account = r.id;
      S.accountLoadedSeq = -1;
      S.whatIf = null;
      put($('whatif-result'));
      $('wi-trade').disabled = true;
    }
  }
  show(r.view);
  document.title = `pmargin · ${r.view === 'account' ? r.id : r.view}`;
  renderView(changed);
  if (changed) window.scrollTo(0, 0);
}

function renderView(first) {
  switch (S.view) {
    case 'overview':
      return renderOverview();
    case 'accounts':
      return renderAccounts();
    case 'account':
      return loadAccount(first);
    case 'liquidations':
      return renderLiquidations();
    case 'params':
      return first ? renderParams() : undefined;
    default:
      return undefined;
  }
}

function renderChrome() {
  const s = S.summary;
  const who = $('who');
  who.hidden = false;
  who.textContent = `${s.role.replace('_', ' ')} · ${s.key_id}`;
  who.title = can.trade() ? 'This key may place trades through the API' : 'This key may not place trades: actions are hidden';
  who.className = `who role-${s.role}`;
}

// ----- overview -----

function kpi(label, value, sub, attrs = {}) {
  return el('div', { class: 'kpi', ...attrs }, el('div', { class: 'kpi-label' }, label), el('div', { class: 'kpi-value' }, value), sub ? el('div', { class: 'kpi-sub' }, sub) : null);
}

function renderOverview() {
  const s = S.summary;
  const n = s.rows.length;
  const t = s.totals;
  const atRisk = (s.counts.liquidatable || 0) + (s.counts.bankrupt || 0);
  put($('kpis'), 
    kpi('Accounts', int.format(n), `${int.format(s.counts.healthy || 0)} healthy · ${int.format(s.counts.restricted || 0)} restricted`, { dataset: { kpi: 'accounts' } }),
    kpi('Below maintenance', int.format(atRisk), `${int.format(s.counts.liquidatable || 0)} liquidatable · ${int.format(s.counts.bankrupt || 0)} bankrupt`, {
      dataset: { kpi: 'at-risk' },
      class: `kpi${atRisk ? ' alert' : ''}`,
    }),
    kpi('Initial margin', compact(t.initial_margin), `maintenance ${compact(t.maintenance_margin)}`, { dataset: { kpi: 'initial-margin' } }),
    kpi('Collateral', compact(t.margin_balance), `margin balance · equity ${compact(t.equity)}`, { dataset: { kpi: 'collateral' } }),
    kpi('Coverage', t.maintenance_margin > 0 ? `${dec2.format(t.margin_balance / t.maintenance_margin)}×` : '—', 'collateral ÷ maintenance', { dataset: { kpi: 'coverage' } }),
    kpi('Insurance fund', compact(s.insurance_fund), s.settlement_asset, { dataset: { kpi: 'insurance-fund' } }),
  );
  put($('status-bar'), statusBar(s.counts, STATUSES));
  put($('status-legend'), 
    ...STATUSES.map((k) =>
      el('a', { href: `#/accounts`, class: 'legend-item', onclick: () => setFilter('status', k) }, el('i', { class: `dot st-${k}` }), `${k} `, el('b', {}, int.format(s.counts[k] || 0))),
    ),
  );
  put($('fund-mini'), stepChart(fundSeries(), { width: $('fund-mini').clientWidth, height: 150, xLabel: 'event', title: 'insurance fund', fmt: money }));
  renderOracle();
}

function renderOracle() {
  const o = S.oracle;
  const box = $('oracle');
  if (!o) return;
  const suspended = new Set(o.liquidations_suspended || []);
  const names = new Set([...(S.summary ? S.summary.underlyings : []), ...o.indices.map((i) => i.underlying)]);
  const byName = new Map(o.indices.map((i) => [i.underlying, i]));
  $('oracle-note').textContent = o.indices.length ? '' : 'No venue quotes received yet: marks are the genesis market.';
  put(box, 
    ...[...names].map((u) => {
      const i = byName.get(u);
      const healthState = i ? i.health : 'no_quotes';
      const sources = i ? i.sources : [];
      return el(
        'div',
        { class: 'oracle-card', dataset: { underlying: u, health: healthState } },
        el('div', { class: 'oracle-head' }, el('b', {}, u), el('span', { class: `badge h-${healthState}` }, healthState.replace('_', ' ')), suspended.has(u) ? el('span', { class: 'badge st-liquidatable' }, 'liquidations suspended') : null),
        el('div', { class: 'oracle-price' }, i && i.price ? money(i.price) : '—', el('span', { class: 'muted small' }, i && i.stable_price ? ` stable ${money(i.stable_price)}` : '')),
        sources.length
          ? table(
              [{ label: 'Source' }, { label: 'Price', num: true }, { label: 'Quoted', num: true }, { label: 'Status' }],
              sources.map((q) => [q.source, money(q.price), ago(q.ts_ms), { v: el('span', { class: `badge q-${q.status}` }, q.status) }]),
              { class: 'tbl compact' },
            )
          : el('p', { class: 'muted small' }, 'No quotes'),
      );
    }),
  );
  // Venue feeds (serve --feeds): connection, freshness, lag and error counts of each.
  if (o.feeds && o.feeds.length) {
    const state = (f) => (!f.connected ? 'disconnected' : f.stale ? 'stale' : 'fresh');
    box.append(
      el(
        'div',
        { class: 'oracle-card', dataset: { feeds: 'true' } },
        el('div', { class: 'oracle-head' }, el('b', {}, 'Feeds')),
        table(
          [{ label: 'Feed' }, { label: 'Venue' }, { label: 'State' }, { label: 'Last message', num: true }, { label: 'Lag ms', num: true }, { label: 'Messages', num: true }, { label: 'Malformed / late / refused', num: true }],
          o.feeds.map((f) => [f.name, f.venue, { v: el('span', { class: `badge h-${state(f)}` }, state(f)) }, f.last_message_ms ? ago(f.last_message_ms) : '—', String(f.lag_ms), String(f.messages), `${f.malformed} / ${f.out_of_order} / ${f.rejected}`]),
          { class: 'tbl compact' },
        ),
      ),
    );
  }
}

// ----- accounts table -----

const COLUMNS = [
  { key: 'id', label: 'Account', cell: (r) => [r.id, 'id'] },
  { key: 'status', label: 'Status', cell: (r) => [r.status, `st st-${r.status}`] },
  { key: 'health', label: 'Health', short: 'Hlth', numeric: true, cell: (r) => [fmtHealth(r.health), healthClass(r.health)] },
  { key: 'mb', label: 'Margin balance', short: 'Balance', numeric: true, cell: (r) => [money(r.mb)] },
  { key: 'im', label: 'Initial margin', numeric: true, narrow: false, cell: (r) => [money(r.im)] },
  { key: 'mm', label: 'Maintenance', numeric: true, narrow: false, cell: (r) => [money(r.mm)] },
  { key: 'equity', label: 'Equity', numeric: true, narrow: false, cell: (r) => [money(r.equity)] },
  { key: 'und', label: 'Underlyings', narrow: false, cell: (r) => [r.und.join(' ')] },
];

function healthClass(h) {
  if (!Number.isFinite(h)) return 'h-none';
  if (h < 1) return 'h-bad';
  if (h < 1.25) return 'h-warn';
  return 'h-ok';
}

const filters = { search: '', status: '', health: '', underlying: '' };

function setFilter(name, value) {
  filters[name] = value;
  const input = $(`f-${name}`);
  if (input) input.value = value;
}

function sortValue(r, key) {
  switch (key) {
    case 'status':
      return STATUSES.indexOf(r.status);
    case 'und':
      return r.und.join(' ');
    default:
      return r[key];
  }
}

function applyFilters() {
  const q = filters.search.trim().toLowerCase();
  const limit = filters.health ? Number(filters.health) : Infinity;
  const rows = S.rows.filter(
    (r) =>
      (!filters.status || r.status === filters.status) &&
      (!filters.underlying || r.und.includes(filters.underlying)) &&
      (!q || r.id.toLowerCase().includes(q)) &&
      (limit === Infinity || r.health < limit),
  );
  const { key, dir } = S.sort;
  rows.sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    if (x === y) return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    if (typeof x === 'string') return x < y ? -dir : dir;
    return x < y ? -dir : dir;
  });
  S.filtered = rows;
  return rows;
}

function renderAccounts() {
  if (!S.table) {
    S.table = new VirtualTable($('accounts-table'), {
      columns: COLUMNS,
      rowHeight: 36,
      href: (r) => `#/account/${encodeURIComponent(r.id)}`,
      id: (r) => r.id,
      onSort: (key) => {
        S.sort = { key, dir: S.sort.key === key ? -S.sort.dir : key === 'id' || key === 'und' ? 1 : key === 'health' ? 1 : -1 };
        S.table.setSort(S.sort.key, S.sort.dir);
        renderAccounts();
      },
    });
    S.table.setSort(S.sort.key, S.sort.dir);
    const sel = $('f-underlying');
    for (const u of S.summary.underlyings) sel.append(el('option', { value: u }, u));
    sel.value = filters.underlying;
  }
  const rows = applyFilters();
  S.table.setRows(rows);
  $('f-count').textContent = `${int.format(rows.length)} of ${int.format(S.rows.length)} accounts`;
  if (!S.marks.firstRows && rows.length) {
    requestAnimationFrame(() =>
      setTimeout(() => {
        if (!S.marks.firstRows) S.marks.firstRows = performance.now();
      }, 0),
    );
  }
}

// ----- one account -----

let accountTimer = 0;
/** Loads the open account; while it stays open, again when the book moves (at most every 2 s). */
async function loadAccount(first) {
  const id = S.account;
  if (!first) {
    if (S.accountLoadedSeq === S.seq || accountTimer) return;
    accountTimer = setTimeout(() => {
      accountTimer = 0;
      if (S.view === 'account' && S.account === id) loadAccount(true);
    }, 2000);
    return;
  }
  $('acct-id').textContent = id;
  $('acct-error').hidden = true;
  const seq = S.seq;
  const enc = encodeURIComponent(id);
  try {
    const [report, scen, pos] = await Promise.all([
      api(`/v1/accounts/${enc}`),
      api(`/v1/accounts/${enc}/scenarios`),
      api(`/v1/dashboard/accounts/${enc}/positions`),
    ]);
    if (S.account !== id) return;
    S.accountLoadedSeq = seq;
    renderAccount(report, scen, pos);
  } catch (e) {
    if (S.account !== id) return;
    $('acct-error').textContent = e.status === 404 ? `No account “${id}”.` : e.message;
    $('acct-error').hidden = false;
  }
}

function renderAccount(report, scen, pos) {
  S.spots = pos.spots || {};
  const a = report.account;
  const eng = report.engine;
  const status = eng.status || (a && a.status);
  const st = $('acct-status');
  st.className = `badge st-${status}`;
  st.textContent = status;
  $('acct-seq').textContent = `as of event ${report.sequence} · parameters v${report.params_version}`;
  const h = eng.maintenance_margin > 0 ? eng.margin_balance / eng.maintenance_margin : Infinity;
  put($('acct-kpis'), 
    kpi('Margin balance', money(eng.margin_balance), `equity ${money(eng.equity)}`),
    kpi('Initial margin', money(eng.initial_margin), a ? `isolated ${money(a.standard_initial_margin)}` : ''),
    kpi('Maintenance margin', money(eng.maintenance_margin), ''),
    kpi('Health', fmtHealth(h), 'margin balance ÷ maintenance', { class: `kpi ${healthClass(h)}` }),
    kpi('Excess over initial', money(eng.margin_balance - eng.initial_margin), versusIsolated(a && a.capital_efficiency)),
  );
  if (a) {
    renderRequirement(a);
    renderLiquidation(a);
    put($('acct-greeks'), 
      table(
        [{ label: 'Underlying' }, { label: 'Delta', num: true }, { label: 'Gamma', num: true }, { label: 'Vega (1 pt)', num: true }, { label: 'Theta (1 d)', num: true }],
        Object.entries(a.greeks).map(([u, g]) => [u, num(g.delta), num(g.gamma, 6), money(g.vega), money(g.theta)]),
      ),
    );
  }
  renderHeatmaps(scen.table);
  renderPositions(pos);
}

function renderRequirement(a) {
  const parts = [
    ['Grid (scanning) risk', a.grid_risk, 'grid'],
    ['Statistical risk (ES)', a.statistical_risk, 'statistical'],
    ['Short option minimum', a.short_option_minimum, 'minimum'],
  ];
  const top = Math.max(...parts.map((p) => p[1]));
  const max = Math.max(1e-9, top + a.addons);
  const rows = parts.map(([label, v, key]) => {
    const bar = el('div', { class: 'bar' }, el('i', { class: v === top && v > 0 ? 'binding' : '' }));
    bar.firstChild.style.width = `${Math.max(0, (v / max) * 100)}%`;
    return el('div', { class: 'req-row', dataset: { part: key } }, el('span', {}, label, v === top && v > 0 ? el('em', {}, ' binding') : null), bar, el('b', { class: 'num' }, money(v)));
  });
  const addBar = el('div', { class: 'bar' }, el('i', {}));
  addBar.firstChild.style.width = `${(a.addons / max) * 100}%`;
  rows.push(el('div', { class: 'req-row', dataset: { part: 'addons' } }, el('span', {}, 'Add-ons'), addBar, el('b', { class: 'num' }, money(a.addons))));
  // Each contingency add-on of MODEL.md section 11 apart.
  const kinds = [['option', 'short options'], ['basis', 'basis / calendar'], ['oracle', 'oracle confidence'], ['liquidity', 'liquidity (net delta)']];
  for (const [key, label] of a.addon_breakdown ? kinds : []) {
    const v = a.addon_breakdown[key] || 0;
    const bar = el('div', { class: 'bar' }, el('i', {}));
    bar.firstChild.style.width = `${(v / max) * 100}%`;
    rows.push(el('div', { class: 'req-row sub', dataset: { part: `addon-${key}` } }, el('span', { class: 'muted' }, `· ${label}`), bar, el('b', { class: 'num' }, money(v))));
  }
  const scanning = Object.entries(a.scanning_risk || {});
  put($('acct-req'), 
    ...rows,
    el('div', { class: 'req-total' }, el('span', {}, 'Initial margin = max(grid, statistical, minimum) + add-ons'), el('b', { class: 'num' }, money(a.initial_margin))),
    el('div', { class: 'req-total muted' }, el('span', {}, 'Maintenance margin'), el('b', { class: 'num' }, money(a.maintenance_margin))),
    scanning.length ? el('p', { class: 'muted small' }, `Scanning risk by underlying: ${scanning.map(([u, v]) => `${u} ${money(v)}`).join(' · ')}. Worst scenario: ${a.worst_scenario || '—'}. VaR ${money(a.var)}, ES ${money(a.es)}.`) : null,
  );
}

function renderLiquidation(a) {
  const prices = Object.entries(a.liquidation_prices || {});
  const spot = (u) => S.spots[u] || null;
  put($('acct-liq'), 
    prices.length
      ? table(
          [{ label: 'Underlying' }, { label: 'Index', num: true }, { label: 'Down to', num: true }, { label: 'Up to', num: true }],
          prices.map(([u, p]) => {
            const s = spot(u);
            const dist = (x) => (s && x ? ` (${signedPct(x / s - 1)})` : '');
            return [u, s ? money(s) : '—', p.down ? `${money(p.down)}${dist(p.down)}` : 'none', p.up ? `${money(p.up)}${dist(p.up)}` : 'none'];
          }),
        )
      : el('p', { class: 'muted' }, a.status === 'liquidatable' || a.status === 'bankrupt' ? 'Already below maintenance.' : 'No price exposure.'),
  );
}

function renderHeatmaps(t) {
  const box = $('acct-heatmaps');
  const singles = new Map();
  for (const s of t.scenarios) {
    if (s.family !== 'single') continue;
    if (!singles.has(s.underlying)) singles.set(s.underlying, []);
    singles.get(s.underlying).push(s);
  }
  // Extended moves (MODEL.md section 10) are absolute fractions of the price: in the single
  // heatmaps they are rows like any other; the tandem ones get a heatmap of their own, since
  // the tandem grid is in multiples of each range.
  const extended = (s) => s.label.includes(' extended ');
  const tandem = t.scenarios.filter((s) => s.family === 'tandem' && !extended(s));
  const tandemExtended = t.scenarios.filter((s) => s.family === 'tandem' && extended(s));
  const decoupling = t.scenarios.filter((s) => s.family === 'decoupling');
  const items = [];
  for (const [u, list] of singles) {
    items.push(
      el(
        'figure',
        { class: 'hm' },
        el('figcaption', {}, `${u}: price move × vol shift`),
        heatmap(list, { underlying: u, title: `${u} scenario P&L`, rowLabel: (m) => signedPct(m), colLabel: (v) => (v === 0 ? 'vol flat' : `vol ${v > 0 ? '+' : '−'}${Math.round(Math.abs(v) * 100)} pt`) }),
      ),
    );
  }
  if (tandem.length) {
    items.push(
      el(
        'figure',
        { class: 'hm' },
        el('figcaption', {}, 'Tandem: every underlying × its own range'),
        heatmap(tandem, { underlying: 'tandem', title: 'tandem scenario P&L', rowLabel: (m) => `${m > 0 ? '+' : m < 0 ? '−' : ''}${Number(Math.abs(m).toFixed(2))}×`, colLabel: (v) => (v === 0 ? 'vol flat' : v > 0 ? 'vol up' : 'vol down') }),
      ),
    );
  }
  if (tandemExtended.length) {
    items.push(
      el(
        'figure',
        { class: 'hm' },
        el('figcaption', {}, 'Tandem extended moves: every underlying by the same fraction'),
        heatmap(tandemExtended, { underlying: 'tandem', title: 'tandem extended scenario P&L', rowLabel: (m) => signedPct(m), colLabel: (v) => (v === 0 ? 'vol flat' : v > 0 ? 'vol up' : 'vol down') }),
      ),
    );
  }
  if (decoupling.length) {
    items.push(
      el(
        'figure',
        { class: 'hm' },
        el('figcaption', {}, 'Decoupling'),
        table(
          [{ label: 'Scenario' }, { label: 'P&L', num: true }],
          decoupling.map((s) => ({ attrs: { class: s.worst ? 'worst-row' : '', 'data-loss': String(s.loss) }, cells: [s.label, { v: money(-s.loss), class: s.loss > 0 ? 'neg' : 'pos' }] })),
        ),
      ),
    );
  }
  const external = externalRow(singles);
  if (external) items.push(external);
  put(box, 
    el('p', { class: 'muted small' }, `Grid risk ${money(t.grid_risk)} · worst scenario: ${t.worst_scenario || '—'}`),
    ...(items.length ? items : [el('p', { class: 'muted' }, 'No scenarios: the account has no price exposure.')]),
  );
}

/**
 * The positions held in other protocols (MODEL.md section 12) across each underlying's single
 * price moves: their part of the scenario P&L, weighted as the grid is. Their value does not
 * depend on vol, so the vol-flat row is shown, or the first vol shift where the grid has none.
 */
function externalRow(singles) {
  const rows = [];
  const moves = new Set();
  for (const [u, list] of singles) {
    const byMove = new Map();
    for (const s of list) {
      if (s.external_pnl === undefined) continue;
      const seen = byMove.get(s.price_move);
      if (!seen || (seen.vol_shift !== 0 && s.vol_shift === 0)) byMove.set(s.price_move, s);
    }
    if (!byMove.size) continue;
    for (const m of byMove.keys()) moves.add(m);
    rows.push([u, byMove]);
  }
  if (!rows.length) return null;
  const sorted = [...moves].sort((a, b) => a - b);
  return el(
    'figure',
    { class: 'hm', 'data-part': 'external-scenarios' },
    el('figcaption', {}, 'Held in other protocols: P&L by price move (vol flat, weighted)'),
    table(
      [{ label: 'Underlying' }, ...sorted.map((m) => ({ label: signedPct(m), num: true }))],
      rows.map(([u, byMove]) => ({
        attrs: { 'data-underlying': u },
        cells: [
          u,
          ...sorted.map((m) => {
            const s = byMove.get(m);
            if (!s) return '—';
            return { v: money(s.external_pnl), class: s.external_pnl < 0 ? 'neg' : 'pos', data: { pnl: String(s.external_pnl), label: s.label } };
          }),
        ],
      })),
    ),
  );
}

/** Token amounts as `ETH 12.5 · USDC 4,500` (a borrow's negative). */
const amountsText = (amounts) => Object.entries(amounts).map(([t, x]) => `${t} ${num(x)}`).join(' · ');

function renderPositions(pos) {
  const instruments = $('wi-instruments');
  const names = new Set([...pos.positions.map((p) => p.instrument), ...((S.summary && S.summary.underlyings) || []).map((u) => `${u}-PERPETUAL`)]);
  put(instruments, ...[...names].map((n) => el('option', { value: n })));
  put($('acct-positions'), 
    pos.positions.length
      ? table(
          [
            { label: 'Instrument' },
            { label: 'Size', num: true },
            { label: 'Entry', num: true },
            { label: 'Mark', num: true },
            { label: 'Value', num: true },
            { label: 'IV', num: true },
            { label: 'Delta', num: true },
            { label: 'Gamma', num: true },
            { label: 'Vega', num: true },
            { label: 'Theta', num: true },
          ],
          pos.positions.map((p) => ({
            attrs: { 'data-instrument': p.instrument },
            cells: [
              p.instrument,
              { v: num(p.size), class: p.size < 0 ? 'neg' : '' },
              p.entry_price === null ? '—' : money(p.entry_price),
              money(p.mark),
              money(p.value),
              p.iv === null ? '—' : pctOf(p.iv),
              num(p.greeks ? p.greeks.delta : null),
              num(p.greeks ? p.greeks.gamma : null, 6),
              money(p.greeks ? p.greeks.vega : null),
              money(p.greeks ? p.greeks.theta : null),
            ],
          })),
        )
      : el('p', { class: 'muted' }, 'No positions.'),
  );
  put($('acct-balances'), 
    table(
      [{ label: 'Asset' }, { label: 'Amount', num: true }, { label: 'Price', num: true }, { label: 'Haircut', num: true }, { label: 'Collateral value', num: true }],
      pos.balances.map((b) => [b.asset, num(b.amount), money(b.price), pctOf(b.haircut), money(b.collateral_value)]),
    ),
    (pos.external || []).length
      ? [
          el('h2', { class: 'spaced' }, 'Held in other protocols'),
          table(
            [{ label: 'Kind' }, { label: 'Protocol' }, { label: 'Tokens' }, { label: 'Value', num: true }, { label: 'Counted (after haircut)', num: true }],
            pos.external.map((x) => ({
              attrs: { 'data-kind': x.kind },
              cells: [x.kind, x.protocol, amountsText(x.amounts), money(x.value), { v: money(x.margin_value), data: { counted: String(x.margin_value) } }],
            })),
            { 'data-table': 'external' },
          ),
        ]
      : null,
  );
}

async function onWhatIf(e) {
  e.preventDefault();
  const instrument = $('wi-instrument').value.trim();
  const size = Number($('wi-size').value);
  const priceText = $('wi-price').value.trim();
  const trade = { instrument, size };
  if (priceText) trade.price = Number(priceText);
  const box = $('whatif-result');
  put(box, el('p', { class: 'muted' }, 'Checking…'));
  const tradeBtn = $('wi-trade');
  tradeBtn.disabled = true;
  tradeBtn.textContent = 'Place trade';
  try {
    const r = await api('/v1/what-if', { method: 'POST', body: { account: S.account, trades: [trade] } });
    S.whatIf = { request: trade, response: r };
    renderWhatIf(r.what_if);
    tradeBtn.disabled = !r.what_if.accepted;
  } catch (err) {
    put(box, el('p', { class: 'error', role: 'alert' }, err.message));
  }
}

function renderWhatIf(w) {
  const rows = [
    ['status', 'Status', w.before.status, w.after.status],
    ['margin_balance', 'Margin balance', w.before.margin_balance, w.after.margin_balance],
    ['initial_margin', 'Initial margin', w.before.initial_margin, w.after.initial_margin],
    ['maintenance_margin', 'Maintenance margin', w.before.maintenance_margin, w.after.maintenance_margin],
    ['grid_risk', 'Grid risk', w.before.grid_risk, w.after.grid_risk],
  ];
  put($('whatif-result'), 
    el('div', { class: `verdict ${w.accepted ? 'ok' : 'bad'}`, dataset: { accepted: String(w.accepted) } }, w.accepted ? 'Accepted' : 'Refused', el('span', {}, ` ${w.reason}`)),
    el('p', { class: 'muted small' }, `Fills: ${w.fills.map((f) => `${num(f.size)} ${f.instrument} @ ${money(f.price)}`).join(', ')}`),
    table(
      [{ label: '' }, { label: 'Before', num: true }, { label: 'After', num: true }, { label: 'Change', num: true }],
      rows.map(([key, label, b, a]) => ({
        attrs: { 'data-field': key, 'data-before': String(b), 'data-after': String(a) },
        cells:
          typeof b === 'string'
            ? [label, { v: badge(b) }, { v: badge(a) }, '']
            : [label, money(b), money(a), { v: `${a - b > 0 ? '+' : ''}${money(a - b)}`, class: key === 'margin_balance' ? '' : a - b > 0 ? 'neg' : a - b < 0 ? 'pos' : '' }],
      })),
      { class: 'tbl whatif-table' },
    ),
  );
}

async function onTrade() {
  const btn = $('wi-trade');
  const w = S.whatIf;
  if (!w || !can.trade()) return;
  const fill = w.response.what_if.fills[0];
  const price = w.request.price !== undefined ? w.request.price : fill && fill.price;
  const counterparty = $('wi-counterparty').value.trim();
  if (!counterparty) {
    toast('A trade names both sides: enter the counterparty account', 'error');
    $('wi-counterparty').focus();
    return;
  }
  if (btn.dataset.confirm !== 'yes') {
    btn.dataset.confirm = 'yes';
    btn.textContent = `Confirm: ${num(w.request.size)} ${w.request.instrument} @ ${money(price)} with ${counterparty}`;
    return;
  }
  btn.dataset.confirm = '';
  btn.disabled = true;
  btn.textContent = 'Place trade';
  try {
    const r = await api('/v1/events', { method: 'POST', body: { type: 'trade', account: S.account, instrument: w.request.instrument, size: w.request.size, price, counterparty } });
    toast(`Trade applied at event ${r.sequence}`, 'ok');
    S.whatIf = null;
    loadAccount(true);
  } catch (err) {
    toast(`Trade refused: ${err.message}`, 'error');
  }
}

// ----- liquidations -----

function fundSeries() {
  const a = S.fundAnchor;
  if (!a) return [];
  // Before the first read: walk back from it through the backlog's flows.
  // One step per event, however many flows it had.
  const byEvent = new Map();
  for (const p of S.fundPast) byEvent.set(p.x, (byEvent.get(p.x) || 0) + p.delta);
  const past = [...byEvent].map(([x, delta]) => ({ x, delta })).sort((x, y) => y.x - x.x);
  const back = [];
  let level = a.fund;
  for (const p of past) {
    back.push({ x: p.x, y: level });
    level -= p.delta;
    back.push({ x: p.x - 1, y: level });
  }
  // Since: exact reads, and between them the flows the stream reports (fees show at the next read).
  const seen = [...S.fundSeen].sort((x, y) => x.x - y.x);
  const live = [...S.fundLive].sort((x, y) => x.x - y.x);
  const forward = [];
  let i = 0;
  let current = null;
  let read = -Infinity;
  for (const p of seen) {
    while (i < live.length && live[i].x <= p.x) {
      if (current !== null && live[i].x > read) {
        current = { x: live[i].x, y: current.y + live[i].delta };
        forward.push(current);
      }
      i += 1;
    }
    current = p;
    read = p.x;
    forward.push(p);
  }
  for (; i < live.length; i += 1) {
    if (current !== null && live[i].x > read) {
      current = { x: live[i].x, y: current.y + live[i].delta };
      forward.push(current);
    }
  }
  const points = [...back.reverse(), ...forward];
  points.sort((x, y) => x.x - y.x);
  const out = [];
  for (const p of points) {
    if (out.length && out[out.length - 1].x === p.x) out[out.length - 1] = p;
    else out.push(p);
  }
  return out;
}

let feedTimer = 0;
function renderFeedSoon() {
  if (feedTimer) return;
  feedTimer = setTimeout(() => {
    feedTimer = 0;
    if (S.view === 'liquidations') renderLiquidations();
  }, 300);
}

function describe(m) {
  switch (m.type) {
    case 'liquidation_fill':
      return `${num(m.size)} ${m.instrument} @ ${money(m.price)} · penalty ${money(m.penalty)}`;
    case 'close_out':
      return `deficit ${money(m.deficit)} · fund paid ${money(m.insurance_paid)} · socialised ${money(m.socialised)}`;
    case 'deleveraged':
      return `profit cut ${money(m.amount)}`;
    case 'liquidations_suspended':
      return `${m.underlying}: ${m.suspended ? 'suspended' : 'resumed'}`;
    case 'margin_change':
      return `${m.from} → ${m.to} · balance ${money(m.margin_balance)} / maintenance ${money(m.maintenance_margin)}`;
    case 'oracle_health':
      return `${m.underlying}: ${m.health}${m.price ? ` @ ${money(m.price)}` : ''}`;
    case 'settled':
      return `${num(m.size)} ${m.instrument} settled for ${money(m.amount)}`;
    default:
      return JSON.stringify(m);
  }
}

function renderLiquidations() {
  const fund = S.summary ? S.summary.insurance_fund : null;
  $('fund-now').textContent = fund === null ? '' : `now ${money(fund)} ${S.summary.settlement_asset}`;
  put($('fund-chart'), stepChart(fundSeries(), { width: $('fund-chart').clientWidth, height: 220, xLabel: 'event', title: 'insurance fund over time', fmt: money }));
  const all = $('feed-all').checked;
  const list = S.feed.filter((m) => all || FEED_TYPES.includes(m.type)).slice(-300).reverse();
  put($('feed'), 
    list.length
      ? table(
          [{ label: 'Seq', num: true }, { label: 'Event', num: true }, { label: 'Type' }, { label: 'Account' }, { label: 'Detail' }],
          list.map((m) => ({
            attrs: { 'data-seq': String(m.seq), 'data-type': m.type },
            cells: [
              String(m.seq),
              String(m.event_seq),
              { v: el('span', { class: `badge t-${m.type}` }, m.type.replace(/_/g, ' ')) },
              m.account ? { v: el('a', { href: `#/account/${encodeURIComponent(m.account)}`, class: 'link' }, m.account) } : '—',
              describe(m),
            ],
          })),
          { class: 'tbl feed-table' },
        )
      : el('p', { class: 'muted' }, all ? 'No stream messages yet.' : 'No liquidations in the stream backlog. Every liquidation fill, close-out and deleveraging appears here as it happens.'),
  );
}

// ----- parameters -----

async function renderParams() {
  try {
    const p = await api('/v1/params');
    S.params = p;
    const params = p.params;
    $('params-version').textContent = `version ${p.version}`;
    const und = Object.entries(params.underlyings);
    const col = Object.entries(params.collateral || {});
    const scalars = [
      ['Maintenance fraction of initial', params.mm_fraction],
      ['Short option minimum rate', params.som_rate],
      ['Short option IM base / floor', `${params.short_option_im_base} / ${params.short_option_im_floor}`],
      ['Short option MM', params.short_option_mm],
      ...Object.entries(params.grid || {}).map(([k, v]) => [`Grid: ${k.replace(/_/g, ' ')}`, v]),
      ...Object.entries(params.statistical || {}).map(([k, v]) => [`Statistical: ${k.replace(/_/g, ' ')}`, typeof v === 'object' ? JSON.stringify(v) : v]),
    ];
    put($('params-active'), 
      el(
        'div',
        { class: 'scroll-x' },
        table(
          [{ label: 'Underlying' }, { label: 'Price scan', num: true }, { label: 'Vol up', num: true }, { label: 'Vol down', num: true }, { label: 'Isolated IM', num: true }, { label: 'Isolated MM', num: true }],
          und.map(([u, x]) => [u, pctOf(x.price_scan_range), pctOf(x.vol_scan_up), pctOf(x.vol_scan_down), pctOf(x.standard_im_rate), pctOf(x.standard_mm_rate)]),
        ),
      ),
      el('div', { class: 'grid2 inner' },
        table([{ label: 'Collateral' }, { label: 'Haircut', num: true }, { label: 'Moves with' }], col.map(([a, c]) => [a, pctOf(c.haircut), c.underlying || 'stable'])),
        table([{ label: 'Setting' }, { label: 'Value', num: true }], scalars.map(([k, v]) => [k, String(v)])),
      ),
    );
  } catch (e) {
    put($('params-active'), el('p', { class: 'error' }, e.message));
  }
  if (!can.governance()) {
    put($('proposals'), el('p', { class: 'muted' }, `Proposals are shown to staff keys (admin, risk committee, read-only); this key is ${S.summary.role}.`));
    return;
  }
  try {
    const g = await api('/v1/dashboard/proposals');
    if (!g.configured) {
      $('committee').textContent = '';
      put($('proposals'), el('p', { class: 'muted' }, 'Governance is not configured on this server (no committee.json): parameters change only at genesis.'));
      return;
    }
    $('committee').textContent = `committee ${g.committee.threshold} of ${g.committee.members.length} (${g.committee.members.join(', ')}) · timelock ${Math.round(g.committee.timelock_ms / 60000)} min${g.committee.guardian ? ' · guardian set' : ''}`;
    const open = g.proposals.filter((p) => p.state.state === 'pending');
    const closed = g.proposals.filter((p) => p.state.state !== 'pending');
    put($('proposals'), 
      open.length ? el('div', { class: 'proposals' }, open.reverse().map((p) => proposalCard(p, g))) : el('p', { class: 'muted' }, 'No open proposals.'),
      closed.length
        ? el('details', { class: 'history' }, el('summary', {}, `${closed.length} closed proposal${closed.length > 1 ? 's' : ''}`), table([{ label: 'Id', num: true }, { label: 'Version', num: true }, { label: 'State' }, { label: 'Rationale' }], closed.map((p) => [String(p.id), String(p.version), p.state.state, p.rationale])))
        : null,
    );
  } catch (e) {
    put($('proposals'), el('p', { class: 'error' }, e.message));
  }
}

function proposalCard(p, g) {
  const impactBox = el('div', { class: 'impact' });
  const members = g.committee.members.map((m) => el('span', { class: `chip${p.approvals.includes(m) ? ' yes' : ''}` }, p.approvals.includes(m) ? `✓ ${m}` : m));
  const eligible = p.eligible_ms <= Date.now() ? 'timelock passed' : `eligible ${new Date(p.eligible_ms).toLocaleString()}`;
  const button = el('button', { class: 'btn small', type: 'button' }, 'Impact on today’s book');
  button.addEventListener('click', async () => {
    button.disabled = true;
    put(impactBox, el('p', { class: 'muted' }, 'Margining the book under both sets…'));
    try {
      const r = await api(`/v1/dashboard/proposals/${p.id}/impact`);
      const i = r.impact;
      put(impactBox, 
        el('p', {}, `Total initial margin ${money(i.total_requirement_before)} → ${money(i.total_requirement_after)} (${signedPct(i.total_requirement_after / Math.max(1e-9, i.total_requirement_before) - 1)}); ${i.status_changes} of ${i.accounts} accounts change status.`),
        Object.keys(i.changes_by_transition).length ? el('p', { class: 'muted small' }, Object.entries(i.changes_by_transition).map(([k, v]) => `${k}: ${v}`).join(' · ')) : null,
        i.top_affected.length
          ? table(
              [{ label: 'Account' }, { label: 'IM before', num: true }, { label: 'IM after', num: true }, { label: 'Status' }],
              i.top_affected.map((x) => [x.id, money(x.initial_margin_before), money(x.initial_margin_after), `${x.status_before} → ${x.status_after}`]),
            )
          : null,
      );
    } catch (e) {
      put(impactBox, el('p', { class: 'error' }, e.message));
    } finally {
      button.disabled = false;
    }
  });
  return el(
    'article',
    { class: 'proposal', dataset: { proposal: String(p.id) } },
    el('div', { class: 'card-head' }, el('h3', {}, `#${p.id} · version ${p.version}`), el('span', { class: 'badge h-fresh' }, `${p.approvals.length} / ${p.threshold} approvals`)),
    el('p', {}, p.rationale),
    el('p', { class: 'muted small' }, `proposed by ${p.proposer} · ${eligible} · hash ${p.hash.slice(0, 16)}…`),
    el('div', { class: 'chips' }, members),
    el('p', { class: 'muted small' }, 'Approvals are ed25519 signatures by committee members, submitted through the API (POST /v1/proposals/{id}/approvals).'),
    button,
    impactBox,
  );
}

// ----- sign in and start -----

function showLogin(message) {
  S.view = 'login';
  for (const s of document.querySelectorAll('main > .view')) s.hidden = s.id !== 'login';
  $('tabs').hidden = true;
  $('signout').hidden = true;
  $('who').hidden = true;
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('key-input').focus();
}

function handleError(e) {
  if (e && (e.status === 401 || e.status === 403) && S.view !== 'login') {
    stop();
    clearKey();
    showLogin(e.status === 401 ? 'The key was refused (unknown or revoked).' : e.message);
  } else if (e && e.status) {
    toast(e.message, 'error');
  } else if (e) {
    // A fault of the page itself: reported, not hidden.
    console.error('pmargin dashboard:', e);
  }
}

let pollTimer = 0;
function stop() {
  if (S.stream) S.stream.close();
  S.stream = null;
  clearInterval(pollTimer);
  pollTimer = 0;
  setLive(false);
  $('live').textContent = 'offline';
}

async function start() {
  const s = await loadSummary();
  if (!['admin', 'venue', 'risk_committee', 'read_only', 'trader'].includes(s.role)) throw new Error('This key cannot read accounts.');
  await loadOracle();
  $('tabs').hidden = false;
  $('signout').hidden = false;
  $('wi-trade').hidden = !can.trade();
  $('wi-counterparty').hidden = !can.trade();
  renderChrome();
  route();
  S.stream = openStream(Math.max(1, s.stream_next - BACKLOG), onStream, setLive);
  pollTimer = setInterval(poll, 1500);
}

async function signIn(e) {
  e.preventDefault();
  const key = $('key-input').value.trim();
  if (!key) return;
  setKey(key);
  try {
    await start();
    $('key-input').value = '';
  } catch (err) {
    clearKey();
    showLogin(err.status === 401 ? 'Unknown API key.' : err.message);
  }
}

function bind() {
  $('login-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', () => {
    stop();
    clearKey();
    S.summary = null;
    showLogin();
  });
  window.addEventListener('hashchange', () => {
    if (takeKeyFromFragment()) {
      location.reload();
      return;
    }
    if (S.summary) route();
  });
  const onFilter = () => {
    filters.search = $('f-search').value;
    filters.status = $('f-status').value;
    filters.health = $('f-health').value;
    filters.underlying = $('f-underlying').value;
    if (S.view === 'accounts') renderAccounts();
  };
  for (const id of ['f-search', 'f-status', 'f-health', 'f-underlying']) $(id).addEventListener('input', onFilter);
  $('whatif').addEventListener('submit', onWhatIf);
  $('wi-trade').addEventListener('click', onTrade);
  $('feed-all').addEventListener('change', renderLiquidations);
  // Keep relative times current.
  setInterval(() => {
    if (S.view === 'overview' && S.oracle) renderOracle();
  }, 5000);
}

async function boot() {
  takeKeyFromFragment();
  bind();
  if (!getKey()) {
    showLogin();
    return;
  }
  try {
    await start();
  } catch (e) {
    clearKey();
    showLogin(e.status === 401 ? 'The saved key was refused.' : e.message);
  }
}

boot();
