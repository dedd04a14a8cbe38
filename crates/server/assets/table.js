// A virtualised table: a fixed-row-height scroller that keeps only the visible rows (plus a
// few either side) in the DOM, so 10,000 or 100,000 accounts cost the same to draw.

export class VirtualTable {
  /**
   * @param {HTMLElement} root  element to fill
   * @param {object} opts  columns: [{key, label, cell(row) -> [text, className?], numeric, narrow}],
   *   rowHeight, href(row), id(row), onSort(key)
   */
  constructor(root, opts) {
    this.opts = opts;
    this.rowHeight = opts.rowHeight || 36;
    this.rows = [];
    this.sort = { key: null, dir: 1 };
    root.classList.add('vt');
    this.head = document.createElement('div');
    this.head.className = 'vt-head';
    this.head.setAttribute('role', 'row');
    for (const c of opts.columns) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = `vt-h${c.numeric ? ' num' : ''}${c.narrow === false ? ' wide-only' : ''}`;
      b.dataset.key = c.key;
      if (c.short) {
        const full = document.createElement('span');
        full.className = 'label-full';
        full.textContent = c.label;
        const short = document.createElement('span');
        short.className = 'label-short';
        short.textContent = c.short;
        b.append(full, short);
        b.title = c.label;
      } else {
        b.textContent = c.label;
      }
      b.addEventListener('click', () => opts.onSort && opts.onSort(c.key));
      this.head.appendChild(b);
    }
    this.body = document.createElement('div');
    this.body.className = 'vt-body';
    this.body.setAttribute('role', 'rowgroup');
    this.spacer = document.createElement('div');
    this.spacer.className = 'vt-spacer';
    this.body.appendChild(this.spacer);
    this.empty = document.createElement('div');
    this.empty.className = 'vt-empty';
    this.empty.textContent = 'No accounts match.';
    this.empty.hidden = true;
    this.body.appendChild(this.empty);
    root.append(this.head, this.body);
    this.pool = [];
    this.frame = 0;
    this.body.addEventListener('scroll', () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(this.body);
  }

  setSort(key, dir) {
    this.sort = { key, dir };
    for (const b of this.head.children) {
      b.classList.toggle('asc', b.dataset.key === key && dir > 0);
      b.classList.toggle('desc', b.dataset.key === key && dir < 0);
      b.setAttribute('aria-sort', b.dataset.key === key ? (dir > 0 ? 'ascending' : 'descending') : 'none');
    }
  }

  setRows(rows) {
    this.rows = rows;
    this.spacer.style.height = `${rows.length * this.rowHeight}px`;
    // A short list takes only its own height; a long one scrolls within the window.
    this.body.style.height = `min(var(--vt-max), ${Math.max(3, rows.length) * this.rowHeight + 2}px)`;
    this.empty.hidden = rows.length > 0;
    if (this.body.scrollTop > rows.length * this.rowHeight) this.body.scrollTop = 0;
    this.render();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** Draws the rows in view; returns how many are in the DOM. */
  render() {
    const h = this.rowHeight;
    const view = this.body.clientHeight || 600;
    const first = Math.max(0, Math.floor(this.body.scrollTop / h) - 4);
    const last = Math.min(this.rows.length, Math.ceil((this.body.scrollTop + view) / h) + 4);
    const need = Math.max(0, last - first);
    while (this.pool.length < need) this.pool.push(this.makeRow());
    for (let i = 0; i < this.pool.length; i += 1) {
      const el = this.pool[i];
      if (i >= need) {
        el.hidden = true;
        delete el.dataset.id;
        continue;
      }
      const index = first + i;
      const row = this.rows[index];
      el.hidden = false;
      el.style.transform = `translateY(${index * h}px)`;
      el.href = this.opts.href(row);
      el.dataset.id = this.opts.id(row);
      el.setAttribute('aria-rowindex', String(index + 2));
      const cells = el.children;
      this.opts.columns.forEach((c, j) => {
        const [text, cls] = c.cell(row);
        const cell = cells[j];
        if (cell.textContent !== text) cell.textContent = text;
        const className = `vt-c${c.numeric ? ' num' : ''}${c.narrow === false ? ' wide-only' : ''}${cls ? ` ${cls}` : ''}`;
        if (cell.className !== className) cell.className = className;
      });
    }
    return need;
  }

  makeRow() {
    const a = document.createElement('a');
    a.className = 'vt-row';
    a.setAttribute('role', 'row');
    for (let j = 0; j < this.opts.columns.length; j += 1) {
      const s = document.createElement('span');
      s.setAttribute('role', 'cell');
      a.appendChild(s);
    }
    this.body.appendChild(a);
    return a;
  }
}
