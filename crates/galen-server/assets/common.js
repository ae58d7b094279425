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

  // An SSE event's JSON payload as an object, or null.
  function jsonData(ev) {
    try {
      const d = JSON.parse(ev.data);
      return d && typeof d === 'object' ? d : null;
    } catch (_) { return null; }
  }

  // The live measurement stream (SSE) with its connection status and
  // reconnect. hooks:
  //   url()             the stream URL, read on every (re)connect
  //   measurements(ev)  a `measurements` event
  //   alarm(obj)        optional, an `alarm` event (one alarm transition)
  //   score(obj)        optional, a `score` event (one score change)
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
      if (hooks.alarm) me.addEventListener('alarm', (ev) => { if (me === es) { const d = jsonData(ev); if (d) hooks.alarm(d); } });
      if (hooks.score) me.addEventListener('score', (ev) => { if (me === es) { const d = jsonData(ev); if (d) hooks.score(d); } });
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

  // ---------- sending ----------

  // POST (or other method) a JSON body. Resolves to { ok, status, data,
  // message }; `message` is the server's error text (or ours) when !ok.
  // Never throws.
  async function apiSend(method, url, body) {
    let res;
    try {
      res = await fetch(url, {
        method,
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      return { ok: false, status: 0, data: null, message: 'Cannot reach the server — check the connection and try again.' };
    }
    if (res.status === 401) {
      location.assign('/login');
      return { ok: false, status: 401, data: null, message: 'Signed out.' };
    }
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    let message = '';
    if (!res.ok) {
      message = data && typeof data.message === 'string' && data.message
        ? data.message
        : 'The server refused the request (HTTP ' + res.status + ').';
    }
    return { ok: res.ok, status: res.status, data, message };
  }

  // ---------- DOM building (text only, never HTML) ----------

  // el('span', { class: 'x', text: 'y', title: 'z', 'data-a': 'b' }, [children])
  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const k of Object.keys(props)) {
        const v = props[k];
        if (v == null || v === false) continue;
        if (k === 'text') node.textContent = String(v);
        else if (k === 'class') node.className = String(v);
        else if (k === 'hidden') node.hidden = !!v;
        else if (k === 'type' && tag === 'button') node.type = String(v);
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    if (children) for (const c of children) if (c != null) node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    return node;
  }

  // Local time as HH:MM:SS, with the date in front when not today.
  function timeText(ms) {
    if (!Number.isFinite(ms)) return '–';
    const d = new Date(ms);
    const hms = clockText(d);
    const today = new Date(serverNow());
    if (d.toDateString() === today.toDateString()) return hms;
    return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short' }) + ' ' + hms;
  }

  // A duration as "m:ss" (or "h:mm:ss").
  function durationText(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = pad2(s % 60);
    return h ? h + ':' + pad2(m) + ':' + ss : m + ':' + ss;
  }

  // ---------- clinical vocabulary ----------

  const PRIORITY_RANK = { high: 3, medium: 2, low: 1 };
  const PRIORITY_TEXT = { high: 'HIGH', medium: 'MEDIUM', low: 'LOW' };
  const PRIORITY_SHORT = { high: 'HIGH', medium: 'MED', low: 'LOW' };

  const PARAMETERS = {
    respiratory_rate: { label: 'Respiration rate', short: 'RR' },
    spo2: { label: 'SpO₂', short: 'SpO₂' },
    oxygen: { label: 'Air or oxygen', short: 'Air/O₂' },
    systolic_bp: { label: 'Systolic BP', short: 'SBP' },
    heart_rate: { label: 'Pulse / heart rate', short: 'HR' },
    consciousness: { label: 'Consciousness (ACVPU)', short: 'ACVPU' },
    temperature: { label: 'Temperature', short: 'Temp' },
  };

  function parameterLabel(code, short) {
    const p = PARAMETERS[code];
    if (p) return short ? p.short : p.label;
    return code == null ? '' : String(code);
  }

  const TRANSITIONS = {
    raised: 'Raised',
    priority_escalated: 'Priority raised',
    escalated: 'Escalated',
    reminded: 'Reminder',
    acknowledged: 'Acknowledged',
    silenced: 'Silenced',
    silence_expired: 'Silence ended',
    latched: 'Latched (condition over, not yet acknowledged)',
    condition_returned: 'Condition returned',
    resolved: 'Resolved (condition over)',
    resolved_by_user: 'Resolved by user',
  };

  function transitionText(code) {
    return Object.prototype.hasOwnProperty.call(TRANSITIONS, code) ? TRANSITIONS[code] : String(code || 'event');
  }

  const ALARM_FIELDS = ['alarm', 'patient', 'ward', 'bed', 'rule', 'kind', 'parameter', 'device', 'priority', 'state',
    'raised_at', 'escalation_level', 'role', 'silenced_until', 'value', 'threshold', 'message'];

  // Apply one alarm transition (SSE `alarm` event) to a Map of open alarms
  // keyed by alarm id. Returns true if the map changed.
  function applyAlarmEvent(map, ev) {
    if (!ev || ev.alarm == null) return false;
    const id = String(ev.alarm);
    if (ev.transition === 'resolved' || ev.transition === 'resolved_by_user' || ev.state === 'resolved') {
      return map.delete(id);
    }
    const cur = map.get(id) || {};
    const next = Object.assign({}, cur);
    for (const k of ALARM_FIELDS) if (Object.prototype.hasOwnProperty.call(ev, k)) next[k] = ev[k];
    next.alarm = id;
    map.set(id, next);
    return true;
  }

  // An alarm's message as the server wrote it, with UCUM unit codes shown
  // the way people write them (mm[Hg] -> mmHg, Cel -> °C).
  function alarmMessage(a) {
    const m = a && a.message != null ? String(a.message) : 'alarm';
    return m.replace(/mm\[Hg\]/g, 'mmHg').replace(/\[degF\]/g, '°F').replace(/(\d\s*)Cel\b/g, '$1°C');
  }

  // Align an element's alarm flashing (a 0.5 s CSS animation that starts
  // now) to the page's timeline, so all flashing elements blink in step.
  // Call in the same task that makes the animation apply.
  function syncFlash(node) {
    const t = document.timeline && Number(document.timeline.currentTime);
    if (node && Number.isFinite(t)) node.style.animationDelay = -(t % 500).toFixed(1) + 'ms';
  }

  function sortAlarms(list) {
    return list.slice().sort((a, b) =>
      (PRIORITY_RANK[b.priority] || 0) - (PRIORITY_RANK[a.priority] || 0) ||
      parseTime(a.raised_at) - parseTime(b.raised_at));
  }

  // Whether an alarm is silenced (audio paused) at `now`.
  function silencedAt(alarm, now) {
    const t = parseTime(alarm && alarm.silenced_until);
    return Number.isFinite(t) && t > now ? t : 0;
  }

  function needsAck(alarm) {
    return alarm && alarm.state !== 'acknowledged';
  }

  // State as words, e.g. "active", "acknowledged", "silenced 1:20".
  function alarmStateText(alarm, now) {
    const until = silencedAt(alarm, now);
    const st = alarm && alarm.state ? String(alarm.state) : 'active';
    return until ? st + ', silenced ' + durationText(until - now) : st;
  }

  // Colour class of a score's band: high | medium | lowmed | low | none.
  function bandClass(score) {
    if (!score || typeof score !== 'object') return 'none';
    const b = String(score.band || '').toLowerCase();
    if (b === 'high') return 'high';
    if (b === 'medium' || b === 'positive') return 'medium';
    if (b === 'low-medium') return 'lowmed';
    if (b === 'low' || b === 'negative') return 'low';
    return Number(score.band_rank) > 0 ? 'lowmed' : 'low';
  }

  const TABLE_SHORT = { news2: 'NEWS2', qsofa: 'qSOFA', mews: 'MEWS' };
  function tableShort(score) {
    const id = score && score.table ? String(score.table) : '';
    return TABLE_SHORT[id] || id.toUpperCase() || 'Score';
  }

  // "Missing: temperature (stale), consciousness (never recorded)".
  function missingText(score, short) {
    const list = score && Array.isArray(score.missing) ? score.missing : [];
    return list.map((m) => parameterLabel(m && m.parameter, short) +
      (!short && m && m.reason === 'never_recorded' ? ' (never recorded)' : !short && m && m.reason === 'stale' ? ' (too old)' : '')).join(', ');
  }

  // ---------- the person acting ----------

  const ACTOR_KEY = 'galen.actor';
  function rememberedActor() {
    try { return localStorage.getItem(ACTOR_KEY) || ''; } catch (_) { return ''; }
  }
  function rememberActor(name) {
    try { localStorage.setItem(ACTOR_KEY, name); } catch (_) { /* private mode */ }
  }

  // ---------- action dialog ----------

  let dialogParts = null;

  function buildDialog() {
    const title = el('h2', { class: 'dlg-title', id: 'action-title' });
    const subject = el('p', { class: 'dlg-subject', id: 'action-subject' });
    const by = el('input', { id: 'action-by', name: 'by', type: 'text', autocomplete: 'name', maxlength: '200', required: true });
    const byRow = el('label', { class: 'dlg-field', for: 'action-by' }, [el('span', { text: 'Your name' }), by]);
    const seconds = el('select', { id: 'action-seconds', name: 'seconds' });
    for (const s of [30, 60, 120, 300, 600]) {
      seconds.appendChild(el('option', { value: String(s), text: s < 60 ? s + ' seconds' : (s / 60) + (s === 60 ? ' minute' : ' minutes') }));
    }
    seconds.value = '120';
    const secondsRow = el('label', { class: 'dlg-field', for: 'action-seconds' }, [el('span', { text: 'Silence for' }), seconds]);
    const reasonLabel = el('span', { text: 'Reason' });
    const reason = el('input', { id: 'action-reason', name: 'reason', type: 'text', maxlength: '500', autocomplete: 'off' });
    const reasonRow = el('label', { class: 'dlg-field', for: 'action-reason' }, [reasonLabel, reason]);
    const error = el('p', { class: 'dlg-error', id: 'action-error', role: 'alert', hidden: true });
    const cancel = el('button', { type: 'button', class: 'btn', id: 'action-cancel', text: 'Cancel' });
    const confirm = el('button', { type: 'submit', class: 'btn btn-primary', id: 'action-confirm', text: 'Confirm' });
    const form = el('form', { class: 'dlg-form', method: 'dialog', novalidate: true },
      [title, subject, byRow, secondsRow, reasonRow, error, el('div', { class: 'dlg-buttons' }, [cancel, confirm])]);
    const dialog = el('dialog', { class: 'action-dialog', 'aria-labelledby': 'action-title', 'aria-describedby': 'action-subject' }, [form]);
    document.body.appendChild(dialog);
    dialogParts = { dialog, form, title, subject, by, seconds, secondsRow, reason, reasonRow, reasonLabel, error, cancel, confirm, current: null };
    cancel.addEventListener('click', () => finishDialog(null));
    dialog.addEventListener('cancel', (ev) => { ev.preventDefault(); finishDialog(null); });
    form.addEventListener('submit', (ev) => { ev.preventDefault(); submitDialog(); });
    return dialogParts;
  }

  function finishDialog(result) {
    const d = dialogParts;
    if (!d || !d.current) return;
    const cur = d.current;
    d.current = null;
    if (d.dialog.open) d.dialog.close();
    cur.resolve(result);
  }

  async function submitDialog() {
    const d = dialogParts;
    const cur = d && d.current;
    if (!cur || cur.busy) return;
    const by = d.by.value.trim();
    const reason = d.reason.value.trim();
    const showError = (msg, field) => {
      d.error.textContent = msg;
      d.error.hidden = false;
      if (field) field.focus();
    };
    if (!by) return showError('Enter your name: every alarm action records who acted.', d.by);
    if (cur.opts.reason === 'required' && !reason) return showError('Enter a reason.', d.reason);
    const values = { by, reason, seconds: Number(d.seconds.value) };
    cur.busy = true;
    d.confirm.disabled = true;
    d.error.hidden = true;
    let outcome;
    try {
      outcome = await cur.opts.submit(values);
    } catch (_) {
      outcome = { ok: false, message: 'The action failed.' };
    }
    cur.busy = false;
    d.confirm.disabled = false;
    if (d.current !== cur) return;
    if (outcome && outcome.ok) {
      rememberActor(by);
      finishDialog(outcome);
    } else {
      showError((outcome && outcome.message) || 'The action failed.', null);
    }
  }

  // Ask for the name of the person acting (remembered in localStorage) and
  // optionally a reason / silence duration, then run opts.submit(values)
  // (values = { by, reason, seconds }); it resolves to { ok, message }. The
  // dialog stays open showing the message until it succeeds or is cancelled.
  // Resolves to submit's outcome, or null when cancelled.
  //   opts: { title, subject, confirm, reason: 'none'|'optional'|'required', seconds: bool, submit }
  function actionDialog(opts) {
    const d = dialogParts || buildDialog();
    if (d.current) finishDialog(null);
    return new Promise((resolve) => {
      d.current = { opts, resolve, busy: false };
      d.title.textContent = opts.title || 'Confirm';
      d.subject.textContent = opts.subject || '';
      d.subject.hidden = !opts.subject;
      d.confirm.textContent = opts.confirm || 'Confirm';
      d.confirm.disabled = false;
      d.by.value = rememberedActor();
      d.reason.value = '';
      d.reasonRow.hidden = !opts.reason || opts.reason === 'none';
      d.reasonLabel.textContent = opts.reason === 'required' ? 'Reason (required)' : 'Reason (optional)';
      d.reason.required = opts.reason === 'required';
      d.secondsRow.hidden = !opts.seconds;
      d.error.hidden = true;
      d.error.textContent = '';
      d.dialog.dataset.action = opts.action || '';
      d.dialog.showModal();
      d.by.focus();
      d.by.select();
    });
  }

  const ACTIONS = {
    acknowledge: { title: 'Acknowledge alarm', confirm: 'Acknowledge', reason: 'optional', seconds: false },
    silence: { title: 'Silence alarm (audio paused)', confirm: 'Silence', reason: 'optional', seconds: true },
    resolve: { title: 'Resolve alarm', confirm: 'Resolve', reason: 'required', seconds: false },
  };

  // Run an alarm action through the dialog. Resolves to the server's answer
  // ({ alarm, entry, open }) or null if cancelled. `onGone(message)` is
  // called when the alarm is no longer open (404) so the caller can refresh.
  function alarmAction(alarm, action, where, onGone) {
    const a = ACTIONS[action];
    const prio = PRIORITY_TEXT[alarm.priority] || String(alarm.priority || '').toUpperCase();
    const subject = [where, prio ? prio + ' priority' : '', alarmMessage(alarm)].filter(Boolean).join(' — ');
    return actionDialog({
      action,
      title: a.title,
      subject,
      confirm: a.confirm,
      reason: a.reason,
      seconds: a.seconds,
      async submit(v) {
        const body = { by: v.by };
        if (v.reason) body.reason = v.reason;
        if (action === 'silence') body.seconds = v.seconds;
        const r = await apiSend('POST', '/api/v1/alarms/' + encodeURIComponent(alarm.alarm) + '/' + action, body);
        if (r.ok) return { ok: true, data: r.data };
        if (r.status === 404) {
          if (onGone) onGone();
          return { ok: false, message: 'This alarm is no longer open (' + r.message + '). The view has been refreshed.' };
        }
        if (r.status === 409) {
          if (onGone) onGone();
          return { ok: false, message: 'Not possible now: ' + r.message };
        }
        return { ok: false, message: r.message };
      },
    }).then((outcome) => (outcome && outcome.ok ? outcome.data || {} : null));
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
    apiSend,
    el,
    timeText,
    durationText,
    PRIORITY_RANK,
    PRIORITY_TEXT,
    PRIORITY_SHORT,
    parameterLabel,
    transitionText,
    applyAlarmEvent,
    alarmMessage,
    syncFlash,
    sortAlarms,
    silencedAt,
    needsAck,
    alarmStateText,
    bandClass,
    tableShort,
    missingText,
    rememberedActor,
    rememberActor,
    actionDialog,
    alarmAction,
  });
})();
