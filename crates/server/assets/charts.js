// Small SVG charts drawn by hand: the scenario heatmap, a step line, a stacked bar.

const NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function compact(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  const sign = x < 0 ? '−' : '';
  if (a >= 1e9) return `${sign}${(a / 1e9).toFixed(2)}B`;
  if (a >= 1e6) return `${sign}${(a / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${sign}${(a / 1e3).toFixed(1)}k`;
  if (a >= 100) return `${sign}${a.toFixed(0)}`;
  return `${sign}${a.toFixed(a >= 1 ? 1 : 2)}`;
}

const pct = (x) => `${x > 0 ? '+' : x < 0 ? '−' : ''}${(Math.abs(x) * 100).toFixed(Math.abs(x) * 100 < 10 && x % 0.01 ? 1 : 0)}%`;

/** Loss colour: red for losses, green for gains, intensity by size against `scale`. */
function heat(loss, scale) {
  const t = scale > 0 ? Math.min(1, Math.abs(loss) / scale) : 0;
  if (loss > 0) return `rgb(${Math.round(255 - 35 * t)},${Math.round(240 - 170 * t)},${Math.round(240 - 170 * t)})`;
  if (loss < 0) return `rgb(${Math.round(236 - 150 * t)},${Math.round(248 - 60 * t)},${Math.round(240 - 120 * t)})`;
  return 'rgb(241,245,249)';
}

/**
 * A heatmap of scenario losses: price moves down the side (largest rise on top), vol shifts
 * across. Each cell carries its scenario in data attributes; the worst cell is outlined.
 * @param {Array} scenarios  [{price_move, vol_shift, loss, worst, label}]
 * @param {object} o  rowLabel(price_move), colLabel(vol_shift), title, underlying
 */
export function heatmap(scenarios, o) {
  const rows = [...new Set(scenarios.map((s) => s.price_move))].sort((a, b) => b - a);
  const cols = [...new Set(scenarios.map((s) => s.vol_shift))].sort((a, b) => a - b);
  const scale = Math.max(1e-12, ...scenarios.map((s) => Math.abs(s.loss)));
  const left = 64;
  const top = 26;
  const cw = 96;
  const ch = 26;
  const width = left + cols.length * cw + 4;
  const height = top + rows.length * ch + 4;
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    class: 'heatmap',
    role: 'img',
    'aria-label': o.title || 'scenario losses',
    'data-underlying': o.underlying || '',
  });
  root.style.maxWidth = `${width * 1.25}px`;
  cols.forEach((c, j) => {
    root.appendChild(svg('text', { x: left + j * cw + cw / 2, y: 16, class: 'hm-axis', 'text-anchor': 'middle' }, o.colLabel(c)));
  });
  rows.forEach((r, i) => {
    root.appendChild(svg('text', { x: left - 8, y: top + i * ch + ch / 2 + 4, class: 'hm-axis', 'text-anchor': 'end' }, o.rowLabel(r)));
  });
  let worst = null;
  for (const s of scenarios) {
    const i = rows.indexOf(s.price_move);
    const j = cols.indexOf(s.vol_shift);
    const g = svg('g', {
      class: `hm-cell${s.worst ? ' worst' : ''}`,
      'data-price-move': String(s.price_move),
      'data-vol-shift': String(s.vol_shift),
      'data-loss': String(s.loss),
      'data-worst': s.worst ? 'true' : 'false',
    });
    const title = svg('title', {}, `${s.label}: ${s.loss >= 0 ? 'loss' : 'gain'} ${compact(Math.abs(s.loss))}`);
    g.appendChild(title);
    g.appendChild(svg('rect', { x: left + j * cw + 1, y: top + i * ch + 1, width: cw - 2, height: ch - 2, rx: 3, fill: heat(s.loss, scale) }));
    g.appendChild(
      svg('text', { x: left + j * cw + cw / 2, y: top + i * ch + ch / 2 + 4, 'text-anchor': 'middle', class: 'hm-val' }, compact(-s.loss)),
    );
    root.appendChild(g);
    if (s.worst) worst = { i, j };
  }
  if (worst) {
    root.appendChild(
      svg('rect', { x: left + worst.j * cw, y: top + worst.i * ch, width: cw, height: ch, rx: 4, class: 'hm-worst' }),
    );
  }
  return root;
}

export { pct };

/**
 * A step chart of `points` [{x, y}] (x ascending), with min/max labels.
 */
export function stepChart(points, o = {}) {
  const width = Math.max(280, Math.round(o.width || 640));
  const height = o.height || 180;
  const fmt = o.fmt || compact;
  const pad = { l: 84, r: 12, t: 12, b: 26 };
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': o.title || 'chart' });
  if (points.length === 0) {
    root.appendChild(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'muted-text' }, 'No data yet'));
    return root;
  }
  const pts = points.length === 1 ? [points[0], { x: points[0].x + 1, y: points[0].y }] : points;
  const xs = pts.map((p) => p.x);
  const ys = pts.map((p) => p.y);
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < Math.abs(y1) * 1e-6 + 1e-9) {
    y0 -= Math.abs(y0) * 0.01 + 1;
    y1 += Math.abs(y1) * 0.01 + 1;
  }
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const sx = (x) => pad.l + ((x - x0) / Math.max(1e-9, x1 - x0)) * (width - pad.l - pad.r);
  const sy = (y) => pad.t + (1 - (y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    root.appendChild(svg('line', { x1: pad.l, x2: width - pad.r, y1: sy(y), y2: sy(y), class: 'grid' }));
    root.appendChild(svg('text', { x: pad.l - 6, y: sy(y) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(y)));
  }
  root.appendChild(svg('text', { x: pad.l, y: height - 6, class: 'axis' }, `${o.xLabel || ''} ${x0}`));
  root.appendChild(svg('text', { x: width - pad.r, y: height - 6, 'text-anchor': 'end', class: 'axis' }, String(x1)));
  let d = `M${sx(pts[0].x)},${sy(pts[0].y)}`;
  for (let i = 1; i < pts.length; i += 1) d += `H${sx(pts[i].x)}V${sy(pts[i].y)}`;
  const area = `${d}V${sy(y0)}H${sx(pts[0].x)}Z`;
  root.appendChild(svg('path', { d: area, class: 'area' }));
  root.appendChild(svg('path', { d, class: 'line' }));
  const last = pts[pts.length - 1];
  root.appendChild(svg('circle', { cx: sx(last.x), cy: sy(last.y), r: 3.5, class: 'dot' }));
  return root;
}

/** A stacked horizontal bar of counts per status. */
export function statusBar(counts, order) {
  const total = order.reduce((s, k) => s + (counts[k] || 0), 0);
  const root = svg('svg', { viewBox: '0 0 1000 14', preserveAspectRatio: 'none', class: 'statusbar', role: 'img', 'aria-label': 'accounts by status' });
  let x = 0;
  for (const k of order) {
    const w = total ? ((counts[k] || 0) / total) * 1000 : 0;
    if (w > 0) root.appendChild(svg('rect', { x, y: 0, width: w, height: 14, class: `sb-${k}` }));
    x += w;
  }
  if (!total) root.appendChild(svg('rect', { x: 0, y: 0, width: 1000, height: 14, class: 'sb-none' }));
  return root;
}
