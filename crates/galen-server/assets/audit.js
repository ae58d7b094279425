// Galen audit page: the auditor's read-only view of the audit trail over
// GET /api/v1/audit, with its filters (from, to, actor, patient, action,
// outcome) and paging newest first. Plain ES2020, no dependencies. Every value
// is put on the page as text (textContent), never as markup; the page reads
// nothing but the audit trail and the caller's session, so it shows patients
// by id only. Never log records to the console.
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);

  // The query of the page shown: filters plus the `before` cursor.
  let filters = new URLSearchParams();
  // Cursors of the pages before this one (newer), for "Newer".
  const newer = [];
  let before = null;
  let nextBefore = null;
  // The newest seq on the page shown, so that "Newer" returns to exactly that page even when
  // records were added since (reading the trail is itself audited); Apply shows the newest.
  let topSeq = null;

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function showError(message) {
    const box = $('audit-error');
    setText(box, message);
    box.hidden = !message;
  }

  // A datetime-local value (the browser's local time) as RFC 3339 in UTC.
  function utc(value) {
    if (!value) return '';
    const time = new Date(value);
    return Number.isFinite(time.getTime()) ? time.toISOString() : '';
  }

  // The filters in the form, as query parameters of GET /api/v1/audit.
  function readFilters() {
    const form = $('audit-filter');
    const query = new URLSearchParams();
    const from = utc(form.elements.from.value);
    const to = utc(form.elements.to.value);
    if (from) query.set('from', from);
    if (to) query.set('to', to);
    for (const name of ['actor', 'patient', 'action', 'outcome']) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    query.set('limit', form.elements.limit.value || '100');
    query.set('order', 'desc');
    return query;
  }

  function cell(row, text, className) {
    const td = document.createElement('td');
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function render(items) {
    const body = $('audit-rows');
    const rows = document.createDocumentFragment();
    for (const record of items) {
      const row = document.createElement('tr');
      row.dataset.seq = String(record.seq);
      row.dataset.outcome = String(record.outcome);
      cell(row, String(record.seq), 'num');
      cell(row, String(record.time).replace('T', ' ').replace('Z', ''), 'time');
      cell(row, String(record.actor));
      cell(row, String(record.role));
      cell(row, String(record.action));
      cell(row, String(record.resource), 'resource');
      cell(row, record.patient === null || record.patient === undefined ? '' : String(record.patient), 'num');
      cell(row, String(record.outcome), 'outcome');
      cell(row, String(record.source));
      cell(row, String(record.detail), 'detail');
      rows.appendChild(row);
    }
    body.replaceChildren(rows);
  }

  // Counts finished loads, so that tests (and people) can tell a new answer from the old one.
  function loaded() {
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }

  async function load() {
    await fetchPage();
    loaded();
  }

  async function fetchPage() {
    const query = new URLSearchParams(filters);
    if (before !== null) query.set('before', String(before));
    setText($('audit-count'), 'Loading…');
    let res;
    try {
      res = await fetch('/api/v1/audit?' + query.toString(), {
        credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' },
      });
    } catch (_) {
      showError('The server cannot be reached; try again.');
      setText($('audit-count'), '');
      return;
    }
    if (res.status === 401) {
      location.assign('/login');
      return;
    }
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const message = body && typeof body.message === 'string' ? body.message : 'HTTP ' + res.status;
      showError(res.status === 403 ? 'Your account may not read the audit trail.' : 'The filter was refused: ' + message);
      render([]);
      setText($('audit-count'), '');
      return;
    }
    showError('');
    const items = Array.isArray(body.items) ? body.items : [];
    render(items);
    nextBefore = typeof body.next_before === 'number' ? body.next_before : null;
    const first = items.length ? items[0].seq : null;
    topSeq = first;
    const last = items.length ? items[items.length - 1].seq : null;
    setText($('audit-count'), items.length
      ? items.length + ' records, seq ' + first + ' to ' + last
      : 'No records match.');
    document.body.dataset.records = String(items.length);
    const head = body.head;
    setText($('audit-head'), head ? 'Chain head ' + head.seq + ':' + head.hash : 'The trail is empty.');
    $('audit-older').disabled = nextBefore === null;
    $('audit-newer').disabled = newer.length === 0;
  }

  function apply(event) {
    if (event) event.preventDefault();
    filters = readFilters();
    newer.length = 0;
    before = null;
    load();
  }

  async function who() {
    try {
      const res = await fetch('/api/v1/session', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!res.ok) return;
      const session = await res.json();
      setText($('audit-who'), String(session.actor) + ' (' + String(session.role) + ')');
    } catch (_) { /* the name is a courtesy */ }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('audit-filter').addEventListener('submit', apply);
    $('audit-filter').addEventListener('reset', () => setTimeout(apply, 0));
    $('audit-older').addEventListener('click', () => {
      if (nextBefore === null) return;
      newer.push(before === null && topSeq !== null ? topSeq + 1 : before);
      before = nextBefore;
      load();
    });
    $('audit-newer').addEventListener('click', () => {
      if (!newer.length) return;
      before = newer.pop();
      load();
    });
    who();
    apply();
  });
})();
