#!/usr/bin/env node
'use strict';
// selftest.js — proves fake_push.js checks and answers what its README says.
//
// Makes fresh credentials with gen_certs.sh in a temporary directory, starts
// two fakes (all roles; and APNs only with a public-key PEM and a tiny record
// bound), then drives them with Node's own HTTP/2 client and the control API:
// every verification (JWT kid/team/age/signature, headers, token, payload,
// OAuth assertion, FCM bearer and body) and every error path (behaviour rules
// for status codes, retry-after, drop, GOAWAY, delay). Each check runs under a
// timeout and the whole run under a global one; failures are listed and the
// exit status is 1. The fakes it started are killed on every way out.
//
//   node tests/fakes/selftest.js [--verbose]

const http2 = require('http2');
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const assert = require('assert');
const { spawn, execFileSync } = require('child_process');
const { signJwt } = require('./jwt_util');

const HERE = __dirname;
const VERBOSE = process.argv.includes('--verbose');
const STEP_TIMEOUT_MS = 5000;   // any single request or check
const GLOBAL_TIMEOUT_MS = 120000;
const TOPIC = 'com.example.mqchat';
const KEY_ID = 'KEYID12345';
const TEAM_ID = 'TEAMID1234';

const children = [];
let tmpDir = null;

function cleanup() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
}
process.on('exit', cleanup);
const globalTimer = setTimeout(() => {
  console.error(`selftest: FAILED — global timeout of ${GLOBAL_TIMEOUT_MS} ms`);
  process.exit(1);
}, GLOBAL_TIMEOUT_MS);

// ------------------------------------------------------------- helpers --

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

// Start fake_push.js; resolves with {child, port, controlPort, stderr()}.
function startFake(args) {
  const child = spawn(process.execPath, [path.join(HERE, 'fake_push.js'), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let err = '';
  child.stderr.on('data', (d) => { err += d; if (VERBOSE) process.stderr.write(d); });
  const ready = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      try {
        const j = JSON.parse(out.slice(0, nl));
        resolve({ child, port: j.port, controlPort: j.control_port, stderr: () => err });
      } catch (e) {
        reject(new Error(`bad first line from fake: ${out.slice(0, nl)}`));
      }
    });
    child.on('exit', (code) => reject(new Error(`fake exited (${code}) before it was ready: ${err}`)));
  });
  return withTimeout(ready, 10000, 'fake_push.js startup');
}

// One HTTP/2 request. Resolves {status, headers, text, json}; rejects if the
// stream or session dies first, or after the timeout.
function h2(session, headers, body, timeoutMs = STEP_TIMEOUT_MS) {
  const p = new Promise((resolve, reject) => {
    const req = session.request(headers);
    let res = null;
    const chunks = [];
    req.on('response', (h) => { res = h; });
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (!res) return reject(new Error('stream ended without a response'));
      const text = Buffer.concat(chunks).toString('utf8');
      let json;
      try { json = text ? JSON.parse(text) : undefined; } catch (e) { json = undefined; }
      resolve({ status: res && res[':status'], headers: res || {}, text, json });
    });
    req.on('error', (e) => reject(e));
    req.on('close', () => { if (!res) reject(new Error(`stream closed without a response (rst ${req.rstCode})`)); });
    req.end(body === undefined ? undefined : body);
  });
  return withTimeout(p, timeoutMs, `${headers[':method']} ${headers[':path']}`);
}

function connect(port, ca) {
  const s = http2.connect(`https://127.0.0.1:${port}`, { ca });
  s.on('error', () => {}); // surfaced through the requests instead
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  }), STEP_TIMEOUT_MS, 'HTTP/2 connect');
}

// A control-API call over plain HTTP/1.1.
function control(port, method, p, body) {
  const data = body === undefined ? undefined : JSON.stringify(body);
  const prom = new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p,
      headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
    (res) => {
      let t = '';
      res.on('data', (c) => { t += c; });
      res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(t) }));
    });
    req.on('error', reject);
    req.end(data);
  });
  return withTimeout(prom, STEP_TIMEOUT_MS, `control ${method} ${p}`);
}

const nowS = () => Math.floor(Date.now() / 1000);
const hexToken = () => crypto.randomBytes(32).toString('hex');

// ---------------------------------------------------------------- main --

