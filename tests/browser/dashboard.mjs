// Browser smoke test: starts `galen demo`, drives the dashboard and the
// patient page in headless Chromium. Plain node script (no test runner).
// Checks vitals, live updates, NEWS2 badges, an alarm raised through the API
// (shown, flashing, acknowledged from the tile), and the patient page's
// scores, NEWS2 history, alarm timeline, alarm actions and observations.
// Then starts `galen serve` with an auditor account, signs in as the auditor
// and filters and pages the audit trail view, which shows patients by id only.
// Last stdout line is exactly "1 passed, 0 failed" or "0 passed, 1 failed".
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOTAL_TIMEOUT_MS = 180_000;
const START_TIMEOUT_MS = 60_000;
const EXPECTED_TILES = 24;

let child = null;
let childExited = false;
let stderrTail = '';
let browser = null;
let tmpDir = null;
// `galen serve` for the auditor view (the demo has no accounts).
let serveChild = null;
let serveExited = false;
const SERVICE_TOKEN = 'browser-test-service-token-0123456789';
const AUDITOR = { name: 'audra.auditor', password: 'correct horse battery staple' };

function log(msg) {
  console.log(msg);
}

function findBinary() {
  const bin = process.env.GALEN_BIN || path.resolve(HERE, '../../target/debug/galen');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`galen binary not found or not executable at ${bin} (build it with \`cargo build\` or set GALEN_BIN)`);
  }
  return bin;
}

function startServer(bin) {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'galen-browser-'));
  const dataDir = path.join(tmpDir, 'data');
  fs.mkdirSync(dataDir);
  child = spawn(bin, ['demo', '--http-addr', '127.0.0.1:0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderrTail = (stderrTail + d).slice(-8000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server did not print "dashboard at <url>" within ${START_TIMEOUT_MS / 1000} s`));
    }, START_TIMEOUT_MS);
    const rl = readline.createInterface({ input: child.stdout });
    let found = false;
    rl.on('line', (line) => {
      if (found) return;
      const m = /dashboard at (http:\/\/\S+)/.exec(line);
      if (m) {
        found = true;
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    // Keep draining stdout after the URL so the child never blocks on a full pipe.
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      childExited = true;
      if (!found) {
        clearTimeout(timer);
        // Give stderr a moment to drain so the tail shown is complete.
        const fail = () => reject(new Error(`server exited early (code ${code}, signal ${signal})`));
        const t = setTimeout(fail, 500);
        child.once('close', () => { clearTimeout(t); fail(); });
      }
    });
  });
}

// Creates the auditor account (`galen users add`, password on stdin), then
// starts `galen serve` on the same data directory; resolves to its URL.
function startServe(bin) {
  const dataDir = path.join(tmpDir, 'serve-data');
  fs.mkdirSync(dataDir);
  // A master key for encryption at rest, fresh for this run (`galen serve` refuses to run without one).
  const dataKey = `browser-test:${randomBytes(32).toString('hex')}`;
  const env = { ...process.env, NO_COLOR: '1', GALEN_API_TOKEN: SERVICE_TOKEN, GALEN_LOG: 'warn', GALEN_DATA_KEY: dataKey };
  const added = spawnSync(bin, ['users', 'add', '--data-dir', dataDir, '--name', AUDITOR.name, '--role', 'auditor'],
    { input: `${AUDITOR.password}\n`, env, encoding: 'utf8' });
  check(added.status === 0, `galen users add failed: ${added.stderr}`);
  serveChild = spawn(bin, ['serve', '--http-addr', '127.0.0.1:0', '--data-dir', dataDir, '--mqtt-addr', 'off', '--mllp-addr', 'off'],
    { stdio: ['ignore', 'pipe', 'pipe'], env });
  serveChild.stderr.setEncoding('utf8');
  serveChild.stderr.on('data', (d) => { stderrTail = (stderrTail + d).slice(-8000); });
  serveChild.on('exit', () => { serveExited = true; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('galen serve did not print its dashboard line')), START_TIMEOUT_MS);
    const rl = readline.createInterface({ input: serveChild.stdout });
    rl.on('line', (line) => {
      const m = /dashboard at (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    serveChild.on('exit', (code) => { clearTimeout(timer); reject(new Error(`galen serve exited early (code ${code})`)); });
  });
}

async function stopServe() {
  if (!serveChild || serveExited) return;
  const exited = new Promise((resolve) => serveChild.once('exit', resolve));
  serveChild.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (!serveExited) serveChild.kill('SIGKILL');
}

async function stopServer() {
  if (!child || childExited) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 5000));
  if ((await Promise.race([exited, timeout])) === 'timeout' && !childExited) {
    child.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  }
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Wait for a DOM condition; on timeout fail with `msg`.
async function waitFor(page, fn, arg, msg, timeout = 15_000) {
  await page.waitForFunction(fn, arg, { timeout, polling: 200 }).catch(() => {
    throw new Error(msg);
  });
}

