// Galen patient page: header + one hand-drawn SVG trend chart per vital.
// Plain ES2020, no dependencies. All data text goes in via textContent /
// setAttribute, never innerHTML. Never log patient data to the console.
(() => {
  'use strict';

  const {
    $, parseTime, serverNow, syncServerClock, setText, formatAge, unitLabel, pad2, clockText,
    everySecond, withWard, apiFetch, setConn, measurementList, liveStream,
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
    // The server says this subscriber fell behind and missed events, or the
    // stream is back after an error: reload.
    resync: () => loadLatest().then(loadAllCharts),
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
    }
    const since = Date.now() - state.lastFetch;
    if ((!state.connected && since >= REFETCH_OFFLINE_MS) || since >= REFETCH_ONLINE_MS) {
      loadLatest().then(loadAllCharts);
      return;
    }
    redrawDirty();
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
    stream.connect();
    await loadLatest();
    await loadAllCharts();
  }

  setConn('connecting');
  window.addEventListener('pagehide', () => stream.close());
  start();
})();
