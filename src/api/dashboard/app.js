// corral dashboard: a login form, then a live view of /admin/api/* polled every 2 s.
//
// Rules this file keeps: the admin token lives in sessionStorage only and travels only in an
// Authorization header; everything from the server is put on the page as text (never as
// HTML); times are shown in the browser's time zone; a 401 sends the operator back to the
// login form, a network error keeps the last data on screen and says so.
'use strict';

(() => {
  const TOKEN_KEY = 'corral.adminToken';
  const POLL_MS = 2000;
  const KEYS_RETRY_MS = 60000;
  const WINDOWS = ['60m', '2h', '4h', '6h', '12h', '24h'];
  const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948',
    '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
  const MAX_SERIES = 8; // more models than this are summed as "other"
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    window: '60m',
    timer: null,
    busy: false,
    keysAvailable: true,
    keysRetryAt: 0,
    lastJson: {}, // section -> last JSON text rendered, so unchanged data is not redrawn
  };

  // ---------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);

  /** Builds an element; attrs: class, text, on<event>, data-*, anything else as attribute. */
  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function parseTime(t) {
    if (t === null || t === undefined || t === '') return null;
    if (typeof t === 'number') return new Date(t < 1e12 ? t * 1000 : t);
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const hourFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  function fmtTime(t) {
    const d = parseTime(t);
    if (!d) return '–';
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? timeFmt.format(d) : dateTimeFmt.format(d);
  }

  function fmtDateTime(t) {
    const d = parseTime(t);
    return d ? dateTimeFmt.format(d) : '–';
  }

  function fmtInt(n) {
    return n === null || n === undefined ? '–' : Number(n).toLocaleString();
  }

  function fmtCompact(n) {
    if (n === null || n === undefined) return '–';
    const abs = Math.abs(n);
    if (abs >= 1e9) return `${(n / 1e9).toFixed(abs >= 1e10 ? 0 : 1)}G`;
    if (abs >= 1e6) return `${(n / 1e6).toFixed(abs >= 1e7 ? 0 : 1)}M`;
    if (abs >= 1e3) return `${(n / 1e3).toFixed(abs >= 1e4 ? 0 : 1)}k`;
    return String(Math.round(n));
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(b);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    return ms >= 1000 ? `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 2)} s` : `${Math.round(ms)} ms`;
  }

  function fmtCountdown(ms) {
    if (ms <= 0) return 'ending…';
    const s = Math.ceil(ms / 1000);
    const m = Math.floor(s / 60);
    return m > 0 ? `${m}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
  }

  function badge(text, kind) {
    return h('span', { class: `badge ${kind || ''}`, text });
  }

  /** Replaces a container's children. */
  function fill(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  }

  // ---------------------------------------------------------------- the API

  class AuthError extends Error {}
  class NetworkError extends Error {}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, { method = 'GET', body } = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new AuthError('Not signed in.');
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new NetworkError(`cannot reach corral (${err.message})`);
    }
    const text = await res.text().catch(() => '');
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch { data = null; } }
    if (res.status === 401) throw new AuthError('The token was rejected. Sign in again.');
    if (res.status === 403) throw new AuthError('That token is not an admin token.');
    if (!res.ok) {
      const message = data && data.error && (data.error.message || data.error);
      throw new ApiError(res.status, typeof message === 'string' ? message : `HTTP ${res.status}`);
    }
    return data;
  }

  // ---------------------------------------------------------------- login and session

  function showLogin(message) {
    stopPolling();
    sessionStorage.removeItem(TOKEN_KEY);
    state.lastJson = {};
    $('app').hidden = true;
    $('logout').hidden = true;
    $('conn').hidden = true;
    $('updated').textContent = '';
    $('login').hidden = false;
    const err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    startPolling();
  }

  async function onLogin(event) {
    event.preventDefault();
    const token = $('token').value.trim();
    const err = $('login-error');
    if (!token) {
      err.hidden = false;
      err.textContent = 'Enter an admin token.';
      return;
    }
    $('login-submit').disabled = true;
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api('/admin/api/backends');
      $('token').value = '';
      err.hidden = true;
      showApp();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      err.hidden = false;
      err.textContent = e instanceof AuthError ? e.message : `Sign-in failed: ${e.message}`;
    } finally {
      $('login-submit').disabled = false;
    }
  }

  // ---------------------------------------------------------------- polling

  function startPolling() {
    stopPolling();
    poll();
    state.timer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  const sections = [
    { id: 'backends', path: () => '/admin/api/backends', render: renderBackends },
    { id: 'keys', path: () => '/admin/api/keys', render: renderKeys, optional: true },
    { id: 'summary', path: () => '/admin/api/stats/24h', render: renderSummary },
    { id: 'usage', path: () => `/admin/api/stats?window=${state.window}`, render: renderUsage },
    { id: 'models', path: () => '/admin/api/stats/models?window=24h', render: renderModels },
    { id: 'requests', path: () => '/admin/api/requests?limit=50', render: renderRequests },
    { id: 'users', path: () => '/admin/api/users', render: renderUsers },
  ];

  async function poll() {
    if (state.busy || !sessionStorage.getItem(TOKEN_KEY)) return;
    state.busy = true;
    try {
      const due = sections.filter((s) => !s.optional || state.keysAvailable || Date.now() >= state.keysRetryAt);
      const results = await Promise.allSettled(due.map((s) => loadSection(s)));
      const failures = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
      const auth = failures.find((e) => e instanceof AuthError);
      if (auth) { showLogin(auth.message); return; }
      const offline = failures.find((e) => e instanceof NetworkError);
      setConnection(offline ? offline.message : null);
    } finally {
      state.busy = false;
    }
  }

  async function loadSection(section) {
    const box = $(section.id);
    const errorEl = box.querySelector('.section-error');
    try {
      const data = await api(section.path());
      if (section.optional) { state.keysAvailable = true; box.hidden = false; }
      errorEl.hidden = true;
      const json = JSON.stringify(data);
      if (state.lastJson[section.id] !== json) {
        state.lastJson[section.id] = json;
        section.render(data);
      }
    } catch (e) {
      if (section.optional && e instanceof ApiError && e.status === 404) {
        // This corral has no key pools API: hide the section, look again now and then.
        state.keysAvailable = false;
        state.keysRetryAt = Date.now() + KEYS_RETRY_MS;
        box.hidden = true;
        return;
      }
      if (e instanceof ApiError) {
        errorEl.hidden = false;
        errorEl.textContent = e.message;
      }
      throw e;
    }
  }

  function setConnection(problem) {
    const conn = $('conn');
    conn.hidden = false;
    conn.className = `conn ${problem ? 'bad' : 'ok'}`;
    conn.textContent = problem ? `Offline: ${problem}; retrying` : 'Live';
    if (!problem) {
      const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      $('updated').textContent = `updated ${timeFmt.format(new Date())} (${tz})`;
    }
  }

  /** Runs an admin action from a button, then refreshes at once. */
  async function act(button, fn) {
    button.disabled = true;
    try {
      await fn();
    } catch (e) {
      if (e instanceof AuthError) { showLogin(e.message); return; }
      const box = button.closest('section');
      const errorEl = box && box.querySelector('.section-error');
      if (errorEl) { errorEl.hidden = false; errorEl.textContent = e.message; }
    } finally {
      button.disabled = false;
    }
    poll();
  }

  // ---------------------------------------------------------------- backends

  function renderBackends(data) {
    const backends = (data && data.backends) || [];
    const up = backends.filter((b) => b.up).length;
    $('backends-summary').textContent = `${up} of ${backends.length} up`;
    $('stat-inflight').textContent = fmtInt(backends.reduce((a, b) => a + Number(b.inflight || 0), 0));
    fill($('backend-list'), backends.length ? backends.map(backendCard) : h('p', { class: 'muted', text: 'No backends configured.' }));
  }

  function backendCard(b) {
    const circuit = b.circuit || 'closed';
    return h('article', { class: `card backend ${b.up ? 'up' : 'down'}`, 'data-backend': b.name },
      h('header', {},
        h('h3', { text: b.name }),
        badge(b.up ? 'up' : 'down', b.up ? 'ok' : 'bad'),
        badge(`circuit ${circuit.replace('_', '-')}`, circuit === 'closed' ? 'neutral' : circuit === 'open' ? 'bad' : 'warn'),
        badge(b.kind || '?', 'neutral'),
        b.priority !== undefined ? badge(`tier ${b.priority}`, 'neutral') : null),
      h('div', { class: 'muted url', text: b.url || '' }),
      memoryBar(b),
      h('dl', { class: 'metrics' },
        metric('in-flight', fmtInt(b.inflight), 'inflight'),
        metric('EWMA latency', fmtMs(b.ewma_latency_ms)),
        metric('EWMA TTFB', fmtMs(b.ewma_ttfb_ms)),
        metric('failures', fmtInt(b.consecutive_failures))),
      residentList(b.resident || []),
      b.last_error ? h('p', { class: 'error last-error', text: `last error: ${b.last_error}` }) : null);
  }

  function metric(label, value, cls) {
    return h('div', { class: cls || null }, h('dt', { text: label }), h('dd', { text: value }));
  }

  function memoryBar(b) {
    const used = Number(b.memory_used || 0);
    const reserved = Number(b.reserved_memory || 0);
    const max = b.memory_max === null || b.memory_max === undefined ? null : Number(b.memory_max);
    const scale = max && max > 0 ? max : Math.max(used + reserved, 1);
    const usedSeg = h('span', { class: 'seg used' });
    const reservedSeg = h('span', { class: 'seg reserved' });
    usedSeg.style.width = `${Math.min(100, (used / scale) * 100)}%`;
    reservedSeg.style.width = `${Math.max(0, Math.min(100 - (used / scale) * 100, (reserved / scale) * 100))}%`;
    const label = max === null
      ? `${fmtBytes(used)} used + ${fmtBytes(reserved)} reserved · no memory limit`
      : `${fmtBytes(used)} used + ${fmtBytes(reserved)} reserved of ${fmtBytes(max)}`;
    return h('div', { class: 'memory' },
      h('div', { class: `bar ${max === null ? 'unlimited' : ''}`, title: label }, usedSeg, reservedSeg),
      h('div', { class: 'muted small', text: label }));
  }

  function residentList(resident) {
    if (!resident.length) return h('p', { class: 'muted small', text: 'no models resident' });
    return h('ul', { class: 'resident' }, resident.map((m) => h('li', {},
      h('span', { class: 'model', text: m.name }),
      h('span', { class: 'muted', text: ` ${fmtBytes(m.size_vram ?? m.size)} VRAM` }),
      m.expires_at ? h('span', { class: 'muted', text: ` · until ${fmtTime(m.expires_at)}` }) : null)));
  }

  // ---------------------------------------------------------------- key pools

  function renderKeys(data) {
    const pools = (data && data.pools) || [];
    fill($('pool-list'), pools.length ? pools.map(poolBlock) : h('p', { class: 'muted', text: 'No key pools.' }));
    tickCountdowns();
  }

  function poolBlock(pool) {
    const keys = pool.keys || [];
    return h('div', { class: 'pool', 'data-pool': pool.name },
      h('h3', {}, pool.name, ' ',
        badge(`${fmtInt(pool.active)} active`, 'ok'),
        badge(`${fmtInt(pool.penalized)} penalized`, pool.penalized ? 'warn' : 'neutral'),
        badge(`${fmtInt(pool.disabled)} disabled`, pool.disabled ? 'bad' : 'neutral')),
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Key', 'State', 'Penalty', 'Requests 2h', 'Tokens 2h', 'Last used', 'Category', '']
          .map((t, i) => h('th', { class: i >= 3 && i <= 4 ? 'num' : null, text: t })))),
        h('tbody', {}, keys.map(keyRow)))));
  }

  function keyRow(k) {
    const stateKind = { active: 'ok', penalized: 'warn', disabled: 'bad' }[k.state] || 'neutral';
    const penalty = k.state === 'penalized' && k.penalty_until
      ? h('span', { class: 'countdown', 'data-until': k.penalty_until, title: `until ${fmtDateTime(k.penalty_until)}` })
      : h('span', { class: 'muted', text: '–' });
    const enable = k.state === 'disabled';
    return h('tr', { 'data-key': k.id },
      h('td', {}, h('code', { text: k.prefix || String(k.id) })),
      h('td', {}, badge(k.state, stateKind),
        k.state === 'disabled' && k.disabled_reason
          ? h('span', {
            class: 'muted',
            text: ` ${k.disabled_reason === 'failures' ? 'refused upstream, re-probing' : 'by an admin'}`,
            title: k.disabled_since ? `since ${fmtDateTime(k.disabled_since)}` : '',
          })
          : null),
      h('td', {}, penalty),
      h('td', { class: 'num', text: fmtInt(k.requests_2h) }),
      h('td', { class: 'num', text: fmtCompact(k.tokens_2h) }),
      h('td', { text: fmtTime(k.last_used) }),
      h('td', { text: k.category || '' }),
      h('td', {}, h('button', {
        type: 'button', class: 'small', text: enable ? 'Enable' : 'Disable',
        onclick: (ev) => act(ev.currentTarget, () => api(`/admin/api/keys/${encodeURIComponent(k.id)}/${enable ? 'enable' : 'disable'}`, { method: 'POST' })),
      })));
  }

  function tickCountdowns() {
    const now = Date.now();
    for (const el of document.querySelectorAll('[data-until]')) {
      const until = parseTime(el.getAttribute('data-until'));
      el.textContent = until ? fmtCountdown(until.getTime() - now) : '–';
    }
  }

  // ---------------------------------------------------------------- 24 h summary

  function renderSummary(data) {
    $('stat-requests').textContent = fmtInt(data.requests);
    $('stat-errors').textContent = fmtInt(data.errors);
    $('stat-tokens-in').textContent = fmtCompact(data.tokens_in);
    $('stat-tokens-out').textContent = fmtCompact(data.tokens_out);
    fill($('sparkline'), sparkline(data.hourly || []));
  }

  function sparkline(hourly) {
    const W = 240;
    const H = 48;
    const max = Math.max(1, ...hourly.map((x) => x.requests || 0));
    const bw = W / Math.max(hourly.length, 1);
    return svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'spark', role: 'img', 'aria-label': 'requests per hour, last 24 hours' },
      hourly.map((x, i) => {
        const bh = ((x.requests || 0) / max) * (H - 2);
        const d = parseTime(x.t);
        return svg('rect', { x: (i * bw + 1).toFixed(1), y: (H - bh).toFixed(1), width: Math.max(bw - 2, 1).toFixed(1), height: Math.max(bh, 0.5).toFixed(1), class: 'spark-bar' },
          svg('title', { text: `${d ? hourFmt.format(d) : ''}: ${fmtInt(x.requests)} requests, ${fmtInt(x.tokens)} tokens` }));
      }));
  }

  // ---------------------------------------------------------------- token usage chart

  function renderWindowButtons() {
    fill($('usage-windows'), WINDOWS.map((w) => h('button', {
      type: 'button', class: w === state.window ? 'active' : null, text: w, 'aria-pressed': w === state.window ? 'true' : 'false',
      onclick: () => {
        state.window = w;
        delete state.lastJson.usage;
        renderWindowButtons();
        const usage = sections.find((s) => s.id === 'usage');
        loadSection(usage).catch((e) => { if (e instanceof AuthError) showLogin(e.message); });
      },
    })));
  }

  /** Groups models into at most MAX_SERIES series, largest first, the rest as "other". */
  function usageSeries(data, n) {
    const models = Object.entries(data.models || {}).map(([name, v]) => {
      const values = Array.from({ length: n }, (_, i) => Number((v.tokens || [])[i] || 0));
      return { name, values, sum: values.reduce((a, b) => a + b, 0) };
    }).sort((a, b) => b.sum - a.sum || a.name.localeCompare(b.name));
    if (models.length <= MAX_SERIES) return models;
    const kept = models.slice(0, MAX_SERIES - 1);
    const other = { name: 'other', values: new Array(n).fill(0), sum: 0 };
    for (const m of models.slice(MAX_SERIES - 1)) {
      m.values.forEach((v, i) => { other.values[i] += v; });
      other.sum += m.sum;
    }
    return [...kept, other];
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    const f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  function renderUsage(data) {
    const times = (data.buckets || []).map(parseTime);
    const n = times.length;
    const series = usageSeries(data, n);
    const total = Array.from({ length: n }, (_, i) => Number(((data.total || {}).tokens || [])[i] || 0));
    const stackedTop = Array.from({ length: n }, (_, i) => series.reduce((a, s) => a + s.values[i], 0));
    const W = 960; const H = 260; const L = 56; const R = 12; const T = 12; const B = 28;
    const ymax = niceMax(Math.max(1, ...total, ...stackedTop));
    const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
    const y = (v) => T + (1 - v / ymax) * (H - T - B);

    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'usage-svg', role: 'img', 'aria-label': `tokens per ${data.step_seconds || 60} s by model` });
    for (let k = 0; k <= 4; k += 1) {
      const v = (ymax * k) / 4;
      root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
        svg('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end', text: fmtCompact(v) }));
    }
    const ticks = Math.min(6, Math.max(n - 1, 0));
    for (let k = 0; k <= ticks && n > 0; k += 1) {
      const i = Math.round((k / Math.max(ticks, 1)) * (n - 1));
      if (!times[i]) continue;
      root.append(svg('text', { x: x(i), y: H - 8, class: 'axis', 'text-anchor': k === 0 ? 'start' : k === ticks ? 'end' : 'middle', text: hourFmt.format(times[i]) }));
    }
    if (n > 0) {
      const base = new Array(n).fill(0);
      series.forEach((s, si) => {
        const top = base.map((b, i) => b + s.values[i]);
        const upper = top.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
        const lower = base.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).reverse();
        root.append(svg('path', { d: `M${upper.join('L')}L${lower.join('L')}Z`, fill: PALETTE[si % PALETTE.length], class: 'area', 'data-model': s.name }));
        top.forEach((v, i) => { base[i] = v; });
      });
      root.append(svg('path', { d: `M${total.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('L')}`, class: 'total-line' }));
    }
    const cursor = svg('line', { y1: T, y2: H - B, class: 'cursor', visibility: 'hidden' });
    const overlay = svg('rect', { x: L, y: T, width: W - L - R, height: H - T - B, class: 'overlay' });
    root.append(cursor, overlay);

    const tip = h('div', { class: 'tooltip', hidden: true });
    overlay.addEventListener('mousemove', (ev) => {
      const box = root.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * W;
      const i = Math.max(0, Math.min(n - 1, Math.round(((px - L) / (W - L - R)) * (n - 1))));
      if (n === 0) return;
      cursor.setAttribute('x1', x(i)); cursor.setAttribute('x2', x(i));
      cursor.setAttribute('visibility', 'visible');
      fill(tip, h('div', { class: 'tip-time', text: times[i] ? fmtDateTime(times[i]) : '' }),
        h('div', { text: `total ${fmtInt(total[i])}` }),
        series.filter((s) => s.values[i] > 0).map((s) => h('div', { text: `${s.name}: ${fmtInt(s.values[i])}` })));
      tip.hidden = false;
      tip.style.left = `${ev.clientX - box.left + 12}px`;
      tip.style.top = `${ev.clientY - box.top + 12}px`;
    });
    overlay.addEventListener('mouseleave', () => { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); });

    // Buckets are oldest first and the last one is the current minute: the last five give a
    // live "what is happening now" number whatever window is shown.
    const recentBuckets = Math.max(1, Math.round(300 / (data.step_seconds || 60)));
    const recent = ((data.total || {}).requests || []).slice(-recentBuckets).reduce((a, b) => a + Number(b || 0), 0);
    $('stat-recent').textContent = fmtInt(recent);
    const sum = total.reduce((a, b) => a + b, 0);
    fill($('usage-chart'), root, tip, n === 0 || sum === 0 ? h('p', { class: 'muted empty', text: 'No tokens in this window.' }) : null);
    fill($('usage-legend'),
      series.map((s, si) => {
        const sw = h('span', { class: 'swatch' });
        sw.style.background = PALETTE[si % PALETTE.length];
        return h('li', {}, sw, `${s.name} `, h('span', { class: 'muted', text: fmtCompact(s.sum) }));
      }),
      h('li', {}, h('span', { class: 'swatch total' }), 'total ', h('span', { class: 'muted', text: fmtCompact(sum) })));
  }

  // ---------------------------------------------------------------- requests

  function statusKind(status) {
    if (status >= 500) return 'bad';
    if (status >= 400) return 'warn';
    return 'ok';
  }

  function renderModels(data) {
    const body = $('model-table').tBodies[0];
    const row = (name, m, cls) => h('tr', { class: cls },
      h('td', { text: name }),
      h('td', { class: 'num', text: fmtInt(m.requests) }),
      h('td', { class: 'num', text: fmtInt(m.errors) }),
      h('td', { class: 'num', text: fmtMs(m.duration_ms.p50) }),
      h('td', { class: 'num', text: fmtMs(m.duration_ms.p95) }),
      h('td', { class: 'num', text: fmtMs(m.ttfb_ms.p50) }),
      h('td', { class: 'num', text: fmtMs(m.ttfb_ms.p95) }),
      h('td', { class: 'num', text: `${fmtCompact(m.tokens_in)} / ${fmtCompact(m.tokens_out)}` }));
    const models = (data && data.by_model) || [];
    const categories = (data && data.by_category) || [];
    if (!models.length) {
      fill(body, h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'No requests yet.' })));
      return;
    }
    fill(body, [
      ...models.map((m) => row(m.model, m, null)),
      ...categories.map((c) => row(`auto: ${c.category}`, c, 'muted')),
    ]);
  }

  function renderRequests(data) {
    const rows = (data && data.requests) || [];
    const body = $('request-table').tBodies[0];
    if (!rows.length) {
      fill(body, h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'No requests yet.' })));
      return;
    }
    fill(body, rows.map((r) => {
      let model = r.model_served && r.model_served !== r.model_requested
        ? `${r.model_requested} → ${r.model_served}` : (r.model_served || r.model_requested || '–');
      if (r.category) model += ` (${r.category})`; // the virtual auto model's pick
      const tokens = `${fmtInt(r.tokens_in)} / ${fmtInt(r.tokens_out)}${r.tokens_estimated ? ' ≈' : ''}`;
      return h('tr', { class: 'clickable', 'data-request': r.request_id, tabindex: 0, title: r.error || null,
        onclick: () => openRequest(r.request_id),
        onkeydown: (ev) => { if (ev.key === 'Enter') openRequest(r.request_id); } },
        h('td', { text: fmtTime(r.time) }),
        h('td', {}, badge(String(r.status), statusKind(r.status))),
        h('td', { text: model }),
        h('td', { text: r.backend || '–' }),
        h('td', { text: r.user || '–' }),
        h('td', { class: 'num', text: fmtMs(r.ttfb_ms) }),
        h('td', { class: 'num', text: fmtMs(r.duration_ms) }),
        h('td', { class: 'num', text: tokens }));
    }));
  }

  async function openRequest(id) {
    const dialog = $('request-dialog');
    $('request-dialog-id').textContent = id;
    fill($('request-dialog-fields'));
    $('request-dialog-body').textContent = 'loading…';
    if (!dialog.open) dialog.showModal();
    try {
      const r = await api(`/admin/api/requests/${encodeURIComponent(id)}`);
      const fields = [
        ['time', fmtDateTime(r.time)], ['status', r.status], ['user', r.user], ['client ip', r.client_ip],
        ['dialect', r.dialect], ['model requested', r.model_requested], ['model served', r.model_served],
        ['category', r.category], ['backend', r.backend], ['key', r.key_id],
        ['tokens in / out', `${fmtInt(r.tokens_in)} / ${fmtInt(r.tokens_out)}${r.tokens_estimated ? ' (estimated)' : ''}`],
        ['shared', r.shared ? "yes: the answer of an identical request's upstream call (its tokens are counted there)" : null],
        ['TTFB', fmtMs(r.ttfb_ms)], ['duration', fmtMs(r.duration_ms)], ['error', r.error],
      ].filter(([, v]) => v !== null && v !== undefined && v !== '');
      fill($('request-dialog-fields'), fields.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: String(v) })]));
      $('request-dialog-body').textContent = prettyBody(r.body);
    } catch (e) {
      if (e instanceof AuthError) { dialog.close(); showLogin(e.message); return; }
      $('request-dialog-body').textContent = `Could not load the request: ${e.message}`;
    }
  }

  function prettyBody(body) {
    if (body === null || body === undefined) return '(no body stored for this request)';
    try { return JSON.stringify(JSON.parse(body), null, 2); } catch { return String(body); }
  }

  // ---------------------------------------------------------------- users

  function renderUsers(data) {
    const users = (data && data.users) || [];
    fill($('user-table').tBodies[0], users.map((u) => h('tr', { 'data-user': u.name, class: u.active ? null : 'inactive' },
      h('td', { text: u.name }),
      h('td', {}, u.admin ? badge('admin', 'warn') : badge('user', 'neutral')),
      h('td', {}, u.active ? badge('active', 'ok') : badge('inactive', 'bad')),
      h('td', { class: 'num', text: u.rpm ? fmtInt(u.rpm) : '–' }),
      h('td', { class: 'num', text: u.tpm ? fmtInt(u.tpm) : '–' }),
      h('td', { text: fmtDateTime(u.created_at) }),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'small', 'data-action': u.active ? 'deactivate' : 'activate', text: u.active ? 'Deactivate' : 'Activate',
          onclick: (ev) => act(ev.currentTarget, () => userAction(u.name, u.active ? 'deactivate' : 'activate')) }),
        h('button', { type: 'button', class: 'small', 'data-action': 'rotate', text: 'Rotate token',
          onclick: (ev) => {
            if (!window.confirm(`Rotate the token of ${u.name}? The old token stops working at once.`)) return;
            act(ev.currentTarget, async () => showToken(`New token for ${u.name}`, (await userAction(u.name, 'rotate')).token));
          } })))));
  }

  function userAction(name, action) {
    return api(`/admin/api/users/${encodeURIComponent(name)}/${action}`, { method: 'POST' });
  }

  async function onCreateUser(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const name = $('user-name').value.trim();
    if (!name) return;
    const body = { name, admin: $('user-admin').checked };
    const rpm = $('user-rpm').value; const tpm = $('user-tpm').value;
    if (rpm !== '') body.rpm = Number(rpm);
    if (tpm !== '') body.tpm = Number(tpm);
    await act(form.querySelector('button[type=submit]'), async () => {
      const res = await api('/admin/api/users', { method: 'POST', body });
      form.reset();
      showToken(`Token for ${res.user ? res.user.name : name}`, res.token);
    });
  }

  function showToken(title, token) {
    $('token-once-title').textContent = title;
    $('token-once-value').textContent = token || '(the server returned no token)';
    $('token-once').hidden = false;
  }

  async function copyToken() {
    const code = $('token-once-value');
    try {
      await navigator.clipboard.writeText(code.textContent);
      $('token-copy').textContent = 'Copied';
    } catch {
      // Clipboard needs a secure context; fall back to selecting the text for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $('token-copy').textContent = 'Press Ctrl+C';
    }
  }

  function dismissToken() {
    $('token-once-value').textContent = '';
    $('token-once').hidden = true;
    $('token-copy').textContent = 'Copy';
  }

  // ---------------------------------------------------------------- start

  function init() {
    $('login-form').addEventListener('submit', onLogin);
    $('logout').addEventListener('click', () => showLogin(''));
    $('user-form').addEventListener('submit', onCreateUser);
    $('token-copy').addEventListener('click', copyToken);
    $('token-dismiss').addEventListener('click', dismissToken);
    $('request-dialog-close').addEventListener('click', () => $('request-dialog').close());
    renderWindowButtons();
    setInterval(tickCountdowns, 1000);
    if (sessionStorage.getItem(TOKEN_KEY)) showApp(); else showLogin('');
  }

  init();
})();