let apiBase = '';
async function api(method, urlPath, body) {
  const res = await fetch(apiBase + urlPath, {
    method,
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

// Registers a patient (with markup in the name, which must show as text) and
// a pulse oximeter, then posts SpO2 80 % spanning more than the SpO2 alarm's
// condition delay (15 s), which raises a high-priority alarm.
async function raiseAlarm() {
  const tag = Date.now().toString(36);
  const patient = await api('POST', '/api/v1/patients', {
    identifier: { system: 'urn:galen:browser-test', value: `BT-${tag}` },
    name: { family: 'Tester<b>X</b>', given: 'Alma' },
    birth_date: '1950-03-04',
    sex: 'female',
    ward: 'A',
    bed: 'A-99',
  });
  const serial = `OXI-BT-${tag}`;
  const device = await api('POST', '/api/v1/devices', { serial, kind: 'pulse_oximeter' });
  const now = Date.now();
  await api('POST', '/api/v1/assignments', {
    device: device.id, patient: patient.id, start: new Date(now - 5 * 60_000).toISOString(),
  });
  for (const ago of [40, 20, 0]) {
    const r = await api('POST', '/api/v1/measurements', [
      { device: serial, code: 'spo2', value: 80, unit: '%', time: new Date(now - ago * 1000).toISOString() },
    ]);
    check(r.accepted === 1, `SpO2 measurement not accepted: ${JSON.stringify(r)}`);
  }
  return patient.id;
}

async function run() {
  const bin = findBinary();
  const baseUrl = await startServer(bin);
  apiBase = baseUrl.replace(/\/$/, '');
  log(`server: ${baseUrl}`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  // Galen's Content-Security-Policy (no inline script or style) must block nothing the pages do.
  const cspViolations = [];
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text());
  });

  await page.goto(baseUrl, { waitUntil: 'domcontentloaded', timeout: 15_000 });

  // 1. 24 tiles, each showing a heart-rate number.
  await page.waitForFunction((n) => {
    const tiles = document.querySelectorAll('.tile');
    if (tiles.length !== n) return false;
    return [...tiles].every((t) => {
      const el = t.querySelector('[data-vital="heart_rate"]');
      return el && /^\d+$/.test(el.textContent.trim());
    });
  }, EXPECTED_TILES, { timeout: 20_000 }).catch(async () => {
    const count = await page.locator('.tile').count();
    throw new Error(`expected ${EXPECTED_TILES} tiles each with a heart rate; found ${count} tiles`);
  });
  log(`dashboard: ${EXPECTED_TILES} tiles with heart rates`);

  // 1b. Every tile shows a NEWS2 badge with a number and a band word.
  await waitFor(page, () => [...document.querySelectorAll('.tile')].every((t) => {
    const badge = t.querySelector('.news2');
    const total = t.querySelector('.news2-total');
    const band = t.querySelector('.news2-band');
    return badge && badge.dataset.band !== 'none' && /^≥?\d+$/.test(total.textContent.trim()) &&
      band.textContent.trim().length > 0;
  }), null, 'not every tile shows a NEWS2 badge with a number and a band', 20_000);
  const bands = await page.evaluate(() => [...document.querySelectorAll('.tile .news2')].map((b) => b.dataset.band));
  log(`dashboard: NEWS2 badges on all tiles (bands: ${[...new Set(bands)].join(', ')})`);

  // 2. Live updates without a reload.
  const before = await page.evaluate(() => {
    window.__marker = 1;
    const values = {};
    for (const t of document.querySelectorAll('.tile')) {
      values[t.dataset.patientId] = [...t.querySelectorAll('[data-vital]')].map((e) => e.textContent).join('|');
    }
    return { values, updates: Number(document.body.dataset.updates || 0) };
  });
  await page.waitForFunction((b) => {
    if (Number(document.body.dataset.updates || 0) <= b.updates) return false;
    for (const t of document.querySelectorAll('.tile')) {
      const now = [...t.querySelectorAll('[data-vital]')].map((e) => e.textContent).join('|');
      if (t.dataset.patientId in b.values && b.values[t.dataset.patientId] !== now) return true;
    }
    return false;
  }, before, { timeout: 20_000, polling: 250 }).catch(() => {
    throw new Error('no live update reached the dashboard within 20 s');
  });
  const after = await page.evaluate(() => ({ marker: window.__marker, updates: Number(document.body.dataset.updates || 0) }));
  check(after.marker === 1, 'page was reloaded or navigated during live updates');
  check(after.updates > before.updates, 'updates counter did not grow');
  log(`dashboard: live updates applied (${before.updates} -> ${after.updates}) without reload`);

  const shot = path.join(tmpDir, 'dashboard.png');
  await page.screenshot({ path: shot });
  log(`screenshot: ${shot}${process.env.KEEP_TMP ? '' : ' (removed at exit; set KEEP_TMP=1 to keep)'}`);

  // 2b. An alarm raised through the API appears in its tile, live.
  const alarmPatient = await raiseAlarm();
  const tileSel = `.tile[data-patient-id="${alarmPatient}"]`;
  await waitFor(page, (sel) => {
    const t = document.querySelector(sel);
    const a = t && t.querySelector('.alarm[data-priority="high"][data-state="active"]');
    return a && /HIGH/.test(a.querySelector('.alarm-prio').textContent) && a.querySelector('.alarm-msg').textContent.trim() &&
      !a.querySelector('.alarm-ack').hidden && t.dataset.alarm === 'high';
  }, tileSel, `no active high-priority alarm with an Acknowledge button in the tile of patient ${alarmPatient}`, 30_000);
  const tileInfo = await page.evaluate((sel) => {
    const t = document.querySelector(sel);
    return {
      marker: window.__marker,
      name: t.querySelector('.name').textContent,
      injected: t.querySelectorAll('.name b').length,
      message: t.querySelector('.alarm .alarm-msg').textContent,
      alarmId: t.querySelector('.alarm').dataset.alarmId,
      animation: getComputedStyle(t).animationName,
      summary: document.querySelector('.sum-chip[data-priority="high"] .sum-count').textContent,
      news2: t.querySelector('.news2-total').textContent,
      incomplete: t.querySelector('.news2').dataset.complete,
      missing: t.querySelector('.score-missing').textContent,
    };
  }, tileSel);
  check(tileInfo.marker === 1, 'page was reloaded while the alarm arrived');
  check(tileInfo.name.includes('<b>X</b>') && tileInfo.injected === 0, `patient name markup was not shown as text: ${JSON.stringify(tileInfo.name)}`);
  check(tileInfo.animation === 'alarm-flash', `unacknowledged high alarm tile does not flash (animation: ${tileInfo.animation})`);
  check(Number(tileInfo.summary) >= 1, `ward summary shows ${tileInfo.summary} high alarms`);
  check(tileInfo.incomplete === 'no' && /missing/i.test(tileInfo.missing), `SpO2-only patient's NEWS2 is not marked incomplete with missing parameters (${tileInfo.news2}, ${tileInfo.missing})`);
  log(`dashboard: alarm ${tileInfo.alarmId} shown live (${JSON.stringify(tileInfo.message)}), tile flashing, NEWS2 ${tileInfo.news2} incomplete`);

  // Reduced motion: steady (no animation) but still marked.
  await page.emulateMedia({ reducedMotion: 'reduce' });
  const steady = await page.evaluate((sel) => {
    const cs = getComputedStyle(document.querySelector(sel));
    return { animation: cs.animationName, border: cs.borderTopWidth };
  }, tileSel);
  check(steady.animation === 'none' && parseFloat(steady.border) >= 3, `reduced motion: expected a steady strong border, got ${JSON.stringify(steady)}`);
  await page.emulateMedia({ reducedMotion: 'no-preference' });
  await page.screenshot({ path: path.join(tmpDir, 'dashboard-alarm.png') });
  log('dashboard: reduced motion gives a steady border');

  // 2c. Acknowledge from the tile: the dialog asks for the name, the tile updates.
  const actor = 'Nurse Browser-Test';
  await page.locator(`${tileSel} .alarm[data-alarm-id="${tileInfo.alarmId}"] .alarm-ack`).click();
  await page.locator('dialog.action-dialog[open] #action-by').waitFor({ timeout: 5_000 });
  await page.locator('#action-by').fill('');
  await page.locator('#action-confirm').click();
  await waitFor(page, () => {
    const e = document.getElementById('action-error');
    return e && !e.hidden && e.textContent.trim().length > 0;
  }, null, 'acknowledging without a name did not show an error');
  await page.locator('#action-by').fill(actor);
  await page.locator('#action-confirm').click();
  await waitFor(page, ([sel, id]) => {
    const a = document.querySelector(`${sel} .alarm[data-alarm-id="${id}"]`);
    return a && a.dataset.state === 'acknowledged' && /acknowledged/i.test(a.querySelector('.alarm-state').textContent) &&
      a.querySelector('.alarm-ack').hidden && !document.querySelector('dialog.action-dialog[open]');
  }, [tileSel, tileInfo.alarmId], 'the tile does not show the alarm as acknowledged after Acknowledge', 10_000);
  const remembered = await page.evaluate(() => localStorage.getItem('galen.actor'));
  check(remembered === actor, `the acting name was not remembered (got ${JSON.stringify(remembered)})`);
  const afterAck = await page.evaluate((sel) => ({ marker: window.__marker, animation: getComputedStyle(document.querySelector(sel)).animationName }), tileSel);
  check(afterAck.marker === 1, 'page was reloaded by the acknowledgement');
  check(afterAck.animation === 'none', 'tile still flashes after the only high alarm was acknowledged');
  log(`dashboard: alarm acknowledged from the tile by ${JSON.stringify(actor)}; flashing stopped`);

  // 3. Tile click opens the patient page with the name and a chart.
  const tile = page.locator('.tile').first();
  const name = ((await tile.locator('.name').textContent()) || '').trim();
  const id = await tile.getAttribute('data-patient-id');
  check(name.length > 0, 'first tile shows no patient name');
  await Promise.all([
    page.waitForURL((u) => new URL(u).pathname === `/patients/${id}`, { timeout: 10_000 }),
    tile.click(),
  ]);
  await page.waitForFunction((n) => {
    const h = document.getElementById('patient-name');
    return h && h.textContent.trim() === n;
  }, name, { timeout: 10_000 }).catch(async () => {
    const shown = await page.locator('#patient-name').textContent().catch(() => null);
    throw new Error(`patient page does not show the tile's patient name (shown: ${JSON.stringify(shown)})`);
  });
  await page.waitForFunction(() => document.querySelectorAll('.chart svg path.mean').length > 0, null, { timeout: 15_000 })
    .catch(() => { throw new Error('patient page shows no SVG chart with a path'); });
  const charts = await page.locator('.chart svg').count();
  log(`patient page: name shown, ${charts} charts`);

  // 3b. Scores (NEWS2 with its points table, qSOFA, MEWS) and the NEWS2 history.
  await waitFor(page, () => {
    const card = document.querySelector('.score-card[data-table="news2"]');
    return card && /^≥?\d+$/.test(card.querySelector('.sc-total').textContent.trim()) &&
      card.querySelectorAll('.sc-points tbody tr').length >= 5 &&
      card.querySelector('.sc-monitoring').textContent.trim().length > 1 &&
      document.querySelector('.score-card[data-table="qsofa"]') && document.querySelector('.score-card[data-table="mews"]');
  }, null, 'patient page shows no NEWS2 card with a total and a points table (and qSOFA, MEWS)');
  await waitFor(page, () => document.querySelectorAll('#score-chart svg path.step').length > 0 &&
    Number(document.getElementById('score-chart').dataset.points) > 0,
  null, 'patient page shows no NEWS2 history step line');
  const history = await page.evaluate(() => document.getElementById('score-chart').dataset.points);
  log(`patient page: NEWS2/qSOFA/MEWS cards, NEWS2 history with ${history} score changes`);
  await page.screenshot({ path: path.join(tmpDir, 'patient.png'), fullPage: true });
  log(`screenshot: ${path.join(tmpDir, 'patient.png')}`);

  // 4. The alarm patient's page: open alarm, timeline with who, resolve with a reason, observations.
  await page.goto(`${baseUrl.replace(/\/$/, '')}/patients/${alarmPatient}`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  const alarmItem = `.p-alarm[data-alarm-id="${tileInfo.alarmId}"]`;
  await waitFor(page, (sel) => {
    const a = document.querySelector(sel);
    return a && a.dataset.state === 'acknowledged' && a.querySelector('[data-action="resolve"]');
  }, alarmItem, 'patient page does not list the acknowledged alarm with a Resolve button');
  await waitFor(page, ([id, who]) => {
    const items = [...document.querySelectorAll('#alarm-timeline .tl-item')];
    const mine = items.filter((li) => li.title.includes(id));
    return mine.some((li) => li.dataset.transition === 'raised') &&
      mine.some((li) => li.dataset.transition === 'acknowledged' && li.textContent.includes(who));
  }, [tileInfo.alarmId, actor], 'alarm timeline does not show the raised and acknowledged (with who) transitions');
  await waitFor(page, () => document.querySelectorAll('#score-chart svg path.step').length > 0,
    null, 'alarm patient page shows no NEWS2 history');
  log('patient page: alarm timeline shows raised and acknowledged by the nurse');

  await page.locator(`${alarmItem} [data-action="resolve"]`).click();
  await page.locator('dialog.action-dialog[open]').waitFor({ timeout: 5_000 });
  const prefilled = await page.locator('#action-by').inputValue();
  check(prefilled === actor, `the dialog did not prefill the remembered name (got ${JSON.stringify(prefilled)})`);
  await page.locator('#action-confirm').click();
  await waitFor(page, () => !document.getElementById('action-error').hidden, null, 'resolving without a reason was not refused');
  const reason = 'probe off finger, patient checked';
  await page.locator('#action-reason').fill(reason);
  await page.locator('#action-confirm').click();
  await waitFor(page, ([sel, id, why]) => !document.querySelector(sel) &&
    [...document.querySelectorAll('#alarm-timeline .tl-item')].some((li) => li.title.includes(id) &&
      li.dataset.transition === 'resolved_by_user' && li.textContent.includes(why)),
  [alarmItem, tileInfo.alarmId, reason], 'resolving with a reason did not close the alarm and log who and why', 10_000);
  log('patient page: alarm resolved with a reason');

  await page.locator('#obs-form input[name="consciousness"][value="C"]').check();
  await page.locator('#obs-form input[name="oxygen"][value="air"]').check();
  await page.locator('#obs-record').click();
  await waitFor(page, () => {
    const st = document.getElementById('obs-status');
    const rows = [...document.querySelectorAll('.score-card[data-table="news2"] .sc-points tbody tr')];
    const c = rows.find((r) => /Consciousness/.test(r.textContent));
    return st.dataset.kind === 'ok' && c && /^C\b/.test(c.children[1].textContent) && c.dataset.points === '3';
  }, null, 'recording ACVPU "C" did not update the NEWS2 points table');
  log('patient page: nurse observation (ACVPU C, air) recorded and scored');
  await page.screenshot({ path: path.join(tmpDir, 'patient-alarm.png'), fullPage: true });
  log(`screenshot: ${path.join(tmpDir, 'patient-alarm.png')}`);

  check(pageErrors.length === 0, `JavaScript errors on the pages: ${pageErrors.join('; ')}`);
  check(cspViolations.length === 0, `Content-Security-Policy violations: ${cspViolations.join('; ')}`);

  await auditorView(bin);
}

// 5. The auditor view on `galen serve`: sign in as an auditor, land on the
// audit trail, filter by patient, action and time, page back and forth, and
// see patients by id only.
async function auditorView(bin) {
  const base = (await startServe(bin)).replace(/\/$/, '');
  log(`serve: ${base}/`);
  const service = async (method, urlPath, body) => {
    const res = await fetch(base + urlPath, {
      method,
      headers: { Authorization: `Bearer ${SERVICE_TOKEN}`, 'Content-Type': 'application/json', Accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${urlPath}: HTTP ${res.status} ${text.slice(0, 300)}`);
    return text ? JSON.parse(text) : null;
  };
  // A patient whose identity must never reach the auditor's page, read twice.
  const identity = { family: 'Auditrail', given: 'Quincy', mrn: 'MRN-AUD-5150', birth: '1941-07-19' };
  const patient = await service('POST', '/api/v1/patients', {
    identifier: { system: 'urn:galen:browser-test', value: identity.mrn },
    name: { family: identity.family, given: identity.given },
    birth_date: identity.birth, sex: 'male', ward: 'A', bed: 'A-7',
  });
  await service('GET', `/api/v1/patients/${patient.id}`);
  await service('GET', `/fhir/Patient/${patient.id}`);
  // A failed sign-in of the auditor, and enough searches for more than one page.
  const failed = await fetch(`${base}/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: `name=${AUDITOR.name}&password=wrong-password-here`, redirect: 'manual',
  });
  check(failed.status === 401, `a wrong password was answered ${failed.status}`);
  for (let i = 0; i < 60; i++) await service('GET', '/api/v1/patients');

  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => { if (/Content Security Policy/i.test(msg.text())) errors.push(msg.text()); });

  await page.goto(`${base}/login`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  await page.locator('#name').fill(AUDITOR.name);
  await page.locator('#password').fill(AUDITOR.password);
  await Promise.all([
    page.waitForURL((u) => new URL(u).pathname === '/audit', { timeout: 10_000 }),
    page.locator('button[type="submit"]').click(),
  ]);
  await waitFor(page, () => Number(document.body.dataset.records) > 0 &&
    /audra\.auditor \(auditor\)/.test(document.getElementById('audit-who').textContent) &&
    /^Chain head \d+:[0-9a-f]{64}$/.test(document.getElementById('audit-head').textContent),
  null, 'the auditor did not land on an audit trail with records, the account and the chain head');
  log('audit: the auditor signs in and lands on the audit trail');

  const rows = () => page.evaluate(() => [...document.querySelectorAll('#audit-rows tr')].map((tr) => {
    const cells = [...tr.children].map((td) => td.textContent);
    return { seq: Number(cells[0]), actor: cells[2], action: cells[4], resource: cells[5], patient: cells[6], outcome: cells[7] };
  }));
  // Clicks a button and waits for the page's next answer from the server.
  const loadsAfter = async (selector) => {
    const before = await page.evaluate(() => Number(document.body.dataset.loads || 0));
    await page.locator(selector).click();
    await waitFor(page, (b) => Number(document.body.dataset.loads || 0) > b, before, `${selector} loaded nothing`);
  };
  const apply = () => loadsAfter('#audit-apply');

  // By patient: the two reads of the patient, and nothing else.
  await page.locator('input[name="patient"]').fill(String(patient.id));
  await apply();
  let shown = await rows();
  check(shown.length >= 2 && shown.every((r) => r.patient === String(patient.id)),
    `filtering by patient ${patient.id} showed ${JSON.stringify(shown)}`);
  check(shown.some((r) => r.resource === `/fhir/Patient/${patient.id}` && r.action === 'read' && r.outcome === 'success'),
    `the FHIR read of patient ${patient.id} is not listed: ${JSON.stringify(shown)}`);
  log(`audit: patient ${patient.id} filter shows ${shown.length} records`);

  // By action and outcome: the failed sign-in, by account name.
  await page.locator('input[name="patient"]').fill('');
  await page.locator('select[name="action"]').selectOption('login-failed');
  await page.locator('select[name="outcome"]').selectOption('failed');
  await apply();
  shown = await rows();
  check(shown.length === 1 && shown[0].actor === AUDITOR.name && shown[0].action === 'login-failed',
    `filtering failed sign-ins showed ${JSON.stringify(shown)}`);
  log('audit: action and outcome filter shows the failed sign-in');

  // By time: nothing before 2000.
  await page.locator('select[name="action"]').selectOption('');
  await page.locator('select[name="outcome"]').selectOption('');
  await page.locator('input[name="to"]').fill('2000-01-01T00:00:00');
  await apply();
  check((await rows()).length === 0 && /No records match/.test(await page.locator('#audit-count').textContent()),
    'a time window before 2000 still showed records');
  await page.locator('input[name="to"]').fill('');

  // Paging newest first, 50 a page.
  await page.locator('select[name="limit"]').selectOption('50');
  await apply();
  const first = await rows();
  check(first.length === 50 && !(await page.locator('#audit-older').isDisabled()), `first page: ${first.length} rows, Older disabled`);
  await loadsAfter('#audit-older');
  const older = await rows();
  check(older.length > 0 && older.every((r) => r.seq < first[first.length - 1].seq),
    `Older did not show older records: ${JSON.stringify(older.map((r) => r.seq))}`);
  await loadsAfter('#audit-newer');
  const again = await rows();
  check(again.length === 50 && again[0].seq === first[0].seq, 'Newer did not come back to the newest page');
  log('audit: pages older and back newer');

  await page.screenshot({ path: path.join(tmpDir, 'audit.png'), fullPage: false });
  log(`screenshot: ${path.join(tmpDir, 'audit.png')}`);
  // Ids only: the patient's name, MRN and birth date appear nowhere on the page.
  const text = await page.evaluate(() => document.documentElement.outerHTML);
  for (const phi of [identity.family, identity.given, identity.mrn, identity.birth]) {
    check(!text.includes(phi), `the audit page shows ${JSON.stringify(phi)}`);
  }
  // And the auditor sees no patient data.
  const dashboard = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  check(dashboard.status() === 403, `the auditor opened the ward view (HTTP ${dashboard.status()})`);
  log('audit: no patient identity on the page; the ward view is refused to the auditor');
  await context.close();
  check(errors.length === 0, `errors on the audit page: ${errors.join('; ')}`);
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  await stopServer().catch(() => {});
  await stopServe().catch(() => {});
  if (tmpDir && !process.env.KEEP_TMP) fs.rmSync(tmpDir, { recursive: true, force: true });
}

let finished = false;
async function finish(ok) {
  if (finished) return;
  finished = true;
  clearTimeout(overall);
  await cleanup();
  console.log(ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
  process.exit(ok ? 0 : 1);
}

const overall = setTimeout(() => {
  console.error(`error: test exceeded ${TOTAL_TIMEOUT_MS / 1000} s`);
  finish(false);
}, TOTAL_TIMEOUT_MS);

try {
  await run();
  await finish(true);
} catch (err) {
  if (!finished) {
    console.error(`error: ${err && err.message ? err.message : err}`);
    if (stderrTail.trim()) console.error(`--- galen stderr (tail) ---\n${stderrTail.trimEnd()}\n---`);
  }
  await finish(false);
}
