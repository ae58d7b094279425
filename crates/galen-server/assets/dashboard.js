// Galen ward dashboard. Plain ES2020, no dependencies.
// Never log patient data (names, values, beds) to the console.
(() => {
  'use strict';

  const {
    $, parseTime, serverNow, syncServerClock, setText, formatAge, unitLabel, clockText,
    everySecond, withWard, apiFetch, setConn, measurementList, liveStream,
    el, PRIORITY_RANK, PRIORITY_TEXT, PRIORITY_SHORT, applyAlarmEvent, sortAlarms, silencedAt, needsAck,
    alarmStateText, alarmMessage, bandClass, missingText, alarmAction, durationText, syncFlash,
  } = window.Galen;

  const CODES = ['heart_rate', 'spo2', 'respiratory_rate', 'temperature', 'systolic_bp', 'diastolic_bp'];

  // DISPLAY HINT ONLY — NOT AN ALARM. Fixed, non-configurable limits used
  // solely to tint a number so it catches the eye. They are not clinically
  // validated, do not notify anyone and must not be relied upon; alarms are a
  // separate server-side function, shown in each tile's `.alarms` list.
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
  const MAX_TILE_ALARMS = 2;             // alarms listed in a tile; the rest as "+N more"

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
    clinicalBuffer: null,    // alarm/score events seen while a snapshot request is in flight
    actingOn: new Set(),     // alarm ids with an action dialog open
  };

  const grid = $('grid');
  const gridMessage = $('grid-message');
  const wardSelect = $('ward-select');
  const clock = $('clock');
  const template = $('tile-template');
  const summary = $('alarm-summary');
  const alarmLive = $('alarm-live');

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
      news2Box: q('.news2'),
      news2Total: q('.news2-total'),
      news2Band: q('.news2-band'),
      missing: q('.score-missing'),
      alarmList: q('.alarms'),
      news2: null,     // NEWS2 score object (API shape)
      news2T: -Infinity,
      alarms: new Map(), // alarm id -> open alarm (API shape)
      alarmEls: new Map(),
      moreEl: null,
      silenced: false, // any alarm silenced: re-render countdown every second
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

  // ---------- NEWS2 badge ----------

  const BAND_TEXT = { high: 'HIGH', medium: 'MEDIUM', lowmed: 'LOW-MED', low: 'LOW', none: 'no score' };

  // Apply a NEWS2 score object if it is not older than the one shown.
  function applyScore(rec, score) {
    if (!score || typeof score !== 'object') return false;
    const t = parseTime(score.time);
    if (Number.isFinite(t) && t < rec.news2T) return false;
    rec.news2 = score;
    rec.news2T = Number.isFinite(t) ? t : rec.news2T;
    return true;
  }

  function renderScore(rec) {
    const s = rec.news2;
    const box = rec.news2Box;
    let band = 'none';
    let complete = 'none';
    let total = '–';
    let bandText = BAND_TEXT.none;
    let label = 'NEWS2: no score yet';
    let missing = '';
    if (s && Number.isFinite(Number(s.total))) {
      band = bandClass(s);
      const incomplete = s.complete === false;
      complete = incomplete ? 'no' : 'yes';
      total = (incomplete ? '≥' : '') + String(s.total);
      bandText = incomplete ? 'INCOMPLETE' : BAND_TEXT[band];
      const bandName = s.band ? String(s.band) : BAND_TEXT[band].toLowerCase();
      if (incomplete) {
        const what = missingText(s, true) || 'some parameters';
        missing = 'NEWS2 incomplete — missing: ' + what;
        label = 'NEWS2 at least ' + s.total + ', incomplete, band at least ' + bandName + '; missing ' + (missingText(s, false) || 'some parameters');
      } else {
        label = 'NEWS2 ' + s.total + ', band ' + bandName;
      }
    }
    if (box.dataset.band !== band) box.dataset.band = band;
    if (box.dataset.complete !== complete) box.dataset.complete = complete;
    if (rec.el.dataset.band !== band) rec.el.dataset.band = band;
    setText(rec.news2Total, total);
    setText(rec.news2Band, bandText);
    if (box.getAttribute('aria-label') !== label) {
      box.setAttribute('aria-label', label);
      box.setAttribute('role', 'img');
      box.title = label;
    }
    setText(rec.missing, missing);
    if (rec.missing.title !== missing) rec.missing.title = missing;
    if (rec.missing.hidden !== !missing) rec.missing.hidden = !missing;
  }

  // ---------- alarms in a tile ----------

  function createAlarmEl(rec) {
    const prio = el('span', { class: 'alarm-prio' });
    const msg = el('span', { class: 'alarm-msg' });
    const st = el('span', { class: 'alarm-state' });
    const ack = el('button', { type: 'button', class: 'alarm-ack', text: 'Ack' });
    const li = el('li', { class: 'alarm' }, [prio, msg, st, ack]);
    const item = { li, prio, msg, st, ack, id: '' };
    ack.addEventListener('click', (ev) => {
      ev.preventDefault();
      ev.stopPropagation();
      acknowledge(rec, item.id);
    });
    return item;
  }

  function renderAlarms(rec, now) {
    const list = sortAlarms([...rec.alarms.values()]);
    const shown = list.slice(0, MAX_TILE_ALARMS);
    const keep = new Set(shown.map((a) => a.alarm));
    for (const [id, item] of rec.alarmEls) {
      if (!keep.has(id)) { item.li.remove(); rec.alarmEls.delete(id); }
    }
    let silenced = false;
    shown.forEach((a, i) => {
      let item = rec.alarmEls.get(a.alarm);
      if (!item) {
        item = createAlarmEl(rec);
        item.id = a.alarm;
        rec.alarmEls.set(a.alarm, item);
      }
      const prio = PRIORITY_RANK[a.priority] ? a.priority : 'low';
      const alarmState = a.state ? String(a.state) : 'active';
      const technical = a.kind === 'technical';
      const msg = alarmMessage(a);
      const flashing = prio === 'high' && needsAck(a);
      if (flashing && !item.flashing) syncFlash(item.prio);
      item.flashing = flashing;
      if (item.li.dataset.priority !== prio) item.li.dataset.priority = prio;
      if (item.li.dataset.state !== alarmState) item.li.dataset.state = alarmState;
      if (item.li.dataset.alarmId !== a.alarm) item.li.dataset.alarmId = a.alarm;
      item.li.dataset.kind = technical ? 'technical' : 'physiological';
      setText(item.prio, PRIORITY_SHORT[prio]);
      setText(item.msg, msg);
      const stText = alarmStateText(a, now);
      const until = silencedAt(a, now);
      if (until) silenced = true;
      // Compact in the tile: "silenced 1:20" stands for "active, silenced 1:20".
      setText(item.st, until && alarmState === 'active' ? 'silenced ' + durationText(until - now) : stText);
      const title = PRIORITY_TEXT[prio] + ' priority' + (technical ? ' technical' : '') + ' alarm, ' + stText + ': ' + msg +
        (a.role ? ' (notified: ' + String(a.role).replace(/_/g, ' ') + ')' : '');
      if (item.li.title !== title) item.li.title = title;
      const canAck = needsAck(a);
      if (item.ack.hidden === canAck) item.ack.hidden = !canAck;
      item.ack.disabled = stateBusy(a.alarm);
      const ackLabel = 'Acknowledge ' + PRIORITY_TEXT[prio].toLowerCase() + ' priority alarm: ' + msg;
      if (item.ack.getAttribute('aria-label') !== ackLabel) item.ack.setAttribute('aria-label', ackLabel);
      if (rec.alarmList.children[i] !== item.li) rec.alarmList.insertBefore(item.li, rec.alarmList.children[i] || null);
    });
    const more = list.length - shown.length;
    if (more > 0) {
      if (!rec.moreEl) {
        const a = el('a', { class: 'alarm-more-link', href: '/patients/' + encodeURIComponent(rec.id) });
        rec.moreEl = el('li', { class: 'alarm-more' }, [a]);
      }
      setText(rec.moreEl.firstChild, '+' + more + ' more alarm' + (more === 1 ? '' : 's') + ' — open patient');
      if (rec.moreEl.parentNode !== rec.alarmList || rec.alarmList.lastChild !== rec.moreEl) rec.alarmList.appendChild(rec.moreEl);
    } else if (rec.moreEl) {
      rec.moreEl.remove();
    }
    rec.silenced = silenced;
    // Tile-level signal: the highest open priority; flashing only while a
    // high-priority alarm is not yet acknowledged.
    const top = list.length ? (PRIORITY_RANK[list[0].priority] ? list[0].priority : 'low') : 'none';
    const flash = list.some((a) => a.priority === 'high' && needsAck(a)) ? '1' : '0';
    if (rec.el.dataset.alarm !== top) rec.el.dataset.alarm = top;
    if (rec.el.dataset.flash !== flash) {
      rec.el.dataset.flash = flash;
      if (flash === '1') {
        syncFlash(rec.el);
        for (const item of rec.alarmEls.values()) if (item.flashing) syncFlash(item.prio);
      }
    }
    rec.alarmList.hidden = list.length === 0;
  }

  function stateBusy(id) { return state.actingOn.has(id); }

  async function acknowledge(rec, id) {
    const alarm = rec.alarms.get(id);
    if (!alarm || state.actingOn.has(id)) return;
    const where = 'Bed ' + (rec.bed.textContent || '—') + (rec.name.textContent ? ' (' + rec.name.textContent + ')' : '');
    state.actingOn.add(id);
    let answer = null;
    try {
      answer = await alarmAction(alarm, 'acknowledge', where, () => refresh());
    } finally {
      state.actingOn.delete(id);
    }
    if (answer) {
      if (answer.open && answer.open.alarm != null) {
        rec.alarms.set(String(answer.open.alarm), Object.assign({}, rec.alarms.get(String(answer.open.alarm)) || {}, answer.open));
      } else {
        rec.alarms.delete(id);
      }
    }
    renderAlarms(rec, serverNow());
    renderSummary();
  }

  // ---------- ward alarm summary ----------

  function renderSummary() {
    const counts = { high: [], medium: [], low: [] };
    const unack = { high: false, medium: false, low: false };
    for (const rec of state.tiles.values()) {
      for (const a of rec.alarms.values()) {
        const p = PRIORITY_RANK[a.priority] ? a.priority : 'low';
        counts[p].push(rec);
        if (needsAck(a)) unack[p] = true;
      }
    }
    for (const chip of summary.querySelectorAll('.sum-chip')) {
      const p = chip.dataset.priority;
      const recs = counts[p];
      const beds = [...new Set(recs.map((r) => r.bed.textContent))];
      setText(chip.querySelector('.sum-count'), String(recs.length));
      setText(chip.querySelector('.sum-beds'), beds.length ? ' · ' + beds.slice(0, 4).join(' ') + (beds.length > 4 ? ' …' : '') : '');
      if (chip.dataset.count !== String(recs.length)) chip.dataset.count = String(recs.length);
      const label = recs.length + ' open ' + PRIORITY_TEXT[p].toLowerCase() + ' priority alarm' + (recs.length === 1 ? '' : 's') +
        (beds.length ? ' (beds ' + beds.join(', ') + ')' : '');
      if (chip.getAttribute('aria-label') !== label) { chip.setAttribute('aria-label', label); chip.title = label; }
      chip.disabled = recs.length === 0;
      const u = unack[p] ? '1' : '0';
      if (chip.dataset.unack !== u) {
        chip.dataset.unack = u;
        if (u === '1') syncFlash(chip);
      }
    }
  }

  // Summary chip: jump to the first tile with an alarm of that priority.
  summary.addEventListener('click', (ev) => {
    const chip = ev.target.closest('.sum-chip');
    if (!chip) return;
    for (const tile of grid.children) {
      if (tile.dataset.alarm === chip.dataset.priority) {
        tile.scrollIntoView({ block: 'center' });
        const link = tile.querySelector('.tile-link');
        if (link) link.focus({ preventScroll: true });
        return;
      }
    }
  });

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
      if (p.news2 && typeof p.news2 === 'object') {
        // The snapshot is the truth at generated_at; a live score newer than it wins.
        const t = parseTime(p.news2.time);
        if (!(Number.isFinite(t) && t < rec.news2T)) { rec.news2 = p.news2; rec.news2T = Number.isFinite(t) ? t : -Infinity; }
      } else if (p.news2 === null) {
        rec.news2 = null;
        rec.news2T = -Infinity;
      }
      renderScore(rec);
      rec.alarms = new Map();
      for (const a of Array.isArray(p.alarms) ? p.alarms : []) {
        if (a && a.alarm != null) rec.alarms.set(String(a.alarm), Object.assign({}, a, { alarm: String(a.alarm) }));
      }
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
    // Replay live alarm/score events received while the request was in flight
    // (applying a transition twice gives the same state).
    const buffered = state.clinicalBuffer || [];
    state.clinicalBuffer = null;
    for (const [kind, data] of buffered) {
      if (kind === 'alarm') applyAlarm(data, false); else applyScoreEvent(data, false);
    }
    const now = serverNow();
    for (const rec of state.tiles.values()) {
      renderFreshness(rec, now);
      renderAlarms(rec, now);
    }
    renderSummary();
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
    state.clinicalBuffer = [];
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

  function unknownPatient() {
    if (Date.now() - state.lastUnknownRefetch > UNKNOWN_REFETCH_MS) {
      state.lastUnknownRefetch = Date.now();
      refresh();
    }
  }

  // One alarm transition. `render` false while replaying (the caller renders).
  function applyAlarm(ev, render) {
    if (ev.patient == null) return;
    const rec = state.tiles.get(String(ev.patient));
    if (!rec) { if (render) unknownPatient(); return; }
    if (!applyAlarmEvent(rec.alarms, ev)) return;
    if (render) {
      renderAlarms(rec, serverNow());
      renderSummary();
      if (ev.transition === 'raised' || ev.transition === 'priority_escalated') {
        const p = PRIORITY_TEXT[ev.priority] || '';
        setText(alarmLive, p + ' priority alarm, bed ' + (rec.bed.textContent || '—') + ': ' + alarmMessage(ev));
      }
    }
  }

  function applyScoreEvent(ev, render) {
    if (ev.table !== 'news2' || ev.patient == null) return;
    const rec = state.tiles.get(String(ev.patient));
    if (!rec) return;
    if (applyScore(rec, ev) && render) renderScore(rec);
  }

  function onAlarm(ev) {
    if (state.clinicalBuffer && state.clinicalBuffer.length < MAX_PENDING) state.clinicalBuffer.push(['alarm', ev]);
    if (state.loaded) applyAlarm(ev, true);
  }

  function onScore(ev) {
    if (state.clinicalBuffer && state.clinicalBuffer.length < MAX_PENDING) state.clinicalBuffer.push(['score', ev]);
    if (state.loaded) applyScoreEvent(ev, true);
  }

  const stream = liveStream({
    url: () => withWard('/api/v1/stream', state.ward),
    measurements: onMeasurements,
    alarm: onAlarm,
    score: onScore,
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
    for (const rec of state.tiles.values()) {
      renderFreshness(rec, now);
      if (rec.silenced) renderAlarms(rec, now); // silence countdown
    }
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