const results = [];
async function check(name, fn) {
  try {
    await withTimeout(Promise.resolve().then(fn), STEP_TIMEOUT_MS * 2, name);
    results.push({ name, ok: true });
    if (VERBOSE) console.log(`ok   ${name}`);
  } catch (e) {
    results.push({ name, ok: false, err: e });
    console.log(`FAIL ${name}\n     ${(e && e.message || String(e)).split('\n').join('\n     ')}`);
  }
}

async function main() {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-push-selftest-'));
  execFileSync('sh', [path.join(HERE, 'gen_certs.sh'), tmpDir], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 30000 });
  const f = (n) => path.join(tmpDir, n);
  const ca = fs.readFileSync(f('ca.pem'));
  const apnsKey = crypto.createPrivateKey(fs.readFileSync(f('apns-key.p8')));
  const otherEcKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const otherRsaKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  // The second fake gets the public half only, to show both PEM forms work.
  fs.writeFileSync(f('apns-pub.pem'), crypto.createPublicKey(apnsKey).export({ type: 'spki', format: 'pem' }));

  const fake = await startFake(['--cert', f('server.pem'), '--key', f('server-key.pem'),
    '--apns-key', f('apns-key.p8'), '--apns-key-id', KEY_ID, '--apns-team-id', TEAM_ID,
    '--apns-topic', TOPIC, '--fcm-sa', f('fcm-sa.json'), '--write-sa', f('fcm-sa.run.json'),
    '--port', '0', '--control-port', '0']);
  const sa = JSON.parse(fs.readFileSync(f('fcm-sa.run.json'), 'utf8'));
  const ctl = (m, p, b) => control(fake.controlPort, m, p, b);
  const session = await connect(fake.port, ca);

  // ---- APNs ----
  const apnsJwt = (o = {}) => signJwt('ES256', o.key || apnsKey,
    { alg: o.alg || 'ES256', kid: o.kid || KEY_ID },
    { iss: o.iss || TEAM_ID, iat: o.iat !== undefined ? o.iat : nowS() });
  const goodJwt = apnsJwt();
  const apnsHeaders = (token, over = {}) => {
    const h = { ':method': 'POST', ':path': `/3/device/${token}`, authorization: `bearer ${goodJwt}`,
      'apns-topic': TOPIC, 'apns-push-type': 'alert', 'apns-priority': '10', 'content-type': 'application/json' };
    for (const [k, v] of Object.entries(over)) { if (v === undefined) delete h[k]; else h[k] = v; }
    return h;
  };
  const apnsBody = '{"aps":{"alert":{"title":"hi","body":"there"}},"m":"1"}';
  const apns = (over, body = apnsBody, token = hexToken(), s = session) => h2(s, apnsHeaders(token, over), body);
  const expectApns = async (over, status, reason, body, token) => {
    const r = await apns(over, body, token);
    assert.strictEqual(r.status, status, `status ${r.status} (${r.text})`);
    assert.ok(r.headers['apns-id'], 'apns-id header missing');
    assert.deepStrictEqual(r.json, { reason }, `body ${r.text}`);
    return r;
  };

  await check('apns: signed request -> 200, apns-id, empty body', async () => {
    const r = await apns({});
    assert.strictEqual(r.status, 200);
    assert.match(r.headers['apns-id'] || '', /^[0-9a-f-]{36}$/);
    assert.strictEqual(r.text, '');
  });
  await check('apns: apns-id sent is echoed', async () => {
    const id = crypto.randomUUID().toUpperCase();
    const r = await apns({ 'apns-id': id });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.headers['apns-id'], id);
  });
  await check('apns: background with priority 5 -> 200', async () => {
    const r = await apns({ 'apns-push-type': 'background', 'apns-priority': '5' }, '{"aps":{"content-available":1}}');
    assert.strictEqual(r.status, 200, r.text);
  });
  await check('apns: wrong kid -> 403 InvalidProviderToken', () =>
    expectApns({ authorization: `bearer ${apnsJwt({ kid: 'OTHERKEY99' })}` }, 403, 'InvalidProviderToken'));
  await check('apns: wrong team -> 403 InvalidProviderToken', () =>
    expectApns({ authorization: `bearer ${apnsJwt({ iss: 'OTHERTEAM9' })}` }, 403, 'InvalidProviderToken'));
  await check('apns: iat 2 h old -> 403 ExpiredProviderToken', () =>
    expectApns({ authorization: `bearer ${apnsJwt({ iat: nowS() - 7200 })}` }, 403, 'ExpiredProviderToken'));
  await check('apns: iat 10 min ahead -> 403 InvalidProviderToken', () =>
    expectApns({ authorization: `bearer ${apnsJwt({ iat: nowS() + 600 })}` }, 403, 'InvalidProviderToken'));
  await check('apns: signed by another key -> 403 InvalidProviderToken', () =>
    expectApns({ authorization: `bearer ${apnsJwt({ key: otherEcKey })}` }, 403, 'InvalidProviderToken'));
  await check('apns: DER signature instead of raw r||s -> 403 InvalidProviderToken', async () => {
    const [h, c] = goodJwt.split('.');
    const der = crypto.sign('sha256', Buffer.from(`${h}.${c}`), { key: apnsKey, dsaEncoding: 'der' });
    await expectApns({ authorization: `bearer ${h}.${c}.${der.toString('base64url')}` }, 403, 'InvalidProviderToken');
  });
  await check('apns: alg not ES256 -> 403 InvalidProviderToken', () =>
    expectApns({ authorization: `bearer ${apnsJwt({ alg: 'ES384' })}` }, 403, 'InvalidProviderToken'));
  await check('apns: garbage bearer -> 403 InvalidProviderToken', () =>
    expectApns({ authorization: 'bearer not.a.jwt' }, 403, 'InvalidProviderToken'));
  await check('apns: no authorization -> 403 MissingProviderToken', () =>
    expectApns({ authorization: undefined }, 403, 'MissingProviderToken'));
  await check('apns: no apns-topic -> 400 MissingTopic', () =>
    expectApns({ 'apns-topic': undefined }, 400, 'MissingTopic'));
  await check('apns: other topic -> 400 BadTopic', () =>
    expectApns({ 'apns-topic': 'com.example.other' }, 400, 'BadTopic'));
  await check('apns: unknown push type -> 400 InvalidPushType', () =>
    expectApns({ 'apns-push-type': 'shout' }, 400, 'InvalidPushType'));
  await check('apns: priority 7 -> 400 BadPriority', () =>
    expectApns({ 'apns-priority': '7' }, 400, 'BadPriority'));
  await check('apns: background with priority 10 -> 400 BadPriority', () =>
    expectApns({ 'apns-push-type': 'background', 'apns-priority': '10' }, 400, 'BadPriority'));
  await check('apns: expiration not decimal -> 400 BadExpirationDate', () =>
    expectApns({ 'apns-expiration': 'tomorrow' }, 400, 'BadExpirationDate'));
  await check('apns: collapse id of 65 bytes -> 400 BadCollapseId', () =>
    expectApns({ 'apns-collapse-id': 'x'.repeat(65) }, 400, 'BadCollapseId'));
  await check('apns: collapse id of 64 bytes -> 200', async () => {
    assert.strictEqual((await apns({ 'apns-collapse-id': 'x'.repeat(64) })).status, 200);
  });
  await check('apns: apns-id not a UUID -> 400 BadMessageId', () =>
    expectApns({ 'apns-id': 'not-a-uuid' }, 400, 'BadMessageId'));
  await check('apns: apns-topic sent twice -> 400 DuplicateHeaders', () =>
    expectApns({ 'apns-topic': [TOPIC, TOPIC] }, 400, 'DuplicateHeaders'));
  await check('apns: non-hex token -> 400 BadDeviceToken', () =>
    expectApns({}, 400, 'BadDeviceToken', apnsBody, 'zz'.repeat(32)));
  await check('apns: short token -> 400 BadDeviceToken', () =>
    expectApns({}, 400, 'BadDeviceToken', apnsBody, 'ab'.repeat(16)));
  await check('apns: empty body -> 400 PayloadEmpty', () => expectApns({}, 400, 'PayloadEmpty', ''));
  await check('apns: 4097-byte body -> 413 PayloadTooLarge', () =>
    expectApns({}, 413, 'PayloadTooLarge', JSON.stringify({ aps: {}, pad: 'x'.repeat(4097 - 19) })));
  await check('apns: 4096-byte body -> 200', async () => {
    const b = JSON.stringify({ aps: {}, pad: 'x'.repeat(4096 - 19) });
    assert.strictEqual(Buffer.byteLength(b), 4096);
    assert.strictEqual((await apns({}, b)).status, 200);
  });
  await check('apns: body without aps -> 400 BadPayload', () => expectApns({}, 400, 'BadPayload', '{"x":1}'));
  await check('apns: GET -> 405 MethodNotAllowed', async () => {
    const r = await h2(session, apnsHeaders(hexToken(), { ':method': 'GET' }));
    assert.strictEqual(r.status, 405);
    assert.deepStrictEqual(r.json, { reason: 'MethodNotAllowed' });
  });
  await check('apns: /3/device/ -> 400 MissingDeviceToken', async () => {
    const r = await h2(session, apnsHeaders('', {}), apnsBody);
    assert.strictEqual(r.status, 400);
    assert.deepStrictEqual(r.json, { reason: 'MissingDeviceToken' });
  });
  await check('apns: /3/device/<t>/x -> 404 BadPath', async () => {
    const r = await h2(session, apnsHeaders(`${hexToken()}/x`, {}), apnsBody);
    assert.strictEqual(r.status, 404);
    assert.deepStrictEqual(r.json, { reason: 'BadPath' });
  });
  await check('apns: JWT verified once, then served from the cache', async () => {
    const jwt = apnsJwt({ iat: nowS() - 5 });
    const before = (await ctl('GET', '/stats')).json;
    for (let i = 0; i < 3; i++) assert.strictEqual((await apns({ authorization: `bearer ${jwt}` })).status, 200);
    const after = (await ctl('GET', '/stats')).json;
    assert.ok(after.jwt_verifications - before.jwt_verifications <= 1, 'verified more than once');
    assert.ok(after.jwt_cache_hits - before.jwt_cache_hits >= 2, 'no cache hits');
  });
  await check('apns: a cached JWT still ages out -> 403 ExpiredProviderToken', async () => {
    const jwt = apnsJwt({ iat: nowS() - 3598 }); // 2 s short of the hour
    assert.strictEqual((await apns({ authorization: `bearer ${jwt}` })).status, 200);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await expectApns({ authorization: `bearer ${jwt}` }, 403, 'ExpiredProviderToken');
  });

  // ---- behaviour rules on APNs ----
  await check('rule: 410 for one token -> Unregistered with timestamp, once', async () => {
    const tok = hexToken();
    assert.strictEqual((await ctl('POST', '/behaviour', [{ role: 'apns', token: tok, status: 410, times: 1 }])).status, 200);
    const other = await apns({});
    assert.strictEqual(other.status, 200, 'rule hit another token');
    const r = await apns({}, apnsBody, tok);
    assert.strictEqual(r.status, 410);
    assert.strictEqual(r.json.reason, 'Unregistered');
    assert.ok(Number.isInteger(r.json.timestamp) && Math.abs(r.json.timestamp - Date.now()) < 60000, `timestamp ${r.text}`);
    assert.deepStrictEqual(Object.keys(r.json).sort(), ['reason', 'timestamp']);
    assert.strictEqual((await apns({}, apnsBody, tok)).status, 200, 'rule did not expire after times:1');
  });
  await check('rule: 429 with retry_after -> TooManyRequests + retry-after', async () => {
    await ctl('POST', '/behaviour', [{ role: 'apns', status: 429, retry_after: 2, times: 1 }]);
    const r = await apns({});
    assert.strictEqual(r.status, 429);
    assert.deepStrictEqual(r.json, { reason: 'TooManyRequests' });
    assert.strictEqual(r.headers['retry-after'], '2');
  });
  await check('rule: 500 and 503 -> InternalServerError, ServiceUnavailable', async () => {
    await ctl('POST', '/behaviour', [{ role: 'apns', status: 500, times: 1 }, { role: 'apns', status: 503, times: 1 }]);
    const a = await apns({});
    const b = await apns({});
    assert.deepStrictEqual([a.status, a.json], [500, { reason: 'InternalServerError' }]);
    assert.deepStrictEqual([b.status, b.json], [503, { reason: 'ServiceUnavailable' }]);
  });
  await check('rule: reason alone -> its documented status (ExpiredProviderToken 403)', async () => {
    await ctl('POST', '/behaviour', [{ role: 'apns', reason: 'ExpiredProviderToken', times: 1 }]);
    await expectApns({}, 403, 'ExpiredProviderToken');
  });
  await check('rule: a request failing the checks is not touched by rules', async () => {
    await ctl('POST', '/behaviour', [{ role: 'apns', status: 503 }]);
    await expectApns({ 'apns-topic': undefined }, 400, 'MissingTopic');
    await ctl('POST', '/behaviour', []);
  });
  await check('rule: drop -> the client sees the session closed, no answer', async () => {
    const s2 = await connect(fake.port, ca);
    const closed = new Promise((resolve) => s2.once('close', resolve));
    await ctl('POST', '/behaviour', [{ role: 'apns', drop: true, times: 1 }]);
    let answered = false;
    await apns({}, apnsBody, hexToken(), s2).then(() => { answered = true; }, () => {});
    assert.strictEqual(answered, false, 'a dropped request got an answer');
    await withTimeout(closed, STEP_TIMEOUT_MS, 'session close after drop');
    const st = (await ctl('GET', '/stats')).json;
    assert.ok(st.dropped >= 1);
    assert.strictEqual((await apns({})).status, 200, 'other session harmed');
  });
  await check('rule: goaway -> GOAWAY with {"reason":"Shutdown"}, stream refused', async () => {
    const s3 = await connect(fake.port, ca);
    const gone = new Promise((resolve) => s3.once('goaway', (code, last, data) => resolve({ code, data })));
    await ctl('POST', '/behaviour', [{ role: 'apns', goaway: true, times: 1 }]);
    let answered = false;
    await apns({}, apnsBody, hexToken(), s3).then(() => { answered = true; }, () => {});
    assert.strictEqual(answered, false);
    const g = await withTimeout(gone, STEP_TIMEOUT_MS, 'goaway frame');
    assert.strictEqual(g.code, 0);
    assert.deepStrictEqual(JSON.parse(g.data.toString()), { reason: 'Shutdown' });
    s3.destroy();
  });
  await check('rule: delay_ms 300 -> answer after >= 300 ms', async () => {
    await ctl('POST', '/behaviour', [{ role: 'apns', delay_ms: 300, times: 1 }]);
    const t0 = Date.now();
    const r = await apns({});
    assert.strictEqual(r.status, 200);
    assert.ok(Date.now() - t0 >= 290, `took ${Date.now() - t0} ms`);
  });
  await check('control: bad rule -> 400 naming the field', async () => {
    const r = await ctl('POST', '/behaviour', [{ role: 'apns', stauts: 410 }]);
    assert.strictEqual(r.status, 400);
    assert.match(r.json.error, /stauts/);
  });

  // ---- OAuth ----
  const assertion = (o = {}) => signJwt('RS256', o.key || sa.private_key,
    { alg: 'RS256', typ: 'JWT', kid: o.kid || sa.private_key_id },
    Object.assign({ iss: sa.client_email, scope: 'https://www.googleapis.com/auth/firebase.messaging',
      aud: sa.token_uri, iat: nowS(), exp: nowS() + 3600 }, o.claims || {}));
  const oauth = (form, ct = 'application/x-www-form-urlencoded') => h2(session,
    { ':method': 'POST', ':path': '/token', 'content-type': ct }, new URLSearchParams(form).toString());
  const grant = (a) => oauth({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: a });
  const expectOauthError = (r, status, error) => {
    assert.strictEqual(r.status, status, r.text);
    assert.strictEqual(r.json.error, error, r.text);
    assert.strictEqual(typeof r.json.error_description, 'string');
  };
  let accessToken = null;

  await check('oauth: token_uri in the written SA points at the fake', () => {
    assert.strictEqual(sa.token_uri, `https://127.0.0.1:${fake.port}/token`);
  });
  await check('oauth: signed assertion -> 200 access_token, expires_in 3599, Bearer', async () => {
    const r = await grant(assertion());
    assert.strictEqual(r.status, 200, r.text);
    assert.strictEqual(typeof r.json.access_token, 'string');
    assert.strictEqual(r.json.expires_in, 3599);
    assert.strictEqual(r.json.token_type, 'Bearer');
    accessToken = r.json.access_token;
  });
  await check('oauth: bad signature -> 400 invalid_grant', async () =>
    expectOauthError(await grant(assertion({ key: otherRsaKey })), 400, 'invalid_grant'));
  await check('oauth: wrong iss -> 400 invalid_grant', async () =>
    expectOauthError(await grant(assertion({ claims: { iss: 'who@else.iam.gserviceaccount.com' } })), 400, 'invalid_grant'));
  await check('oauth: wrong aud -> 400 invalid_grant', async () =>
    expectOauthError(await grant(assertion({ claims: { aud: 'https://oauth2.googleapis.com/token' } })), 400, 'invalid_grant'));
  await check('oauth: exp - iat of 2 h -> 400 invalid_grant', async () =>
    expectOauthError(await grant(assertion({ claims: { exp: nowS() + 7200 } })), 400, 'invalid_grant'));
  await check('oauth: expired assertion -> 400 invalid_grant', async () =>
    expectOauthError(await grant(assertion({ claims: { iat: nowS() - 7200, exp: nowS() - 3600 } })), 400, 'invalid_grant'));
  await check('oauth: scope without firebase.messaging -> 400 invalid_scope', async () =>
    expectOauthError(await grant(assertion({ claims: { scope: 'https://www.googleapis.com/auth/cloud-platform' } })), 400, 'invalid_scope'));
  await check('oauth: other grant_type -> 400 unsupported_grant_type', async () =>
    expectOauthError(await oauth({ grant_type: 'client_credentials', assertion: assertion() }), 400, 'unsupported_grant_type'));
  await check('oauth: JSON content type -> 400 invalid_request', async () =>
    expectOauthError(await oauth({ grant_type: 'x' }, 'application/json'), 400, 'invalid_request'));
  await check('oauth: behaviour rule -> its error', async () => {
    await ctl('POST', '/behaviour', [{ role: 'oauth', status: 503, error: 'temporarily_unavailable', times: 1 }]);
    expectOauthError(await grant(assertion()), 503, 'temporarily_unavailable');
  });

  // ---- FCM ----
  const fcmPath = `/v1/projects/${sa.project_id}/messages:send`;
  const fcm = (message, bearer = accessToken, p = fcmPath) => {
    const h = { ':method': 'POST', ':path': p, 'content-type': 'application/json' };
    if (bearer) h.authorization = `Bearer ${bearer}`;
    return h2(session, h, JSON.stringify({ message }));
  };
  const fcmToken = () => 'fcm-' + crypto.randomBytes(20).toString('base64url') + ':APA91b' + crypto.randomBytes(40).toString('base64url');
  const goodMsg = (token = fcmToken()) => ({ token, data: { k: 'v', seq: '1' }, android: { collapse_key: 'chat', priority: 'high' } });
  const expectGoogle = (r, code, status) => {
    assert.strictEqual(r.status, code, r.text);
    assert.strictEqual(r.json.error.code, code, r.text);
    assert.strictEqual(r.json.error.status, status, r.text);
    assert.strictEqual(typeof r.json.error.message, 'string');
  };
  const fcmErrorCodeOf = (r) => (r.json.error.details || []).find((d) => d['@type'] === 'type.googleapis.com/google.firebase.fcm.v1.FcmError');

  await check('fcm: good message -> 200 {"name":"projects/<p>/messages/<id>"}', async () => {
    const r = await fcm(goodMsg());
    assert.strictEqual(r.status, 200, r.text);
    assert.match(r.json.name, new RegExp(`^projects/${sa.project_id}/messages/.+`));
    assert.deepStrictEqual(Object.keys(r.json), ['name']);
  });
  await check('fcm: with an apns block and normal priority -> 200', async () => {
    const m = goodMsg();
    m.android.priority = 'normal';
    m.apns = { headers: { 'apns-priority': '5' }, payload: { aps: { 'content-available': 1 } } };
    assert.strictEqual((await fcm(m)).status, 200);
  });
  await check('fcm: unknown bearer -> 401 UNAUTHENTICATED', async () => expectGoogle(await fcm(goodMsg(), 'ya29.nope'), 401, 'UNAUTHENTICATED'));
  await check('fcm: no bearer -> 401 UNAUTHENTICATED', async () => expectGoogle(await fcm(goodMsg(), null), 401, 'UNAUTHENTICATED'));
  await check('fcm: other project -> 403 PERMISSION_DENIED', async () =>
    expectGoogle(await fcm(goodMsg(), accessToken, '/v1/projects/someone-else/messages:send'), 403, 'PERMISSION_DENIED'));
  await check('fcm: data value not a string -> 400 INVALID_ARGUMENT naming message.data[1].value', async () => {
    const r = await fcm({ token: fcmToken(), data: { a: 'x', b: 12 } });
    expectGoogle(r, 400, 'INVALID_ARGUMENT');
    const bad = r.json.error.details.find((d) => d['@type'] === 'type.googleapis.com/google.rpc.BadRequest');
    assert.strictEqual(bad.fieldViolations[0].field, 'message.data[1].value');
  });
  await check('fcm: bad registration token -> 400 INVALID_ARGUMENT, FcmError + message.token violation', async () => {
    const r = await fcm({ token: 'not a token!', data: {} });
    expectGoogle(r, 400, 'INVALID_ARGUMENT');
    assert.strictEqual(fcmErrorCodeOf(r).errorCode, 'INVALID_ARGUMENT');
    const bad = r.json.error.details.find((d) => d['@type'] === 'type.googleapis.com/google.rpc.BadRequest');
    assert.strictEqual(bad.fieldViolations[0].field, 'message.token');
  });
  await check('fcm: token not a string / missing / message not an object -> 400', async () => {
    expectGoogle(await fcm({ token: 5 }), 400, 'INVALID_ARGUMENT');
    expectGoogle(await fcm({ data: {} }), 400, 'INVALID_ARGUMENT');
    expectGoogle(await fcm('hello'), 400, 'INVALID_ARGUMENT');
  });
  await check('fcm: android.priority "urgent" / unknown field -> 400', async () => {
    expectGoogle(await fcm({ token: fcmToken(), android: { priority: 'urgent' } }), 400, 'INVALID_ARGUMENT');
    expectGoogle(await fcm({ token: fcmToken(), colapse_key: 'x' }), 400, 'INVALID_ARGUMENT');
  });
  await check('fcm: rule UNREGISTERED -> 404, body exactly Google\'s', async () => {
    const tok = fcmToken();
    await ctl('POST', '/behaviour', [{ role: 'fcm', token: tok, errorCode: 'UNREGISTERED' }]);
    const r = await fcm(goodMsg(tok));
    assert.strictEqual(r.status, 404);
    assert.deepStrictEqual(r.json, { error: { code: 404, message: 'Requested entity was not found.', status: 'NOT_FOUND',
      details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'UNREGISTERED' }] } });
    assert.strictEqual((await fcm(goodMsg())).status, 200, 'rule hit another token');
    await ctl('POST', '/behaviour', []);
  });
  await check('fcm: rule QUOTA_EXCEEDED -> 429 RESOURCE_EXHAUSTED with Retry-After', async () => {
    await ctl('POST', '/behaviour', [{ role: 'fcm', errorCode: 'QUOTA_EXCEEDED', retry_after: 7, times: 1 }]);
    const r = await fcm(goodMsg());
    expectGoogle(r, 429, 'RESOURCE_EXHAUSTED');
    assert.strictEqual(fcmErrorCodeOf(r).errorCode, 'QUOTA_EXCEEDED');
    assert.strictEqual(r.headers['retry-after'], '7');
  });
  await check('fcm: rules SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, UNAVAILABLE, INTERNAL', async () => {
    const want = [['SENDER_ID_MISMATCH', 403, 'PERMISSION_DENIED'], ['THIRD_PARTY_AUTH_ERROR', 401, 'UNAUTHENTICATED'],
      ['UNAVAILABLE', 503, 'UNAVAILABLE'], ['INTERNAL', 500, 'INTERNAL']];
    await ctl('POST', '/behaviour', want.map(([e]) => ({ role: 'fcm', errorCode: e, times: 1 })));
    for (const [e, code, status] of want) {
      const r = await fcm(goodMsg());
      expectGoogle(r, code, status);
      assert.strictEqual(fcmErrorCodeOf(r).errorCode, e);
    }
    assert.strictEqual((await fcm(goodMsg())).status, 200);
  });
  await check('fcm: status-only rule 503 -> UNAVAILABLE', async () => {
    await ctl('POST', '/behaviour', [{ role: 'fcm', status: 503, times: 1 }]);
    expectGoogle(await fcm(goodMsg()), 503, 'UNAVAILABLE');
  });
  await check('fcm: POST /expire-tokens -> 401 until a new token is fetched', async () => {
    await ctl('POST', '/expire-tokens');
    expectGoogle(await fcm(goodMsg()), 401, 'UNAUTHENTICATED');
    const r = await grant(assertion());
    accessToken = r.json.access_token;
    assert.strictEqual((await fcm(goodMsg())).status, 200);
  });

  // ---- control API ----
  await check('control: GET /requests?role=apns shows headers, body, JWT claims, status', async () => {
    const tok = hexToken();
    await apns({ 'apns-collapse-id': 'c1' }, apnsBody, tok);
    const r = await ctl('GET', `/requests?role=apns&token=${tok}`);
    assert.strictEqual(r.json.length, 1);
    const rec = r.json[0];
    assert.strictEqual(rec.status, 200);
    assert.strictEqual(rec.headers['apns-topic'], TOPIC);
    assert.strictEqual(rec.headers['apns-collapse-id'], 'c1');
    assert.strictEqual(rec.body.m, '1');
    assert.strictEqual(rec.jwt.claims.iss, TEAM_ID);
    assert.strictEqual(rec.jwt.header.kid, KEY_ID);
    assert.ok(!JSON.stringify(rec).includes(goodJwt), 'the JWT itself was recorded');
  });
  await check('control: GET /requests?role=fcm shows the message and auth', async () => {
    const r = await ctl('GET', '/requests?role=fcm&limit=1');
    assert.strictEqual(r.json.length, 1);
    assert.strictEqual(r.json[0].auth, 'valid');
    assert.strictEqual(typeof r.json[0].body.message.token, 'string');
  });
  await check('control: GET /stats counts per role and status, sessions, streams', async () => {
    const s = (await ctl('GET', '/stats')).json;
    assert.ok(s.requests.apns['200'] > 5 && s.requests.apns['403'] > 3, JSON.stringify(s.requests.apns));
    assert.ok(s.requests.fcm['200'] > 2 && s.requests.oauth['200'] >= 2);
    assert.strictEqual(s.requests.apns.dropped, 1);
    assert.ok(s.sessions_opened >= 3, `sessions_opened ${s.sessions_opened}`);
    assert.strictEqual(typeof s.streams_current, 'number');
    assert.strictEqual(s.pid, fake.child.pid);
  });
  await check('control: POST /reset clears rules, records, counts', async () => {
    await ctl('POST', '/behaviour', [{ role: 'apns', status: 500 }]);
    await ctl('POST', '/reset');
    assert.deepStrictEqual((await ctl('GET', '/requests')).json, []);
    assert.deepStrictEqual((await ctl('GET', '/behaviour')).json, []);
    assert.deepStrictEqual((await ctl('GET', '/stats')).json.requests, {});
    assert.strictEqual((await apns({})).status, 200);
  });
  await check('control: unknown path -> 404', async () => {
    assert.strictEqual((await ctl('GET', '/nope')).status, 404);
  });
  session.close();

  // ---- a second fake: APNs only, public-key PEM, no topic pinning, 3 records ----
  const fake2 = await startFake(['--cert', f('server.pem'), '--key', f('server-key.pem'),
    '--roles', 'apns', '--apns-key', f('apns-pub.pem'), '--record-max', '3']);
  const s2 = await connect(fake2.port, ca);
  await check('apns-only fake: public-key PEM verifies, any topic accepted', async () => {
    const r = await apns({ 'apns-topic': 'org.any.app' }, apnsBody, hexToken(), s2);
    assert.strictEqual(r.status, 200, r.text);
  });
  await check('apns-only fake: FCM and OAuth paths -> 404', async () => {
    assert.strictEqual((await h2(s2, { ':method': 'POST', ':path': fcmPath }, '{}')).status, 404);
    assert.strictEqual((await h2(s2, { ':method': 'POST', ':path': '/token' }, '')).status, 404);
  });
  await check('apns-only fake: --record-max 3 keeps 3, counts all', async () => {
    for (let i = 0; i < 5; i++) await apns({}, apnsBody, hexToken(), s2);
    const recs = (await control(fake2.controlPort, 'GET', '/requests')).json;
    assert.strictEqual(recs.length, 3);
    const st = (await control(fake2.controlPort, 'GET', '/stats')).json;
    assert.strictEqual(st.records_total, 8);
    assert.strictEqual(st.requests.apns.total, 6);
  });
  s2.close();

  // The fakes exit promptly on SIGTERM.
  await check('fakes exit on SIGTERM', async () => {
    const exits = [fake, fake2].map((x) => new Promise((resolve) => x.child.once('exit', resolve)));
    fake.child.kill('SIGTERM');
    fake2.child.kill('SIGTERM');
    await withTimeout(Promise.all(exits), STEP_TIMEOUT_MS, 'fake exit');
  });

  const failed = results.filter((r) => !r.ok);
  console.log(`selftest: ${results.length - failed.length}/${results.length} checks passed`);
  if (failed.length) {
    console.log('failed:\n' + failed.map((r) => `  - ${r.name}`).join('\n'));
    console.log('--- fake stderr ---\n' + fake.stderr());
  }
  return failed.length ? 1 : 0;
}

main().then((code) => {
  clearTimeout(globalTimer);
  cleanup();
  process.exit(code);
}, (e) => {
  console.error(`selftest: FAILED — ${e && e.stack || e}`);
  cleanup();
  process.exit(1);
});
