// Galen dashboard pages: helpers shared by dashboard.js and patient.js.
// Plain ES2020, no dependencies, no modules: everything hangs off the one
// global `window.Galen`. Loaded before the page script; touches the DOM only
// when a helper is called. Never log patient data to the console.
(() => {
  'use strict';

  const UNIT_LABELS = { Cel: '°C', '[degF]': '°F', 'mm[Hg]': 'mmHg', 'mmHg': 'mmHg', '/min': '/min', '%': '%' };

  const $ = (id) => document.getElementById(id);

  // RFC 3339 -> epoch milliseconds (fractional, keeps sub-ms digits).
  function parseTime(s) {
    if (typeof s !== 'string') return NaN;
    const m = /^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})$/.exec(s.trim());
    if (!m) return Date.parse(s);
    let zone = m[3].toUpperCase();
    if (zone !== 'Z' && zone.length === 5) zone = zone.slice(0, 3) + ':' + zone.slice(3);
    const base = Date.parse(m[1].replace(/[t ]/, 'T') + zone);
    return m[2] ? base + Number('0.' + m[2]) * 1000 : base;
  }

  // ---------- server clock ----------

  let skewMs = 0; // server clock minus browser clock

  const serverNow = () => Date.now() + skewMs;

  // Estimate the skew from a response's `generated_at`, the request having
  // been sent at browser time t0 and its body read at t1.
  function syncServerClock(generatedAt, t0, t1) {
    const gen = parseTime(generatedAt);
    if (Number.isFinite(gen)) skewMs = gen - (t0 + t1) / 2;
  }

  // ---------- formatting ----------

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function formatAge(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + ' s ago';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ago';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ago';
    return Math.floor(h / 24) + ' d ago';
  }

  // UCUM unit code -> display label; `fallback` when there is none.
  function unitLabel(u, fallback = '') {
    if (typeof u !== 'string' || u === '') return fallback;
    return Object.prototype.hasOwnProperty.call(UNIT_LABELS, u) ? UNIT_LABELS[u] : u;
  }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }

  // Local wall-clock time as HH:MM:SS.
  function clockText(d) {
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  // Run fn now and then once a second, aligned to the next wall-clock second
  // so the clock does not drift visibly.
  function everySecond(fn) {
    fn();
    setTimeout(() => everySecond(fn), 1000 - (Date.now() % 1000) + 5);
  }

  // ---------- API ----------

  // `path` with the optional `?ward=` filter.
  function withWard(path, ward) {
    return path + (ward ? '?ward=' + encodeURIComponent(ward) : '');
  }

  // GET an API URL asking for JSON. On 401 (signed out, real mode) the
  // browser is sent to the login page; the response is returned either way.
  async function apiFetch(url) {
    const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
    if (res.status === 401) location.assign('/login');
    return res;
  }

  // ---------- live stream ----------

  // Show the connection state ('connecting' | 'live' | 'lost') in the top bar
  // (#conn-status) and the lost-connection banner (#conn-banner).
  function setConn(s) {
    const connStatus = $('conn-status');
    const text = s === 'live' ? 'Live' : s === 'lost' ? 'Connection lost — reconnecting…' : 'Connecting…';
    if (connStatus.dataset.state !== s) connStatus.dataset.state = s;
    setText(connStatus, text);
    $('conn-banner').hidden = s !== 'lost';
  }

  // A `measurements` event's payload as an array, or null if it is not JSON.
  function measurementList(ev) {
    let list;
    try { list = JSON.parse(ev.data); } catch (_) { return null; }
    return Array.isArray(list) ? list : [list];
  }

  // The live measurement stream (SSE) with its connection status and
  // reconnect. hooks:
  //   url()             the stream URL, read on every (re)connect
  //   measurements(ev)  a `measurements` event
  //   resync()          the server says we missed events, or the stream is
  //                     back after an error: reload whatever the page shows
  //   open(), lost()    optional, on open / on error
  // Returns { connect(), restart(), close() }; restart() reconnects (e.g. to
  // a new URL) without treating the next open as recovery from an error.
  function liveStream(hooks) {
    let es = null;
    let hadError = false;
    let reconnectTimer = 0;
    let reconnectDelay = 1000;

    function connect() {
      clearTimeout(reconnectTimer);
      if (es) es.close();
      const me = new EventSource(hooks.url());
      es = me;
      me.addEventListener('measurements', (ev) => { if (me === es) hooks.measurements(ev); });
      me.addEventListener('resync', () => { if (me === es) hooks.resync(); });
      me.onopen = () => {
        if (me !== es) return;
        if (hooks.open) hooks.open();
        reconnectDelay = 1000;
        setConn('live');
        if (hadError) {
          hadError = false;
          hooks.resync(); // catch up on whatever we missed while disconnected
        }
      };
      me.onerror = () => {
        if (me !== es) return;
        if (hooks.lost) hooks.lost();
        hadError = true;
        setConn('lost');
        if (me.readyState === EventSource.CLOSED) {
          // The browser gave up (e.g. HTTP error status); retry ourselves with backoff.
          reconnectTimer = setTimeout(connect, reconnectDelay);
          reconnectDelay = Math.min(reconnectDelay * 2, 30000);
        }
      };
    }

    return {
      connect,
      restart() { hadError = false; connect(); },
      close() { if (es) es.close(); },
    };
  }

  window.Galen = Object.freeze({
    $,
    parseTime,
    serverNow,
    syncServerClock,
    setText,
    formatAge,
    unitLabel,
    pad2,
    clockText,
    everySecond,
    withWard,
    apiFetch,
    setConn,
    measurementList,
    liveStream,
  });
})();
