// Galen patient page: header + one hand-drawn SVG trend chart per vital.
// Plain ES2020, no dependencies. All data text goes in via textContent /
// setAttribute, never innerHTML. Never log patient data to the console.
(() => {
  'use strict';

  const {
    $, parseTime, serverNow, syncServerClock, setText, formatAge, unitLabel, pad2, clockText,
    everySecond, withWard, apiFetch, setConn, measurementList, liveStream,
    apiSend, el, timeText, durationText, PRIORITY_RANK, PRIORITY_TEXT, PRIORITY_SHORT, parameterLabel,
    transitionText, applyAlarmEvent, alarmMessage, syncFlash, sortAlarms, needsAck, alarmStateText, bandClass, tableShort,
    rememberedActor, rememberActor, alarmAction,
  } = window.Galen;

  const SVG_NS = 'http://www.w3.org/2000/svg';

  const CHARTS = [
    { code: 'heart_rate', label: 'Heart rate', unit: '/min', decimals: 0, minSpan: 20 },
    { code: 'spo2', label: 'SpO₂', unit: '%', decimals: 0, minSpan: 6 },
    { code: 'respiratory_rate', label: 'Resp. rate', unit: '/min', decimals: 0, minSpan: 8 },
    { code: 'systolic_bp', label: 'Systolic BP', unit: 'mmHg', decimals: 0, minSpan: 20 },
    { code: 'diastolic_bp', label: 'Diastolic BP', unit: 'mmHg', decimals: 0, minSpan: 20 },
    { code: 'temperature', label: 'Temperature', unit: '°C', decimals: 1, minSpan: 1 },
  ];

  const RANGES = { '1h': 3600, '6h': 6 * 3600, '24h': 24 * 3600, '72h': 72 * 3600 };
  const DEFAULT_RANGE = '24h';
  const TARGET_BUCKETS = 300;
  const REFETCH_OFFLINE_MS = 30 * 1000;   // while the live stream is down
  const REFETCH_ONLINE_MS = 5 * 60 * 1000; // resync even when live
  const SLIDE_MS = 15 * 1000;              // redraw idle charts so the window slides

  const chartsEl = $('charts');
  const pageMessage = $('page-message');
  const clock = $('clock');

  const state = {
    id: null,
    patient: null,
    range: DEFAULT_RANGE,
    staleAfterMs: 60 * 1000,
    charts: [],
    byCode: new Map(),
    loadSeq: 0,
    connected: false,
    lastFetch: 0,
  };

  // ---------- helpers ----------

  function fmt(v, decimals) {
    return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(decimals) : '–';
  }

  async function getJson(url) {
    const res = await apiFetch(url); // on 401 (signed out, real mode) this goes to /login
    if (!res.ok) {
      const err = new Error('HTTP ' + res.status);
      err.status = res.status;
      throw err;
    }
    return res.json();
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    if (attrs) for (const k of Object.keys(attrs)) el.setAttribute(k, String(attrs[k]));
    if (parent) parent.appendChild(el);
    return el;
  }

  // ---------- header ----------

  function patientName(n) {
    if (n == null) return '';
    if (typeof n === 'string') return n;
    const given = Array.isArray(n.given) ? n.given.join(' ') : n.given || '';
    const family = Array.isArray(n.family) ? n.family.join(' ') : n.family || '';
    return (n.text ? String(n.text) : (String(given) + ' ' + String(family))).trim();
  }

  function ageYears(birth) {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(birth || '');
    if (!m) return null;
    const now = new Date(serverNow());
    let age = now.getFullYear() - Number(m[1]);
    const mo = now.getMonth() + 1;
    if (mo < Number(m[2]) || (mo === Number(m[2]) && now.getDate() < Number(m[3]))) age--;
    return age >= 0 && age < 150 ? age : null;
  }

  function renderHeader(p) {
    const name = patientName(p.name) || 'Unnamed patient';
    setText($('patient-name'), name);
    document.title = name + ' — Galen';
    setText($('pf-bed'), p.bed ? String(p.bed) : '–');
    setText($('pf-ward'), p.ward ? String(p.ward) : '–');
    setText($('pf-mrn'), p.identifier && p.identifier.value ? String(p.identifier.value) : '–');
    const sex = p.sex ? String(p.sex) : '';
    setText($('pf-sex'), sex ? sex.charAt(0).toUpperCase() + sex.slice(1) : '–');
    if (p.birth_date) {
      const age = ageYears(String(p.birth_date));
      setText($('pf-birth'), String(p.birth_date) + (age == null ? '' : ' (' + age + ' y)'));
    } else {
      setText($('pf-birth'), '–');
    }
  }

  // ---------- charts: model ----------

  function buildCharts() {
    const tpl = $('chart-template');
    for (const def of CHARTS) {
      const row = tpl.content.firstElementChild.cloneNode(true);
      row.classList.add('c-' + def.code);
      row.dataset.code = def.code;
      const chart = {
        def,
        row,
        latestBox: row.querySelector('.latest'),
        latestValue: row.querySelector('.latest-value'),
        latestUnit: row.querySelector('.latest-unit'),
        latestAge: row.querySelector('.latest-age'),
        svgBox: row.querySelector('.chart-svg'),
        note: row.querySelector('.chart-note'),
        unit: def.unit,
        buckets: [],     // { start, count, min, max, mean } (ms, numbers)
        bucketMs: 0,
        status: 'loading', // loading | ok | error
        latest: null,    // { value, t }
        typicalMs: 0,    // usual spacing between readings in the current series
        dirty: true,
      };
      setText(row.querySelector('.latest-label'), def.label);
      setText(chart.latestUnit, def.unit);
      chart.svgBox.setAttribute('role', 'img');
      chart.svgBox.setAttribute('aria-label', def.label + ' trend');
      chartsEl.appendChild(row);
      state.charts.push(chart);
      state.byCode.set(def.code, chart);
    }
  }

  function rangeMs() { return RANGES[state.range] * 1000; }
  function bucketSeconds() { return Math.max(1, Math.round(RANGES[state.range] / TARGET_BUCKETS)); }

  function num(v) { return typeof v === 'number' && Number.isFinite(v) ? v : NaN; }

  function normaliseSeries(data, bucketMs) {
    const out = [];
    if (Array.isArray(data.buckets)) {
      for (const b of data.buckets) {
        const start = parseTime(b.start);
        const mean = num(b.mean);
        if (!Number.isFinite(start) || !Number.isFinite(mean)) continue;
        const min = Number.isFinite(num(b.min)) ? num(b.min) : mean;
        const max = Number.isFinite(num(b.max)) ? num(b.max) : mean;
        out.push({ start, count: Number.isFinite(num(b.count)) ? num(b.count) : 1, min, max, mean });
      }
    } else if (Array.isArray(data.points)) {
      // Server ignored `bucket`: fold raw points into buckets of our own.
      for (const p of data.points) {
        const t = parseTime(p.time);
        const v = num(p.value);
        if (!Number.isFinite(t) || !Number.isFinite(v)) continue;
        addToBuckets({ buckets: out, bucketMs }, t, v);
      }
    }
    out.sort((a, b) => a.start - b.start);
    return out;
  }

  // Fold one reading into the series (live updates). Returns true if changed.
  function addToBuckets(chart, t, v) {
    const B = chart.bucketMs;
    const list = chart.buckets;
    if (!(B > 0)) return false;
    const last = list[list.length - 1];
    let b = null;
    if (!last) {
      list.push({ start: Math.floor(t / B) * B, count: 1, min: v, max: v, mean: v });
      return true;
    }
    if (t >= last.start + B) {
      const k = Math.floor((t - last.start) / B);
      list.push({ start: last.start + k * B, count: 1, min: v, max: v, mean: v });
      return true;
    }
    // Late reading: look for its bucket among the most recent few.
    for (let i = list.length - 1; i >= 0 && i >= list.length - 5; i--) {
      if (t >= list[i].start && t < list[i].start + B) { b = list[i]; break; }
    }
    if (!b) return false;
    b.count += 1;
    b.mean += (v - b.mean) / b.count;
    if (v < b.min) b.min = v;
    if (v > b.max) b.max = v;
    return true;
  }

  // ---------- charts: drawing ----------

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const f of [1, 2, 5, 10]) if (f * p >= raw) return f * p;
    return 10 * p;
  }

  function timeTicks(from, to, maxTicks) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
    const spanMin = (to - from) / 60000;
    let step = steps[steps.length - 1];
    for (const s of steps) if (spanMin / s <= maxTicks) { step = s; break; }
    const d = new Date(from);
    d.setSeconds(0, 0);
    const minsOfDay = d.getHours() * 60 + d.getMinutes();
    const up = (step - (minsOfDay % step)) % step;
    d.setMinutes(d.getMinutes() + up);
    if (d.getTime() < from) d.setMinutes(d.getMinutes() + step);
    const ticks = [];
    for (let guard = 0; d.getTime() <= to && guard < 50; guard++) {
      ticks.push(d.getTime());
      d.setMinutes(d.getMinutes() + step);
    }
    return ticks;
  }

  function timeLabel(t) {
    const d = new Date(t);
    const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
    if (state.range === '72h' && d.getHours() === 0 && d.getMinutes() === 0) {
      return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
    }
    return hm;
  }

  function draw(chart) {
    chart.dirty = false;
    const W = Math.max(200, Math.round(chart.svgBox.clientWidth || 600));
    const H = Math.max(100, Math.round(chart.svgBox.clientHeight || 170));
    const m = { l: 46, r: 12, t: 10, b: 22 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const to = serverNow();
    const from = to - rangeMs();
    const B = chart.bucketMs;

    // Drop buckets that slid out of the window.
    while (chart.buckets.length && chart.buckets[0].start + B < from) chart.buckets.shift();
    const buckets = chart.buckets.filter((b) => b.start + B >= from && b.start <= to);

    let lo = Infinity;
    let hi = -Infinity;
    for (const b of buckets) {
      if (b.min < lo) lo = b.min;
      if (b.max > hi) hi = b.max;
    }
    const empty = buckets.length === 0;
    if (empty) { lo = 0; hi = 1; }
    if (hi - lo < chart.def.minSpan) {
      const mid = (hi + lo) / 2;
      lo = mid - chart.def.minSpan / 2;
      hi = mid + chart.def.minSpan / 2;
    }
    const yStep = niceStep((hi - lo) / 4);
    const yMin = Math.floor(lo / yStep) * yStep;
    const yMax = Math.ceil(hi / yStep) * yStep;

    const x = (t) => m.l + ((t - from) / (to - from)) * pw;
    const y = (v) => m.t + (1 - (v - yMin) / (yMax - yMin || 1)) * ph;
    const r1 = (n) => Math.round(n * 10) / 10;

    const root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'aria-hidden': 'true', focusable: 'false' });

    // grid + value ticks
    if (!empty) {
      const decimals = yStep < 1 ? (yStep < 0.1 ? 2 : 1) : 0;
      for (let v = yMin, i = 0; v <= yMax + yStep / 2 && i < 20; v += yStep, i++) {
        const yy = r1(y(v));
        svg('line', { class: 'grid-line', x1: m.l, x2: W - m.r, y1: yy, y2: yy }, root);
        const label = svg('text', { class: 'tick-label', x: m.l - 6, y: yy + 4, 'text-anchor': 'end' }, root);
        label.textContent = v.toFixed(decimals);
      }
    }
    // time ticks
    for (const t of timeTicks(from, to, Math.max(2, Math.min(8, Math.floor(pw / 90))))) {
      const xx = r1(x(t));
      svg('line', { class: 'grid-line', x1: xx, x2: xx, y1: m.t, y2: m.t + ph }, root);
      const label = svg('text', { class: 'tick-label', x: xx, y: H - 5, 'text-anchor': 'middle' }, root);
      label.textContent = timeLabel(t);
    }
    svg('line', { class: 'axis', x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph }, root);
    svg('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph }, root);

    if (!empty) {
      // Split into contiguous segments. A gap breaks the line when it is much
      // longer than both the bucket size and the series' usual spacing (so
      // sparse vitals such as cuff blood pressure still draw as a line).
      const diffs = [];
      for (let i = 1; i < buckets.length; i++) diffs.push(buckets[i].start - buckets[i - 1].start);
      diffs.sort((a, b) => a - b);
      const typical = diffs.length ? diffs[Math.floor(diffs.length / 2)] : B;
      const maxGap = 2.5 * Math.max(B, typical);
      chart.typicalMs = typical > 1.5 * B ? typical : 0; // only meaningful for sparse series
      const segments = [];
      let seg = [];
      for (const b of buckets) {
        if (seg.length && b.start - seg[seg.length - 1].start > maxGap) { segments.push(seg); seg = []; }
        seg.push(b);
      }
      if (seg.length) segments.push(seg);

      const clampX = (t) => r1(x(Math.min(to, Math.max(from, t))));
      let band = '';
      let line = '';
      for (const s of segments) {
        const xs = s.map((b) => clampX(b.start + B / 2));
        band += 'M' + s.map((b, i) => xs[i] + ' ' + r1(y(b.max))).join('L');
        for (let i = s.length - 1; i >= 0; i--) band += 'L' + xs[i] + ' ' + r1(y(s[i].min));
        band += 'Z';
        line += 'M' + s.map((b, i) => xs[i] + ' ' + r1(y(b.mean))).join('L');
        if (s.length === 1) line += 'l0.01 0'; // single bucket: round cap draws a dot
      }
      svg('path', { class: 'band', d: band }, root);
      svg('path', { class: 'mean', d: line }, root);
      // Mark readings with dots when they are few and well spaced, and always
      // mark isolated ones, so a lone value stays visible.
      const allDots = buckets.length <= 60 && (typical / (to - from)) * pw > 6;
      for (const s of segments) {
        if (!allDots && s.length > 1) continue;
        for (const b of s) svg('circle', { class: 'dot', cx: clampX(b.start + B / 2), cy: r1(y(b.mean)), r: 3 }, root);
      }
    }

    chart.svgBox.replaceChildren(root);

    let note = '';
    if (chart.status === 'loading' && empty) note = 'Loading…';
    else if (chart.status === 'error' && empty) note = 'Could not load data — retrying';
    else if (empty) note = 'No data in this period';
    setText(chart.note, note);
    chart.note.hidden = note === '';
  }

  function renderLatest(chart, now) {
    const l = chart.latest;
    setText(chart.latestValue, l ? fmt(l.value, chart.def.decimals) : '–');
    setText(chart.latestUnit, chart.unit);
    const age = l ? now - l.t : NaN;
    setText(chart.latestAge, l ? formatAge(age) : 'no reading');
    // Sparse vitals (e.g. cuff BP every 15 min) are only stale when overdue.
    const limit = Math.max(state.staleAfterMs, 2.5 * (chart.typicalMs || 0));
    chart.latestBox.classList.toggle('stale', !l || age > limit);
  }

  // ---------- loading ----------

  function patientWard() {
    return state.patient && state.patient.ward ? String(state.patient.ward) : '';
  }

  async function loadChart(chart, seq, from, to, bucket) {
    const url = '/api/v1/patients/' + encodeURIComponent(state.id) + '/vitals' +
      '?code=' + encodeURIComponent(chart.def.code) +
      '&from=' + encodeURIComponent(new Date(from).toISOString()) +
      '&to=' + encodeURIComponent(new Date(to).toISOString()) +
      '&bucket=' + bucket;
    try {
      const data = await getJson(url);
      if (seq !== state.loadSeq) return;
      const served = Number(data.bucket_seconds);
      chart.bucketMs = (Number.isFinite(served) && served > 0 ? served : bucket) * 1000;
      chart.unit = unitLabel(data.unit, chart.def.unit);
      chart.buckets = normaliseSeries(data, chart.bucketMs);
      chart.status = 'ok';
    } catch (err) {
      if (seq !== state.loadSeq) return;
      console.warn('Galen: vitals request failed (' + (err && err.message ? err.message : 'error') + ')');
      chart.status = 'error';
    }
    chart.dirty = true;
  }

  async function loadLatest() {
    // Latest readings + stale threshold + server clock come from the dashboard snapshot.
    const ward = patientWard();
    try {
      const t0 = Date.now();
      const data = await getJson(withWard('/api/v1/dashboard', ward));
      const t1 = Date.now();
      syncServerClock(data.generated_at, t0, t1);
      const sa = Number(data.stale_after_seconds);
      if (Number.isFinite(sa) && sa > 0) state.staleAfterMs = sa * 1000;
      const me = (Array.isArray(data.patients) ? data.patients : []).find((p) => p && String(p.id) === String(state.id));
      const latest = me && me.latest && typeof me.latest === 'object' ? me.latest : {};
      for (const chart of state.charts) {
        const r = latest[chart.def.code];
        if (r) applyLatest(chart, r.value, r.time, r.unit);
      }
    } catch (err) {
      console.warn('Galen: dashboard request failed (' + (err && err.message ? err.message : 'error') + ')');
    }
  }

  function applyLatest(chart, value, time, unit) {
    const t = parseTime(time);
    const v = num(value);
    if (!Number.isFinite(t) || !Number.isFinite(v)) return false;
    if (chart.latest && !(t > chart.latest.t)) return false;
    chart.latest = { value: v, t };
    if (unit) chart.unit = unitLabel(unit, chart.def.unit);
    return true;
  }

  async function loadAllCharts() {
    const seq = ++state.loadSeq;
    state.lastFetch = Date.now();
    const to = serverNow();
    const from = to - rangeMs();
    const bucket = bucketSeconds();
    for (const c of state.charts) {
      if (c.bucketMs !== bucket * 1000) { c.buckets = []; c.status = 'loading'; c.bucketMs = bucket * 1000; c.dirty = true; }
    }
    redrawDirty();
    await Promise.all(state.charts.map((c) => loadChart(c, seq, from, to, bucket)));
    if (seq === state.loadSeq) redrawDirty();
  }

  function redrawDirty() {
    const now = serverNow();
    for (const c of state.charts) {
      if (c.dirty) draw(c);
      renderLatest(c, now);
    }
  }

  // ---------- clinical: scores, alarms, timeline, observations ----------

  const TABLE_ORDER = ['news2', 'qsofa', 'mews'];
  // Chart 1 order of NEWS2 (others follow it where they share parameters).
  const PARAM_ORDER = ['respiratory_rate', 'spo2', 'oxygen', 'systolic_bp', 'heart_rate', 'consciousness', 'temperature'];
  const ACVPU = { A: 'alert', C: 'new confusion', V: 'responds to voice', P: 'responds to pain', U: 'unresponsive' };
  const MAX_TIMELINE_ROWS = 300;

  const clin = {
    scores: new Map(),     // table id -> score object
    cards: new Map(),      // table id -> card parts
    alarms: new Map(),     // open alarms, id -> alarm
    alarmItems: new Map(), // id -> { li, meta }
    readings: {},
    spo2Scale: null,
    history: [],           // NEWS2 [{ t, total, band, complete }] ascending
    historyStatus: 'loading',
    historyLive: [],       // live points received while the history request runs
    historySeq: 0,
    historyDirty: true,
    timeline: [],          // alarm transitions, ascending by time
    timelineKeys: new Set(),
    timelineLive: [],
    timelineSeq: 0,
    timelineStatus: 'loading',
    clinicalSeq: 0,
    busy: new Set(),       // "<alarm>|<action>" with a dialog open
  };

  const clinicalEl = $('clinical');
  const alarmsPanel = $('alarms-panel');
  const alarmList = $('active-alarms');
  const noAlarms = $('no-alarms');
  const alarmCount = $('alarm-count');
  const scoreCardsEl = $('score-cards');
  const scoreChartBox = $('score-chart');
  const scoreChartNote = $('score-chart-note');
  const timelineEl = $('alarm-timeline');
  const timelineNote = $('timeline-note');
  const obsForm = $('obs-form');
  const obsBy = $('obs-by');
  const obsStatus = $('obs-status');
  const obsCurrent = $('obs-current');

  function rangeText() { return 'last ' + state.range.replace('h', ' h'); }

  function whereText() {
    const p = state.patient || {};
    return (p.bed ? 'Bed ' + String(p.bed) : '') + ($('patient-name').textContent ? ' (' + $('patient-name').textContent + ')' : '');
  }

  // ---------- score cards ----------

  function formatPointValue(pt) {
    const v = pt.value;
    if (typeof v === 'number' && Number.isFinite(v)) {
      const num = (x) => {
        const r2 = Math.round(x * 100) / 100;
        return pt.parameter === 'temperature' && Math.abs(r2 * 10 - Math.round(r2 * 10)) < 1e-9 ? r2.toFixed(1) : String(r2);
      };
      const u = unitLabel(pt.unit);
      let text = num(v) + (u ? ' ' + u : '');
      // The table scores the value rounded (a documented platform rule): say so when it differs.
      const r = pt.rounded != null ? Number(pt.rounded) : NaN;
      if (Number.isFinite(r) && num(r) !== num(v)) text += ' (scored as ' + num(r) + ')';
      return text;
    }
    if (pt.parameter === 'consciousness' && typeof v === 'string' && ACVPU[v]) return v + ' (' + ACVPU[v] + ')';
    return v == null ? '–' : String(v);
  }

  function buildCard(table) {
    const title = el('h3', { class: 'sc-title' });
    const tableName = el('span', { class: 'sc-table-name' });
    const total = el('span', { class: 'sc-total' });
    const max = el('span', { class: 'sc-max' });
    const band = el('span', { class: 'sc-band' });
    const status = el('span', { class: 'sc-status' });
    const time = el('span', { class: 'sc-time' });
    const missing = el('p', { class: 'sc-missing', hidden: true });
    const monitoring = el('dd', { class: 'sc-monitoring' });
    const response = el('dd', { class: 'sc-response' });
    const tbody = el('tbody');
    const tableEl = el('table', { class: 'sc-points' }, [
      el('caption', { class: 'visually-hidden', text: 'Points per parameter' }),
      el('thead', null, [el('tr', null, [
        el('th', { scope: 'col', text: 'Parameter' }), el('th', { scope: 'col', text: 'Value' }),
        el('th', { scope: 'col', class: 'num', text: 'Points' }), el('th', { scope: 'col', text: 'Measured' })])]),
      tbody]);
    const pointsWrap = table === 'news2'
      ? el('div', { class: 'sc-points-wrap' }, [tableEl])
      : el('details', { class: 'sc-points-wrap' }, [el('summary', { text: 'Points per parameter' }), tableEl]);
    const root = el('article', { class: 'score-card', 'data-table': table, 'data-band': 'none' }, [
      el('header', { class: 'sc-head' }, [
        el('div', { class: 'sc-name' }, [title, tableName]),
        el('div', { class: 'sc-figure' }, [total, max]),
        el('div', { class: 'sc-flags' }, [band, status]),
      ]),
      missing,
      el('dl', { class: 'sc-text' }, [
        el('div', null, [el('dt', { text: 'Monitoring' }), monitoring]),
        el('div', null, [el('dt', { text: 'Response' }), response]),
      ]),
      pointsWrap,
      el('p', { class: 'sc-foot' }, [time]),
    ]);
    return { root, title, tableName, total, max, band, status, time, missing, monitoring, response, tbody };
  }

  function renderScores() {
    const tables = [...clin.scores.keys()].sort((a, b) => {
      const ia = TABLE_ORDER.indexOf(a); const ib = TABLE_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    if (!tables.length) {
      if (!scoreCardsEl.querySelector('.score-card')) {
        scoreCardsEl.replaceChildren(el('p', { class: 'panel-empty', text: 'No scores yet: they appear with the first readings.' }));
      }
      return;
    }
    if (!scoreCardsEl.querySelector('.score-card')) scoreCardsEl.replaceChildren();
    tables.forEach((table, i) => {
      let card = clin.cards.get(table);
      if (!card) { card = buildCard(table); clin.cards.set(table, card); }
      if (scoreCardsEl.children[i] !== card.root) scoreCardsEl.insertBefore(card.root, scoreCardsEl.children[i] || null);
      renderCard(card, clin.scores.get(table));
    });
  }

  function renderCard(card, s) {
    const band = bandClass(s);
    const incomplete = s.complete === false;
    card.root.dataset.band = band;
    card.root.dataset.complete = incomplete ? 'no' : 'yes';
    setText(card.title, tableShort(s));
    setText(card.tableName, s.table_name ? String(s.table_name) : '');
    setText(card.total, (incomplete ? '≥' : '') + (s.total == null ? '–' : String(s.total)));
    setText(card.max, s.max_total != null ? '/ ' + String(s.max_total) : '');
    setText(card.band, s.band ? String(s.band).toUpperCase() : '–');
    setText(card.status, incomplete ? 'INCOMPLETE' : 'complete');
    const nMissing = Array.isArray(s.missing) ? s.missing.length : 0;
    const names = (Array.isArray(s.missing) ? s.missing : []).map((m) => parameterLabel(m && m.parameter)).join(', ');
    const miss = incomplete
      ? 'Incomplete: total and band are a lower bound. Missing ' + (nMissing || 'some') + ' parameter' + (nMissing === 1 ? '' : 's') +
        (names ? ': ' + names : '') + '.'
      : '';
    setText(card.missing, miss);
    card.missing.hidden = !miss;
    setText(card.monitoring, s.monitoring ? String(s.monitoring) : '–');
    setText(card.response, s.response ? String(s.response) : '–');
    setText(card.time, 'Scored at ' + timeText(parseTime(s.time)) + (s.table_version ? ' · table ' + String(s.table_version) : ''));
    const rows = [];
    for (const pt of Array.isArray(s.points) ? s.points : []) if (pt && pt.parameter) rows.push({ pt });
    for (const m of Array.isArray(s.missing) ? s.missing : []) if (m && m.parameter) rows.push({ miss: m });
    const idx = (r) => { const i = PARAM_ORDER.indexOf((r.pt || r.miss).parameter); return i < 0 ? 99 : i; };
    rows.sort((a, b) => idx(a) - idx(b));
    card.tbody.replaceChildren(...rows.map((r) => {
      if (r.pt) {
        const pts = Number(r.pt.points);
        return el('tr', { 'data-points': Number.isFinite(pts) ? String(Math.min(3, pts)) : '' }, [
          el('th', { scope: 'row', text: parameterLabel(r.pt.parameter) }),
          el('td', { text: formatPointValue(r.pt) }),
          el('td', { class: 'num pts' }, [el('span', { class: 'pts-val', text: Number.isFinite(pts) ? String(pts) : '–' })]),
          el('td', { class: 'when', text: timeText(parseTime(r.pt.time)) }),
        ]);
      }
      const last = parseTime(r.miss.last_seen);
      return el('tr', { class: 'row-missing', 'data-points': 'missing' }, [
        el('th', { scope: 'row', text: parameterLabel(r.miss.parameter) }),
        el('td', { text: r.miss.reason === 'never_recorded' ? 'MISSING — never recorded' : 'MISSING — too old' }),
        el('td', { class: 'num pts' }, [el('span', { class: 'pts-val', text: '?' })]),
        el('td', { class: 'when', text: Number.isFinite(last) ? 'last ' + timeText(last) : '–' }),
      ]);
    }));
  }

  function applyScoreObject(s) {
    if (!s || !s.table) return false;
    const table = String(s.table);
    const cur = clin.scores.get(table);
    const t = parseTime(s.time);
    if (cur && Number.isFinite(t) && t < parseTime(cur.time)) return false;
    clin.scores.set(table, s);
    return true;
  }

  // ---------- open alarms ----------

  function alarmMeta(a, now) {
    const raised = parseTime(a.raised_at);
    const parts = ['State: ' + alarmStateText(a, now).toUpperCase()];
    if (Number.isFinite(raised)) parts.push('raised ' + timeText(raised) + ' (' + durationText(now - raised) + ' ago)');
    if (a.role) parts.push('notified: ' + String(a.role).replace(/_/g, ' '));
    if (a.kind === 'technical') parts.push('technical alarm');
    return parts.join(' · ');
  }

  function renderAlarmsPanel() {
    const now = serverNow();
    const list = sortAlarms([...clin.alarms.values()]);
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('.p-alarm')
      ? { id: document.activeElement.closest('.p-alarm').dataset.alarmId, action: document.activeElement.dataset.action } : null;
    clin.alarmItems.clear();
    const items = list.map((a) => {
      const prio = PRIORITY_RANK[a.priority] ? a.priority : 'low';
      const meta = el('p', { class: 'p-alarm-meta', text: alarmMeta(a, now) });
      const msg = (a.kind === 'technical' ? 'Technical: ' : '') + alarmMessage(a);
      const buttons = [];
      if (needsAck(a)) buttons.push(actionButton(a, 'acknowledge', 'Acknowledge'));
      buttons.push(actionButton(a, 'silence', 'Silence…'));
      buttons.push(actionButton(a, 'resolve', 'Resolve…'));
      const li = el('li', { class: 'p-alarm', 'data-priority': prio, 'data-state': a.state || 'active', 'data-alarm-id': a.alarm }, [
        el('div', { class: 'p-alarm-main' }, [
          el('span', { class: 'prio-chip', 'data-priority': prio, text: PRIORITY_TEXT[prio] }),
          el('span', { class: 'p-alarm-msg', text: msg }),
        ]),
        meta,
        el('div', { class: 'p-alarm-actions' }, buttons),
      ]);
      clin.alarmItems.set(a.alarm, { li, meta, alarm: a });
      return li;
    });
    alarmList.replaceChildren(...items);
    noAlarms.hidden = list.length > 0;
    setText(alarmCount, list.length ? '(' + list.length + ')' : '');
    const top = list.length ? (PRIORITY_RANK[list[0].priority] ? list[0].priority : 'low') : 'none';
    alarmsPanel.dataset.alarm = top;
    const flash = list.some((a) => a.priority === 'high' && needsAck(a)) ? '1' : '0';
    if (alarmsPanel.dataset.flash !== flash) {
      alarmsPanel.dataset.flash = flash;
      if (flash === '1') syncFlash(alarmsPanel);
    }
    if (focused) {
      const again = alarmList.querySelector('.p-alarm[data-alarm-id="' + CSS.escape(focused.id || '') + '"] [data-action="' + CSS.escape(focused.action || '') + '"]');
      if (again) again.focus();
    }
  }

  function actionButton(a, action, label) {
    const b = el('button', { type: 'button', class: 'btn-alarm', 'data-action': action, text: label,
      'aria-label': label.replace('…', '') + ' alarm: ' + alarmMessage(a) });
    b.disabled = clin.busy.has(a.alarm + '|' + action);
    b.addEventListener('click', () => runAlarmAction(a.alarm, action));
    return b;
  }

  async function runAlarmAction(id, action) {
    const a = clin.alarms.get(id);
    const key = id + '|' + action;
    if (!a || clin.busy.has(key)) return;
    clin.busy.add(key);
    let answer = null;
    try {
      answer = await alarmAction(a, action, whereText(), () => loadClinical());
    } finally {
      clin.busy.delete(key);
    }
    if (answer) {
      if (!obsBy.value.trim()) obsBy.value = rememberedActor();
      if (answer.open && answer.open.alarm != null) clin.alarms.set(String(answer.open.alarm), Object.assign({}, answer.open, { alarm: String(answer.open.alarm) }));
      else clin.alarms.delete(id);
      loadTimeline(); // the transition carries who and why
    }
    renderAlarmsPanel();
  }

  function tickAlarms() {
    const now = serverNow();
    for (const item of clin.alarmItems.values()) setText(item.meta, alarmMeta(item.alarm, now));
  }

  // ---------- observations ----------

  function renderObservations() {
    const r = clin.readings || {};
    const parts = [];
    const c = r.consciousness;
    parts.push('Consciousness: ' + (c ? String(c.value) + (ACVPU[c.value] ? ' (' + ACVPU[c.value] + ')' : '') + ', recorded ' + timeText(parseTime(c.time)) : 'not recorded'));
    const o = r.oxygen;
    parts.push('Air or oxygen: ' + (o ? String(o.value) + ', recorded ' + timeText(parseTime(o.time)) : 'not recorded'));
    if (clin.spo2Scale != null) parts.push('SpO₂ scale ' + String(clin.spo2Scale));
    setText(obsCurrent, parts.join(' · '));
  }

  function applyClinical(data) {
    if (!data || typeof data !== 'object') return;
    clin.readings = data.readings && typeof data.readings === 'object' ? data.readings : {};
    clin.spo2Scale = data.spo2_scale == null ? null : data.spo2_scale;
    for (const s of Array.isArray(data.scores) ? data.scores : []) applyScoreObject(s);
    clin.alarms = new Map();
    for (const a of Array.isArray(data.alarms) ? data.alarms : []) {
      if (a && a.alarm != null) clin.alarms.set(String(a.alarm), Object.assign({}, a, { alarm: String(a.alarm) }));
    }
    renderScores();
    renderAlarmsPanel();
    renderObservations();
  }

  async function loadClinical() {
    const seq = ++clin.clinicalSeq;
    try {
      const data = await getJson('/api/v1/patients/' + encodeURIComponent(state.id) + '/clinical');
      if (seq !== clin.clinicalSeq) return;
      applyClinical(data);
    } catch (err) {
      console.warn('Galen: clinical request failed (' + (err && err.message ? err.message : 'error') + ')');
      if (!clin.scores.size) scoreCardsEl.replaceChildren(el('p', { class: 'panel-empty', text: 'Could not load scores — retrying.' }));
    }
  }

  obsForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const by = obsBy.value.trim();
    const consciousness = (obsForm.querySelector('input[name="consciousness"]:checked') || {}).value || '';
    const oxygen = (obsForm.querySelector('input[name="oxygen"]:checked') || {}).value || '';
    obsStatus.dataset.kind = 'error';
    if (!consciousness && !oxygen) { setText(obsStatus, 'Choose consciousness and/or air or oxygen.'); return; }
    if (!by) { setText(obsStatus, 'Enter your name: every observation records who made it.'); obsBy.focus(); return; }
    const body = { by };
    if (consciousness) body.consciousness = consciousness;
    if (oxygen) body.oxygen = oxygen;
    const button = $('obs-record');
    button.disabled = true;
    obsStatus.dataset.kind = '';
    setText(obsStatus, 'Recording…');
    const r = await apiSend('POST', '/api/v1/patients/' + encodeURIComponent(state.id) + '/observations', body);
    button.disabled = false;
    if (!r.ok) {
      obsStatus.dataset.kind = 'error';
      setText(obsStatus, 'Not recorded: ' + r.message);
      return;
    }
    rememberActor(by);
    obsStatus.dataset.kind = 'ok';
    setText(obsStatus, 'Recorded by ' + by + ' at ' + timeText(serverNow()) + '.');
    for (const name of ['consciousness', 'oxygen']) {
      const none = obsForm.querySelector('input[name="' + name + '"][value=""]');
      if (none) none.checked = true;
    }
    if (r.data && r.data.clinical) applyClinical(r.data.clinical);
  });

  // ---------- NEWS2 history ----------

  function historyPoint(s) {
    const t = parseTime(s && s.time);
    const total = Number(s && s.total);
    if (!Number.isFinite(t) || !Number.isFinite(total)) return null;
    return { t, total, band: bandClass(s), bandName: s.band ? String(s.band) : '', complete: s.complete !== false };
  }

  function mergePoints(list) {
    list.sort((a, b) => a.t - b.t);
    const out = [];
    for (const p of list) if (!out.length || out[out.length - 1].t !== p.t) out.push(p); else out[out.length - 1] = p;
    return out;
  }

  async function loadScoreHistory() {
    const seq = ++clin.historySeq;
    clin.historyLive = [];
    const to = serverNow();
    const from = to - rangeMs();
    setText($('history-range'), rangeText());
    const url = '/api/v1/patients/' + encodeURIComponent(state.id) + '/scores?table=news2' +
      '&from=' + encodeURIComponent(new Date(from).toISOString()) +
      '&to=' + encodeURIComponent(new Date(to + 60000).toISOString()) + '&limit=50000';
    try {
      const data = await getJson(url);
      if (seq !== clin.historySeq) return;
      const pts = (Array.isArray(data.scores) ? data.scores : []).map(historyPoint).filter(Boolean);
      clin.history = mergePoints(pts.concat(clin.historyLive));
      clin.historyStatus = 'ok';
    } catch (err) {
      if (seq !== clin.historySeq) return;
      console.warn('Galen: score history request failed (' + (err && err.message ? err.message : 'error') + ')');
      clin.historyStatus = 'error';
    }
    clin.historyLive = [];
    clin.historyDirty = true;
    drawScoreChart();
  }

  function addHistoryPoint(s) {
    const p = historyPoint(s);
    if (!p) return;
    clin.historyLive.push(p);
    if (clin.historyStatus !== 'ok') return;
    const last = clin.history[clin.history.length - 1];
    if (!last || p.t >= last.t) {
      if (last && last.t === p.t) clin.history[clin.history.length - 1] = p; else clin.history.push(p);
    } else {
      clin.history = mergePoints(clin.history.concat([p]));
    }
    clin.historyDirty = true;
  }

  // Aggregate-score bands of NEWS2 (RCP 2017 charts 2-4: 0-4, 5-6, 7+),
  // drawn as the chart background; the line is coloured by each score's own band.
  const NEWS2_BACKGROUND = [
    { from: -0.5, to: 4.5, band: 'low', label: '0–4' },
    { from: 4.5, to: 6.5, band: 'medium', label: '5–6' },
    { from: 6.5, to: 20.5, band: 'high', label: '≥7' },
  ];

  function drawScoreChart() {
    clin.historyDirty = false;
    const W = Math.max(240, Math.round(scoreChartBox.clientWidth || 520));
    const H = Math.max(120, Math.round(scoreChartBox.clientHeight || 190));
    const m = { l: 34, r: 10, t: 8, b: 22 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const to = serverNow();
    const from = to - rangeMs();
    const pts = clin.history;
    // Keep the score in force at the window's start (the last one before it).
    let first = 0;
    while (first + 1 < pts.length && pts[first + 1].t <= from) first++;
    const shown = pts.slice(first).filter((p) => p.t <= to);
    let maxTotal = 0;
    for (const p of shown) if (p.total > maxTotal) maxTotal = p.total;
    const yMax = maxTotal <= 7 ? 8 : Math.min(20, maxTotal + 2);
    const x = (t) => m.l + ((Math.min(to, Math.max(from, t)) - from) / (to - from)) * pw;
    const y = (v) => m.t + (1 - (v + 0.5) / (yMax + 1)) * ph;
    const r1 = (n) => Math.round(n * 10) / 10;

    const root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'aria-hidden': 'true', focusable: 'false' });
    for (const b of NEWS2_BACKGROUND) {
      const y1 = y(Math.min(b.to, yMax + 0.5));
      const y0 = y(b.from);
      if (y0 <= y1) continue;
      svg('rect', { class: 'sbg', 'data-band': b.band, x: m.l, y: r1(y1), width: pw, height: r1(y0 - y1) }, root);
      const lbl = svg('text', { class: 'sbg-label', x: m.l + 4, y: r1(y1 + 12), 'text-anchor': 'start' }, root);
      lbl.textContent = b.label;
    }
    const step = yMax > 10 ? 2 : 1;
    for (let v = 0; v <= yMax; v += step) {
      const yy = r1(y(v));
      svg('line', { class: 'grid-line', x1: m.l, x2: W - m.r, y1: yy, y2: yy }, root);
      const label = svg('text', { class: 'tick-label', x: m.l - 6, y: yy + 4, 'text-anchor': 'end' }, root);
      label.textContent = String(v);
    }
    for (const t of timeTicks(from, to, Math.max(2, Math.min(8, Math.floor(pw / 90))))) {
      const xx = r1(x(t));
      svg('line', { class: 'grid-line', x1: xx, x2: xx, y1: m.t, y2: m.t + ph }, root);
      const label = svg('text', { class: 'tick-label', x: xx, y: H - 5, 'text-anchor': 'middle' }, root);
      label.textContent = timeLabel(t);
    }
    svg('line', { class: 'axis', x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph }, root);
    svg('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph }, root);

    if (shown.length) {
      // Step line: each score holds until the next one (the last until now).
      const byStyle = new Map();
      let risers = '';
      for (let i = 0; i < shown.length; i++) {
        const p = shown[i];
        const x0 = r1(x(p.t));
        const x1 = r1(x(i + 1 < shown.length ? shown[i + 1].t : to));
        const yy = r1(y(p.total));
        const key = p.band + '|' + (p.complete ? 'c' : 'i');
        byStyle.set(key, (byStyle.get(key) || '') + 'M' + x0 + ' ' + yy + 'H' + Math.max(x1, x0 + 0.5));
        if (i + 1 < shown.length && shown[i + 1].total !== p.total) risers += 'M' + x1 + ' ' + yy + 'V' + r1(y(shown[i + 1].total));
      }
      if (risers) svg('path', { class: 'step-riser', d: risers }, root);
      for (const [key, d] of byStyle) {
        const [band, c] = key.split('|');
        svg('path', { class: 'step' + (c === 'i' ? ' incomplete' : ''), 'data-band': band, d }, root);
      }
      const last = shown[shown.length - 1];
      svg('circle', { class: 'step-dot', 'data-band': last.band, cx: r1(x(to)), cy: r1(y(last.total)), r: 4 }, root);
    }
    scoreChartBox.replaceChildren(root);

    let note = '';
    if (clin.historyStatus === 'loading' && !shown.length) note = 'Loading…';
    else if (clin.historyStatus === 'error' && !shown.length) note = 'Could not load the score history — retrying';
    else if (!shown.length) note = 'No NEWS2 score in this period';
    setText(scoreChartNote, note);
    scoreChartNote.hidden = note === '';
    const latest = shown[shown.length - 1];
    const label = latest
      ? 'NEWS2 history, ' + rangeText() + ': ' + shown.length + ' score change' + (shown.length === 1 ? '' : 's') +
        ', highest ' + maxTotal + ', latest ' + latest.total + (latest.bandName ? ' (' + latest.bandName + ')' : '') +
        (latest.complete ? '' : ', incomplete') + ' since ' + timeText(latest.t)
      : 'NEWS2 history, ' + rangeText() + ': ' + (note || 'no data');
    if (scoreChartBox.getAttribute('aria-label') !== label) scoreChartBox.setAttribute('aria-label', label);
    scoreChartBox.dataset.points = String(shown.length);
  }

  // ---------- alarm timeline ----------

  function eventKey(e) { return String(e.alarm) + '|' + String(e.transition) + '|' + String(e.time); }

  function addTimeline(list) {
    let added = false;
    for (const e of list) {
      if (!e || e.alarm == null || !e.transition) continue;
      const key = eventKey(e);
      if (clin.timelineKeys.has(key)) continue;
      clin.timelineKeys.add(key);
      clin.timeline.push(Object.assign({ _t: parseTime(e.time) }, e));
      added = true;
    }
    if (added) clin.timeline.sort((a, b) => a._t - b._t || (a.seq || 0) - (b.seq || 0));
    return added;
  }

  async function loadTimeline() {
    const seq = ++clin.timelineSeq;
    clin.timelineLive = [];
    const to = serverNow();
    const from = to - rangeMs();
    setText($('timeline-range'), rangeText());
    const url = '/api/v1/alarms/log?patient=' + encodeURIComponent(state.id) +
      '&from=' + encodeURIComponent(new Date(from).toISOString()) + '&limit=10000';
    try {
      const data = await getJson(url);
      if (seq !== clin.timelineSeq) return;
      clin.timeline = [];
      clin.timelineKeys = new Set();
      addTimeline(Array.isArray(data.events) ? data.events : []);
      addTimeline(clin.timelineLive);
      clin.timelineStatus = 'ok';
    } catch (err) {
      if (seq !== clin.timelineSeq) return;
      console.warn('Galen: alarm log request failed (' + (err && err.message ? err.message : 'error') + ')');
      clin.timelineStatus = 'error';
    }
    clin.timelineLive = [];
    renderTimeline();
  }

  function transitionDetail(e) {
    let text = transitionText(e.transition);
    if (e.transition === 'escalated' && e.role) text += ' to ' + String(e.role).replace(/_/g, ' ');
    if (e.transition === 'silenced') {
      const until = parseTime(e.silenced_until);
      if (Number.isFinite(until)) text += ' until ' + timeText(until);
    }
    if (e.transition === 'priority_escalated' && e.priority) text += ' to ' + String(e.priority);
    return text;
  }

  function renderTimeline() {
    const from = serverNow() - rangeMs();
    const list = clin.timeline.filter((e) => !(e._t < from));
    const shown = list.slice(-MAX_TIMELINE_ROWS).reverse();
    timelineEl.replaceChildren(...shown.map((e) => {
      const prio = PRIORITY_RANK[e.priority] ? e.priority : 'low';
      const who = [];
      if (e.actor) who.push('by ' + String(e.actor));
      if (e.reason) who.push('reason: ' + String(e.reason));
      return el('li', { class: 'tl-item', 'data-priority': prio, 'data-transition': String(e.transition), title: 'Alarm ' + String(e.alarm) + (e.rule ? ', rule ' + String(e.rule) : '') }, [
        el('time', { class: 'tl-time', datetime: String(e.time || ''), text: timeText(e._t) }),
        el('span', { class: 'prio-chip', 'data-priority': prio, text: PRIORITY_SHORT[prio] }),
        el('div', { class: 'tl-body' }, [
          el('div', { class: 'tl-line' }, [
            el('span', { class: 'tl-transition', text: transitionDetail(e) }),
            el('span', { class: 'tl-msg', text: (e.kind === 'technical' ? 'Technical: ' : '') + (e.message != null ? alarmMessage(e) : '') }),
          ]),
          who.length ? el('div', { class: 'tl-who', text: who.join(' — ') }) : null,
        ]),
      ]);
    }));
    let note = '';
    if (!list.length) note = clin.timelineStatus === 'error' ? 'Could not load the alarm log — retrying.' : clin.timelineStatus === 'loading' ? 'Loading…' : 'No alarm events in this period.';
    else if (list.length > shown.length) note = 'Showing the newest ' + shown.length + ' of ' + list.length + ' events.';
    setText(timelineNote, note);
    timelineNote.hidden = note === '';
  }

  // ---------- live clinical events ----------

  function onAlarmEvent(ev) {
    if (ev.patient == null || String(ev.patient) !== String(state.id)) return;
    if (applyAlarmEvent(clin.alarms, ev)) renderAlarmsPanel();
    clin.timelineLive.push(ev);
    if (clin.timelineStatus === 'ok' && addTimeline([ev])) renderTimeline();
  }

  function onScoreEvent(ev) {
    if (ev.patient == null || String(ev.patient) !== String(state.id)) return;
    if (applyScoreObject(ev)) {
      const card = clin.cards.get(String(ev.table));
      if (card) renderCard(card, clin.scores.get(String(ev.table))); else renderScores();
    }
    if (ev.table === 'news2') addHistoryPoint(ev);
  }

  function loadClinicalAll() {
    return Promise.all([loadClinical(), loadScoreHistory(), loadTimeline()]);
  }

  // ---------- range selector ----------

  function setRange(r, push) {
    if (!Object.prototype.hasOwnProperty.call(RANGES, r)) r = DEFAULT_RANGE;
    state.range = r;
    for (const b of document.querySelectorAll('.range-select button')) {
      b.setAttribute('aria-pressed', b.dataset.range === r ? 'true' : 'false');
    }
    if (push) {
      const url = new URL(location.href);
      if (r === DEFAULT_RANGE) url.searchParams.delete('range'); else url.searchParams.set('range', r);
      history.replaceState(null, '', url.pathname + url.search + url.hash);
    }
  }

  for (const b of document.querySelectorAll('.range-select button')) {
    b.addEventListener('click', () => {
      if (b.dataset.range === state.range || !state.patient) return;
      setRange(b.dataset.range, true);
      loadAllCharts();
      loadScoreHistory();
      loadTimeline();
    });
  }

  // ---------- live stream ----------

  function onMeasurements(ev) {
    const list = measurementList(ev);
    if (!list) return;
    for (const m of list) {
      if (!m || m.patient == null || String(m.patient) !== String(state.id)) continue;
      const chart = state.byCode.get(m.code);
      if (!chart) continue;
      const t = parseTime(m.time);
      const v = num(m.value);
      if (!Number.isFinite(t) || !Number.isFinite(v)) continue;
      applyLatest(chart, v, m.time, m.unit);
      if (chart.status === 'ok' && addToBuckets(chart, t, v)) chart.dirty = true;
    }
  }

  const stream = liveStream({
    url: () => withWard('/api/v1/stream', patientWard()),
    measurements: onMeasurements,
    alarm: onAlarmEvent,
    score: onScoreEvent,
    // The server says this subscriber fell behind and missed events, or the
    // stream is back after an error: reload.
    resync: () => { loadClinicalAll(); return loadLatest().then(loadAllCharts); },
    open: () => { state.connected = true; },
    lost: () => { state.connected = false; },
  });

  // ---------- timers ----------

  let lastSlide = Date.now();
  function tick() {
    const d = new Date();
    setText(clock, clockText(d));
    if (!state.patient) return;
    if (Date.now() - lastSlide >= SLIDE_MS) {
      lastSlide = Date.now();
      for (const c of state.charts) c.dirty = true;
      clin.historyDirty = true;
    }
    tickAlarms();
    const since = Date.now() - state.lastFetch;
    if ((!state.connected && since >= REFETCH_OFFLINE_MS) || since >= REFETCH_ONLINE_MS) {
      loadClinicalAll();
      loadLatest().then(loadAllCharts);
      return;
    }
    redrawDirty();
    if (clin.historyDirty) drawScoreChart();
  }

  let resizeFrame = 0;
  if (typeof ResizeObserver === 'function') {
    let lastWidth = 0;
    new ResizeObserver((entries) => {
      const w = Math.round(entries[0].contentRect.width);
      if (w === lastWidth) return;
      lastWidth = w;
      cancelAnimationFrame(resizeFrame);
      resizeFrame = requestAnimationFrame(() => { for (const c of state.charts) c.dirty = true; redrawDirty(); });
    }).observe(chartsEl);
    let lastScoreWidth = 0;
    new ResizeObserver((entries) => {
      const w = Math.round(entries[0].contentRect.width);
      if (w === lastScoreWidth) return;
      lastScoreWidth = w;
      requestAnimationFrame(() => { if (state.patient) drawScoreChart(); });
    }).observe(scoreChartBox);
  }

  // ---------- start ----------

  function showError(text) {
    setText(pageMessage, text);
    pageMessage.hidden = false;
  }

  async function start() {
    const m = /^\/patients\/([^/]+)\/?$/.exec(location.pathname);
    const id = m ? decodeURIComponent(m[1]) : '';
    setRange(new URLSearchParams(location.search).get('range') || DEFAULT_RANGE, false);
    everySecond(tick);
    if (!id) {
      setText($('patient-name'), 'Unknown patient');
      showError('No patient id in the address.');
      return;
    }
    state.id = id;
    let patient;
    for (let attempt = 0; ; attempt++) {
      try {
        patient = await getJson('/api/v1/patients/' + encodeURIComponent(id));
        break;
      } catch (err) {
        if (err && err.status === 404) {
          setText($('patient-name'), 'Patient not found');
          showError('There is no patient with this id. Go back to the ward view.');
          return;
        }
        console.warn('Galen: patient request failed (' + (err && err.message ? err.message : 'error') + ')');
        showError('Cannot load the patient — retrying…');
        await new Promise((r) => setTimeout(r, Math.min(30000, 2000 * (attempt + 1))));
      }
    }
    pageMessage.hidden = true;
    state.patient = patient;
    renderHeader(patient);
    buildCharts();
    clinicalEl.hidden = false;
    obsBy.value = rememberedActor();
    setText($('history-range'), rangeText());
    setText($('timeline-range'), rangeText());
    stream.connect();
    loadClinicalAll();
    await loadLatest();
    await loadAllCharts();
  }

  setConn('connecting');
  window.addEventListener('pagehide', () => stream.close());
  start();
})();
