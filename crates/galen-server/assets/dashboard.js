// Galen ward dashboard. Plain ES2020, no dependencies.
// Never log patient data (names, values, beds) to the console.
(() => {
  'use strict';

  const {
    $, parseTime, serverNow, syncServerClock, setText, formatAge, unitLabel, clockText,
    everySecond, withWard, apiFetch, setConn, measurementList, liveStream,
  } = window.Galen;

  const CODES = ['heart_rate', 'spo2', 'respiratory_rate', 'temperature', 'systolic_bp', 'diastolic_bp'];

  // DISPLAY HINT ONLY — NOT AN ALARM. Fixed, non-configurable limits used
  // solely to tint a number so it catches the eye. They are not clinically
  // validated, do not notify anyone and must not be relied upon; alarms are a
  // separate server-side function (each tile keeps an empty `.alarms` area).
  const DISPLAY_HINT = {
    heart_rate: (v) => v < 50 || v > 120,
    spo2: (v) => v < 92,
    respiratory_rate: (v) => v < 9 || v > 24,
    systolic_bp: (v) => v < 90,
    temperature: (v) => v >= 38.5 || v < 35.5,
  };

  const RESYNC_MS = 5 * 60 * 1000;       // periodic dashboard refetch (skew, admissions)
  const UNKNOWN_REFETCH_MS = 15 * 1000;  // at most one refetch per this for unknown patients
  const MAX_PENDING = 5000;

  const state = {
    ward: '',
    wards: [],
    staleAfterMs: 60 * 1000,
    tiles: new Map(),        // patient id -> tile record
    loaded: false,
    pending: [],             // SSE measurements received before the first snapshot
    fetchSeq: 0,
    fetching: null,
    lastUnknownRefetch: 0,
    updates: 0,
  };

  const grid = $('grid');
  const gridMessage = $('grid-message');
  const wardSelect = $('ward-select');
  const clock = $('clock');
  const template = $('tile-template');

  // ---------- helpers ----------

  function formatValue(code, v) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
    return code === 'temperature' ? v.toFixed(1) : String(Math.round(v));
  }

  // ---------- tiles ----------

  function createTile(id) {
    const el = template.content.firstElementChild.cloneNode(true);
    el.dataset.patientId = String(id);
    const link = el.querySelector('.tile-link');
    link.href = '/patients/' + encodeURIComponent(id);
    const q = (sel) => el.querySelector(sel);
    const rec = {
      id,
      el,
      link,
      bed: q('.bed'),
      name: q('.name'),
      badge: q('.badge'),
      age: q('.age'),
      values: {
        heart_rate: q('[data-vital="heart_rate"]'),
        spo2: q('[data-vital="spo2"]'),
        respiratory_rate: q('[data-vital="respiratory_rate"]'),
        temperature: q('[data-vital="temperature"]'),
        bp: q('[data-vital="bp"]'),
      },
      units: {
        heart_rate: q('[data-unit="heart_rate"]'),
        spo2: q('[data-unit="spo2"]'),
        respiratory_rate: q('[data-unit="respiratory_rate"]'),
        temperature: q('[data-unit="temperature"]'),
        bp: q('[data-unit="bp"]'),
      },
      latest: {},      // code -> { value, unit, t }
      newest: NaN,     // newest reading time across all vitals (ms)
      dirty: new Set(),
    };
    return rec;
  }

  // Returns true if the reading was applied (strictly newer than shown).
  function applyReading(rec, code, value, unit, time) {
    if (!CODES.includes(code)) return false;
    const t = parseTime(time);
    if (!Number.isFinite(t) || typeof value !== 'number' || !Number.isFinite(value)) return false;
    const cur = rec.latest[code];
    if (cur && !(t > cur.t)) return false;
    rec.latest[code] = { value, unit, t };
    if (!(rec.newest >= t)) rec.newest = t;
    rec.dirty.add(code === 'systolic_bp' || code === 'diastolic_bp' ? 'bp' : code);
    return true;
  }

  function renderVitals(rec) {
    for (const key of rec.dirty) {
      if (key === 'bp') {
        const sys = rec.latest.systolic_bp;
        const dia = rec.latest.diastolic_bp;
        setText(rec.values.bp, formatValue('systolic_bp', sys && sys.value) + '/' + formatValue('diastolic_bp', dia && dia.value));
        const u = unitLabel((sys && sys.unit) || (dia && dia.unit));
        if (u) setText(rec.units.bp, u);
        rec.values.bp.classList.toggle('abnormal', !!(sys && DISPLAY_HINT.systolic_bp(sys.value)));
      } else {
        const r = rec.latest[key];
        setText(rec.values[key], formatValue(key, r && r.value));
        const u = unitLabel(r && r.unit);
        if (u) setText(rec.units[key], u);
        const hint = DISPLAY_HINT[key];
        rec.values[key].classList.toggle('abnormal', !!(r && hint && hint(r.value)));
      }
    }
    rec.dirty.clear();
  }

  // Age / stale marker; called every second and after changes.
  function renderFreshness(rec, now) {
    let label = '';
    let ageText;
    if (!Number.isFinite(rec.newest)) {
      label = 'NO DATA';
      ageText = 'no readings';
    } else {
      const age = now - rec.newest;
      ageText = formatAge(age);
      if (age > state.staleAfterMs) label = 'STALE';
    }
    setText(rec.age, ageText);
    const stale = label !== '';
    if (rec.el.classList.contains('stale') !== stale) rec.el.classList.toggle('stale', stale);
    setText(rec.badge, label);
    if (rec.badge.hidden === stale) rec.badge.hidden = !stale;
  }

  function updateStatic(rec, p) {
    const bed = p.bed == null ? '' : String(p.bed);
    const name = p.name == null ? '' : String(p.name);
    setText(rec.bed, bed || '—');
    setText(rec.name, name);
    if (rec.name.title !== name) rec.name.title = name;
    const label = (bed ? 'Bed ' + bed + ', ' : '') + name;
    if (rec.link.getAttribute('aria-label') !== label) rec.link.setAttribute('aria-label', label);
    if (rec.el.dataset.ward !== String(p.ward == null ? '' : p.ward)) rec.el.dataset.ward = p.ward == null ? '' : String(p.ward);
  }

  // ---------- dashboard snapshot ----------

  function applySnapshot(data) {
    const patients = Array.isArray(data.patients) ? data.patients : [];
    if (Number.isFinite(Number(data.stale_after_seconds)) && Number(data.stale_after_seconds) > 0) {
      state.staleAfterMs = Number(data.stale_after_seconds) * 1000;
    }
    updateWards(Array.isArray(data.wards) ? data.wards.map(String) : []);

    const seen = new Set();
    patients.forEach((p, index) => {
      if (p == null || p.id == null) return;
      const id = String(p.id);
      seen.add(id);
      let rec = state.tiles.get(id);
      if (!rec) {
        rec = createTile(id);
        state.tiles.set(id, rec);
      }
      updateStatic(rec, p);
      const latest = p.latest && typeof p.latest === 'object' ? p.latest : {};
      for (const code of CODES) {
        const r = latest[code];
        if (r && typeof r === 'object') applyReading(rec, code, r.value, r.unit, r.time);
      }
      renderVitals(rec);
      // Keep DOM order = server order (ward, bed) without rebuilding.
      const at = grid.children[index];
      if (at !== rec.el) grid.insertBefore(rec.el, at || null);
    });
    for (const [id, rec] of state.tiles) {
      if (!seen.has(id)) {
        rec.el.remove();
        state.tiles.delete(id);
      }
    }
    setText(gridMessage, patients.length === 0 ? 'No patients' + (state.ward ? ' in ward ' + state.ward : '') + '.' : '');
    const now = serverNow();
    for (const rec of state.tiles.values()) renderFreshness(rec, now);
  }

  function updateWards(list) {
    const merged = state.ward ? Array.from(new Set(state.wards.concat(list))) : list.slice();
    if (state.ward && !merged.includes(state.ward)) merged.push(state.ward);
    merged.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    if (merged.join('\u0000') === state.wards.join('\u0000') && wardSelect.options.length === merged.length + 1) return;
    state.wards = merged;
    while (wardSelect.options.length > 1) wardSelect.remove(1);
    for (const w of merged) {
      const opt = document.createElement('option');
      opt.value = w;
      opt.textContent = 'Ward ' + w;
      wardSelect.appendChild(opt);
    }
    wardSelect.value = state.ward;
  }

  async function loadDashboard() {
    const seq = ++state.fetchSeq;
    const url = withWard('/api/v1/dashboard', state.ward);
    const t0 = Date.now();
    const res = await apiFetch(url);
    if (res.status === 401) return; // signed out (real mode): apiFetch went to /login
    if (!res.ok) throw new Error('dashboard request failed: HTTP ' + res.status);
    const data = await res.json();
    const t1 = Date.now();
    if (seq !== state.fetchSeq) return; // a newer request (e.g. ward change) superseded this one
    syncServerClock(data.generated_at, t0, t1);
    applySnapshot(data);
    if (!state.loaded) {
      state.loaded = true;
      const pending = state.pending;
      state.pending = [];
      if (pending.length) applyMeasurements(pending);
    }
  }

  let retryTimer = 0;
  function refresh() {
    if (state.fetching) return state.fetching;
    clearTimeout(retryTimer);
    const p = loadDashboard()
      .catch((err) => {
        console.warn('Galen: ' + (err && err.message ? err.message : 'dashboard request failed'));
        if (!state.loaded) setText(gridMessage, 'Cannot load the ward view — retrying…');
        clearTimeout(retryTimer);
        retryTimer = setTimeout(refresh, 5000);
      })
      .finally(() => { if (state.fetching === p) state.fetching = null; });
    state.fetching = p;
    return p;
  }

  // ---------- live stream ----------

  function applyMeasurements(list) {
    let applied = 0;
    let unknown = false;
    const touched = new Set();
    for (const m of list) {
      if (!m || m.patient == null) continue; // unassigned device
      const rec = state.tiles.get(String(m.patient));
      if (!rec) { unknown = true; continue; }
      if (applyReading(rec, m.code, m.value, m.unit, m.time)) {
        applied++;
        touched.add(rec);
      }
    }
    if (applied) {
      const now = serverNow();
      for (const rec of touched) {
        renderVitals(rec);
        renderFreshness(rec, now);
      }
      state.updates += applied;
      document.body.dataset.updates = String(state.updates);
    }
    if (unknown && Date.now() - state.lastUnknownRefetch > UNKNOWN_REFETCH_MS) {
      // A patient we do not show yet (e.g. new admission): refetch the snapshot.
      state.lastUnknownRefetch = Date.now();
      refresh();
    }
  }

  function onMeasurements(ev) {
    const list = measurementList(ev);
    if (!list) return;
    if (!state.loaded) {
      for (const m of list) if (state.pending.length < MAX_PENDING) state.pending.push(m);
      return;
    }
    applyMeasurements(list);
  }

  const stream = liveStream({
    url: () => withWard('/api/v1/stream', state.ward),
    measurements: onMeasurements,
    // The server says this subscriber fell behind and missed events, or the
    // stream is back after an error: reload the snapshot.
    resync: refresh,
  });

  // ---------- ward filter ----------

  function readWardFromUrl() {
    const w = new URLSearchParams(location.search).get('ward');
    return w ? w : '';
  }

  wardSelect.addEventListener('change', () => {
    state.ward = wardSelect.value;
    const url = new URL(location.href);
    if (state.ward) url.searchParams.set('ward', state.ward); else url.searchParams.delete('ward');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
    state.loaded = false;
    state.pending = [];
    state.fetchSeq++; // drop responses for the previous filter
    state.fetching = null;
    refresh();
    stream.restart();
  });

  // ---------- clock / freshness tick ----------

  function tick() {
    const d = new Date();
    setText(clock, clockText(d));
    if (clock.dateTime !== d.toISOString()) clock.dateTime = d.toISOString();
    const now = serverNow();
    for (const rec of state.tiles.values()) renderFreshness(rec, now);
  }

  // ---------- start ----------

  state.ward = readWardFromUrl();
  if (state.ward) updateWards([state.ward]);
  document.body.dataset.updates = '0';
  setConn('connecting');
  everySecond(tick);
  refresh();
  stream.connect();
  setInterval(() => { if (!document.hidden) refresh(); }, RESYNC_MS);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  window.addEventListener('pagehide', () => stream.close());
})();
