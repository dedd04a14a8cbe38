// The dashboard's access to the risk service: the bearer key, JSON requests, the live stream.
//
// The key is kept in sessionStorage (this tab only, gone when it closes). It may also be given
// once in the URL fragment, `/#key=KEY` (optionally `&view=/accounts`): a fragment is never
// sent to the server, and the page removes it from the address bar at once.

const STORE = 'pmargin.key';

export function takeKeyFromFragment() {
  const m = location.hash.match(/^#key=([^&]*)(?:&view=(.*))?$/);
  if (!m) return false;
  const key = decodeURIComponent(m[1]).trim();
  if (key) sessionStorage.setItem(STORE, key);
  const view = m[2] ? decodeURIComponent(m[2]) : '/overview';
  history.replaceState(null, '', `${location.pathname}${location.search}#${view}`);
  return true;
}

export const getKey = () => sessionStorage.getItem(STORE);
export const setKey = (key) => sessionStorage.setItem(STORE, key.trim());
export const clearKey = () => sessionStorage.removeItem(STORE);

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && body.error && body.error.message ? body.error.message : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** A JSON request with the bearer key; throws ApiError on a non-2xx answer. */
export async function api(path, { method = 'GET', body, key = getKey() } = {}) {
  const headers = { accept: 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await response.text();
  let data;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** The public liveness answer (engine sequence), without a key. */
export async function health() {
  const r = await fetch('/healthz', { cache: 'no-store' });
  return r.json();
}

function hex(text) {
  return Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The stream, resumed from `fromSeq`, reconnecting after a drop from the message after the
 * last one seen (so nothing is missed). A browser cannot set an Authorization header on a
 * WebSocket: the key travels as the subprotocol `pmargin.key.<hex>`.
 */
export function openStream(fromSeq, onMessage, onState) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let next = Math.max(1, fromSeq);
  let ws = null;
  let closed = false;
  let timer = 0;
  const connect = () => {
    const key = getKey();
    if (!key || closed) return;
    ws = new WebSocket(`${scheme}//${location.host}/v1/dashboard/stream?from_seq=${next}`, [
      'pmargin.v1',
      `pmargin.key.${hex(key)}`,
    ]);
    ws.onopen = () => onState(true);
    ws.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (typeof m.seq === 'number') {
        if (m.seq < next) return;
        next = m.seq + 1;
      }
      onMessage(m);
    };
    ws.onclose = () => {
      onState(false);
      if (!closed) timer = setTimeout(connect, 2000);
    };
  };
  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (ws) ws.close();
    },
  };
}
