#!/usr/bin/env node
'use strict';
// fake_push.js — local stand-ins for Apple's and Google's push services.
//
// pushd talks to APNs (HTTP/2, ES256 provider JWT) and to FCM HTTP v1 (HTTP/2,
// OAuth2 access token got from Google's token endpoint with an RS256
// service-account JWT). This machine reaches neither, so tests and the
// benchmark point pushd here instead. One HTTP/2-over-TLS server on 127.0.0.1
// plays any of three roles, chosen with --roles apns,fcm,oauth:
//
//   apns   POST /3/device/<token>              checks like Apple, answers like Apple
//   fcm    POST /v1/projects/<p>/messages:send checks like Google, answers like Google
//   oauth  POST /token                         Google's service-account JWT grant
//
// Every request that passes the checks is then matched against "behaviour
// rules" (set over the control API) that make the fake answer an error, stall,
// or drop the connection — the provider failures pushd must survive. A
// separate plain HTTP/1.1 control port (for Python's urllib and curl) sets the
// rules and reads back what was received (GET /requests) and counters (GET /stats).
//
// Startup prints one JSON line to stdout, {"port":N,"control_port":M}; all
// logging goes to stderr. Only Node's built-in modules are used; runs on
// Node 18 and 20. See README.md in this directory for the full contract.
//
// Cost: verifying ES256 on every APNs request would dominate the CPU, so a
// signature check is cached per distinct JWT string (Apple too validates a
// provider token once and then only re-checks its age); the time claims are
// still checked on every request.

const http2 = require('http2');
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const { parseJwt, verifySignature, isObject } = require('./jwt_util');

// ---------------------------------------------------------------- options --

const USAGE = `usage: fake_push.js --cert server.pem --key server-key.pem [options]
  --roles apns,fcm,oauth      roles to play (default all three)
  --port N                    TLS HTTP/2 port on 127.0.0.1 (default 0 = any free)
  --control-port N            plain HTTP/1.1 control port (default 0 = any free)
  --apns-key FILE             APNs key PEM: the .p8 private key or its public key
  --apns-key-id ID            expected JWT "kid" (default KEYID12345)
  --apns-team-id ID           expected JWT "iss" (default TEAMID1234)
  --apns-topic TOPIC          if given, apns-topic must be it (or it + a known suffix)
  --fcm-sa FILE               service-account JSON (its public key checks OAuth JWTs)
  --fcm-project ID            FCM project in the path (default: the SA's project_id)
  --fcm-access-token TOKEN    an extra bearer token FCM always accepts (e.g. for load tests)
  --write-sa FILE             write the SA JSON with FAKE_PUSH_PORT replaced by the port
  --token-ttl S               OAuth expires_in (default 3599)
  --max-streams N             SETTINGS_MAX_CONCURRENT_STREAMS (default 1000)
  --record-max N              requests kept for GET /requests (default 100000; 0 = none)
  --verbose                   log every request to stderr`;

function parseArgs(argv) {
  const o = {
    roles: 'apns,fcm,oauth', port: 0, controlPort: 0, cert: null, key: null,
    apnsKey: null, apnsKeyId: 'KEYID12345', apnsTeamId: 'TEAMID1234', apnsTopic: null,
    fcmSa: null, fcmProject: null, fcmAccessToken: null, writeSa: null,
    tokenTtl: 3599, maxStreams: 1000, recordMax: 100000, verbose: false,
  };
  const names = {
    '--roles': 'roles', '--port': 'port', '--control-port': 'controlPort',
    '--cert': 'cert', '--key': 'key', '--apns-key': 'apnsKey',
    '--apns-key-id': 'apnsKeyId', '--apns-team-id': 'apnsTeamId',
    '--apns-topic': 'apnsTopic', '--fcm-sa': 'fcmSa', '--fcm-project': 'fcmProject',
    '--fcm-access-token': 'fcmAccessToken', '--write-sa': 'writeSa',
    '--token-ttl': 'tokenTtl', '--max-streams': 'maxStreams', '--record-max': 'recordMax',
  };
  const numeric = new Set(['port', 'controlPort', 'tokenTtl', 'maxStreams', 'recordMax']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--verbose') { o.verbose = true; continue; }
    if (a === '--help' || a === '-h') { console.error(USAGE); process.exit(0); }
    const name = names[a];
    if (!name || i + 1 >= argv.length) die(`bad argument ${a}\n${USAGE}`);
    const v = argv[++i];
    if (numeric.has(name)) {
      if (!/^\d+$/.test(v)) die(`${a} wants a number`);
      o[name] = Number(v);
    } else {
      o[name] = v;
    }
  }
  o.roleSet = new Set(o.roles.split(',').map((s) => s.trim()).filter(Boolean));
  for (const r of o.roleSet) {
    if (!['apns', 'fcm', 'oauth'].includes(r)) die(`unknown role ${r}`);
  }
  if (!o.cert || !o.key) die(`--cert and --key are required\n${USAGE}`);
  if (o.roleSet.has('apns') && !o.apnsKey) die('role apns needs --apns-key');
  if ((o.roleSet.has('oauth') || o.roleSet.has('fcm')) && !o.fcmSa) {
    die('roles fcm and oauth need --fcm-sa');
  }
  return o;
}

function die(msg) {
  console.error(`fake_push: ${msg}`);
  process.exit(2);
}

function log(msg) {
  console.error(`fake_push: ${msg}`);
}

const opt = parseArgs(process.argv.slice(2));

// Keys. createPublicKey accepts a private key PEM too and derives its public half.
let apnsPublicKey = null;
if (opt.apnsKey) {
  try {
    apnsPublicKey = crypto.createPublicKey(fs.readFileSync(opt.apnsKey));
  } catch (e) {
    die(`cannot read APNs key ${opt.apnsKey}: ${e.message}`);
  }
  const d = apnsPublicKey.asymmetricKeyDetails || {};
  if (apnsPublicKey.asymmetricKeyType !== 'ec' || d.namedCurve !== 'prime256v1') {
    die('APNs key must be EC P-256');
  }
}
let sa = null; // the service account, with .publicKey added
if (opt.fcmSa) {
  try {
    sa = JSON.parse(fs.readFileSync(opt.fcmSa, 'utf8'));
    sa.publicKey = crypto.createPublicKey(sa.private_key);
  } catch (e) {
    die(`cannot read service account ${opt.fcmSa}: ${e.message}`);
  }
  for (const f of ['client_email', 'token_uri', 'project_id']) {
    if (typeof sa[f] !== 'string') die(`service account lacks ${f}`);
  }
  if (sa.publicKey.asymmetricKeyType !== 'rsa') die('service account key must be RSA');
  if (!opt.fcmProject) opt.fcmProject = sa.project_id;
}

// ------------------------------------------------------------------ state --

// Counters; GET /stats shows them, POST /reset zeroes the resettable ones.
const stats = {
  requests: {},            // role -> { total, status -> count }
  dropped: 0,              // requests answered by dropping the connection
  goaways: 0,
  sessions_opened: 0,      // TLS connections that became HTTP/2 sessions
  sessions_current: 0,
  streams_current: 0,      // streams open right now (all sessions)
  streams_max: 0,          // most streams open at once since the last reset
  jwt_verifications: 0,    // APNs signature checks actually computed
  jwt_cache_hits: 0,       // APNs JWTs found in the verification cache
  tokens_issued: 0,        // OAuth access tokens handed out
  records_total: 0,        // requests recorded (kept or not)
};

let rules = [];            // behaviour rules, first match wins
let records = [];          // recorded requests, oldest first, at most opt.recordMax
let nextSeq = 1;

const accessTokens = new Map(); // OAuth access token -> expiry (ms since epoch)
const apnsJwtCache = new Map(); // JWT string -> {ok, reason, header, claims}
const JWT_CACHE_MAX = 10000;

function count(role, status) {
  let r = stats.requests[role];
  if (!r) r = stats.requests[role] = { total: 0 };
  r.total++;
  r[status] = (r[status] || 0) + 1;
}

function record(rec) {
  stats.records_total++;
  rec.seq = nextSeq++;
  records.push(rec);
  // Drop the oldest in a batch once over the bound: O(1) amortised per record.
  if (records.length > opt.recordMax + Math.ceil(opt.recordMax / 10)) {
    records = records.slice(records.length - opt.recordMax);
  }
}

// ------------------------------------------------------- behaviour rules --

const RULE_FIELDS = new Set(['role', 'token', 'status', 'reason', 'errorCode', 'error',
  'error_description', 'timestamp', 'retry_after', 'drop', 'goaway', 'delay_ms', 'times']);

// Check one rule from POST /behaviour; returns an error string or null.
function ruleError(r) {
  if (!isObject(r)) return 'a rule must be an object';
  for (const k of Object.keys(r)) if (!RULE_FIELDS.has(k)) return `unknown rule field "${k}"`;
  if (r.role !== undefined && !['apns', 'fcm', 'oauth'].includes(r.role)) return 'bad role';
  if (r.token !== undefined && typeof r.token !== 'string') return 'token must be a string';
  if (r.status !== undefined && !(Number.isInteger(r.status) && r.status >= 200 && r.status <= 599)) {
    return 'status must be an HTTP status';
  }
  for (const k of ['reason', 'errorCode', 'error', 'error_description']) {
    if (r[k] !== undefined && typeof r[k] !== 'string') return `${k} must be a string`;
  }
  if (r.errorCode !== undefined && !FCM_ERRORS[r.errorCode]) return `unknown FCM errorCode ${r.errorCode}`;
  if (r.reason !== undefined && !APNS_REASONS[r.reason]) return `unknown APNs reason ${r.reason}`;
  for (const k of ['timestamp', 'retry_after', 'delay_ms', 'times']) {
    if (r[k] !== undefined && !(Number.isInteger(r[k]) && r[k] >= 0)) return `${k} must be an integer >= 0`;
  }
  if (r.delay_ms !== undefined && r.delay_ms > 60000) return 'delay_ms is at most 60000';
  if (r.times === 0) return 'times must be >= 1';
  return null;
}

// First rule matching (role, token); counts down its "times" and drops it at 0.
function matchRule(role, token) {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.role !== undefined && r.role !== role) continue;
    if (r.token !== undefined && r.token !== token) continue;
    r.matched = (r.matched || 0) + 1;
    r.lastIndex = i;
    if (r.times !== undefined) {
      r.times--;
      if (r.times === 0) rules.splice(i, 1);
    }
    return r;
  }
  return null;
}

// --------------------------------------------------------------- answers --

// An "answer" is {status, headers, body (string or undefined), reason}; reason
// is what GET /requests shows (APNs reason, FCM errorCode/status, OAuth error).

function jsonAnswer(status, obj, reason, extraHeaders) {
  return {
    status,
    headers: Object.assign({ 'content-type': 'application/json; charset=utf-8' }, extraHeaders),
    body: JSON.stringify(obj),
    reason,
  };
}

// APNs reasons and their statuses, from Apple's "Handling notification
// responses from APNs" (table "Response error strings").
const APNS_REASONS = {
  BadCollapseId: 400, BadDeviceToken: 400, BadExpirationDate: 400, BadMessageId: 400,
  BadPriority: 400, BadTopic: 400, DeviceTokenNotForTopic: 400, DuplicateHeaders: 400,
  IdleTimeout: 400, InvalidPushType: 400, MissingDeviceToken: 400, MissingTopic: 400,
  PayloadEmpty: 400, TopicDisallowed: 400,
  BadCertificate: 403, BadCertificateEnvironment: 403, ExpiredProviderToken: 403,
  Forbidden: 403, InvalidProviderToken: 403, MissingProviderToken: 403,
  BadPath: 404, MethodNotAllowed: 405, ExpiredToken: 410, Unregistered: 410,
  PayloadTooLarge: 413, TooManyProviderTokenUpdates: 429, TooManyRequests: 429,
  InternalServerError: 500, ServiceUnavailable: 503, Shutdown: 503,
  BadPayload: 400, // not Apple's: the fake's answer to a body that is not a JSON object with "aps"
};
// Reason a behaviour rule gets when it names only a status.
const APNS_DEFAULT_REASON = {
  400: 'BadDeviceToken', 403: 'InvalidProviderToken', 404: 'BadPath', 405: 'MethodNotAllowed',
  410: 'Unregistered', 413: 'PayloadTooLarge', 429: 'TooManyRequests',
  500: 'InternalServerError', 503: 'ServiceUnavailable',
};

function apnsError(reason, apnsId, extra) {
  const body = { reason };
  if (reason === 'Unregistered' || reason === 'ExpiredToken') {
    body.timestamp = (extra && extra.timestamp) || Date.now();
  }
  const headers = { 'apns-id': apnsId };
  if (extra && extra.retry_after !== undefined) headers['retry-after'] = String(extra.retry_after);
  return jsonAnswer(APNS_REASONS[reason] || 400, body, reason, headers);
}

// FCM HTTP v1 error codes (FcmError.errorCode) with the HTTP status and
// google.rpc status Google answers them with (Firebase "FCM error codes").
const FCM_ERRORS = {
  INVALID_ARGUMENT: { code: 400, status: 'INVALID_ARGUMENT', message: 'The registration token is not a valid FCM registration token' },
  UNREGISTERED: { code: 404, status: 'NOT_FOUND', message: 'Requested entity was not found.' },
  SENDER_ID_MISMATCH: { code: 403, status: 'PERMISSION_DENIED', message: 'SenderId mismatch' },
  QUOTA_EXCEEDED: { code: 429, status: 'RESOURCE_EXHAUSTED', message: 'Quota exceeded for quota metric \'Send requests\' and limit \'Send requests per minute\' of service \'fcm.googleapis.com\'.' },
  UNAVAILABLE: { code: 503, status: 'UNAVAILABLE', message: 'The service is currently unavailable.' },
  INTERNAL: { code: 500, status: 'INTERNAL', message: 'Internal error encountered.' },
  THIRD_PARTY_AUTH_ERROR: { code: 401, status: 'UNAUTHENTICATED', message: 'Auth error from APNS or Web Push Service' },
};
const FCM_DEFAULT_CODE = {
  400: 'INVALID_ARGUMENT', 401: 'THIRD_PARTY_AUTH_ERROR', 403: 'SENDER_ID_MISMATCH',
  404: 'UNREGISTERED', 429: 'QUOTA_EXCEEDED', 500: 'INTERNAL', 503: 'UNAVAILABLE',
};

// Google's error envelope: {"error":{code, message, status, details?}}.
function googleError(code, status, message, details, headers) {
  const error = { code, message, status };
  if (details) error.details = details;
  return jsonAnswer(code, { error }, status, headers);
}

function fieldViolation(field, description) {
  return { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field, description }] };
}

function fcmError(errorCode, opts) {
  const e = FCM_ERRORS[errorCode];
  const details = [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }];
  if (opts && opts.field) details.push(fieldViolation(opts.field, (opts && opts.message) || e.message));
  const headers = {};
  if (opts && opts.retry_after !== undefined) headers['retry-after'] = String(opts.retry_after);
  else if (errorCode === 'QUOTA_EXCEEDED') headers['retry-after'] = '1';
  const a = googleError(e.code, e.status, (opts && opts.message) || e.message, details, headers);
  a.reason = errorCode;
  return a;
}

// A 400 INVALID_ARGUMENT about one request field (no FcmError detail: the
// message itself, not the token, is wrong).
function fcmBadField(field, message) {
  return googleError(400, 'INVALID_ARGUMENT', message, [fieldViolation(field, message)]);
}

const GOOGLE_AUTH_HELP = 'Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.';

function oauthError(status, error, description) {
  return jsonAnswer(status, { error, error_description: description }, error,
    { 'cache-control': 'no-cache, no-store, max-age=0, must-revalidate' });
}

// Answer a request that passed the checks according to a behaviour rule.
function ruleAnswer(role, rule, apnsId) {
  if (role === 'apns') {
    const reason = rule.reason || APNS_DEFAULT_REASON[rule.status] || 'InternalServerError';
    const a = apnsError(reason, apnsId, rule);
    if (rule.status) a.status = rule.status;
    return a;
  }
  if (role === 'fcm') {
    const code = rule.errorCode || FCM_DEFAULT_CODE[rule.status] || 'INTERNAL';
    const a = fcmError(code, { retry_after: rule.retry_after });
    if (rule.status) a.status = rule.status;
    return a;
  }
  const a = oauthError(rule.status || 400, rule.error || 'invalid_grant',
    rule.error_description || 'Injected by a fake_push behaviour rule.');
  if (rule.retry_after !== undefined) a.headers['retry-after'] = String(rule.retry_after);
  return a;
}

// -------------------------------------------------------------------- APNs --

const PUSH_TYPES = new Set(['alert', 'background', 'voip', 'complication', 'fileprovider',
  'mdm', 'liveactivity', 'location', 'pushtotalk']);
// Topic suffixes Apple uses for the push types that need their own topic.
const TOPIC_SUFFIXES = ['', '.voip', '.complication', '.pushkit.fileprovider',
  '.push-type.liveactivity', '.location-query', '.voip-ptt'];
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const DEVICE_TOKEN_RE = /^[0-9a-fA-F]{64,200}$/;
const APNS_JWT_MAX_AGE_S = 3600;
const CLOCK_SKEW_S = 60;

// Signature, alg, kid and iss of an APNs provider token; cached per JWT string.
function checkApnsJwt(jwt) {
  let v = apnsJwtCache.get(jwt);
  if (v) {
    stats.jwt_cache_hits++;
    return v;
  }
  stats.jwt_verifications++;
  const p = parseJwt(jwt);
  if (!p || p.header.alg !== 'ES256') v = { ok: false };
  else if (p.header.kid !== opt.apnsKeyId) v = { ok: false, header: p.header, claims: p.claims };
  else if (p.claims.iss !== opt.apnsTeamId) v = { ok: false, header: p.header, claims: p.claims };
  else if (!Number.isInteger(p.claims.iat)) v = { ok: false, header: p.header, claims: p.claims };
  else if (!verifySignature(p, 'ES256', apnsPublicKey)) v = { ok: false, header: p.header, claims: p.claims };
  else v = { ok: true, header: p.header, claims: p.claims };
  if (apnsJwtCache.size >= JWT_CACHE_MAX) apnsJwtCache.clear();
  apnsJwtCache.set(jwt, v);
  return v;
}

// Check an APNs request the way Apple does. Returns an error answer, or null
// when the request is good (ctx then holds token, jwt, body).
function checkApns(ctx) {
  const h = ctx.headers;
  const apnsId = ctx.apnsId;
  if (ctx.method !== 'POST') return apnsError('MethodNotAllowed', apnsId);
  const m = /^\/3\/device\/([^/?]*)$/.exec(ctx.path);
  if (!m) return apnsError(ctx.path === '/3/device' ? 'MissingDeviceToken' : 'BadPath', apnsId);
  ctx.token = m[1];
  if (ctx.token === '') return apnsError('MissingDeviceToken', apnsId);
  if (ctx.duplicate) return apnsError('DuplicateHeaders', apnsId);

  // Provider token (JWT).
  const auth = h.authorization;
  if (!auth) return apnsError('MissingProviderToken', apnsId);
  const am = /^bearer ([^ ]+)$/i.exec(auth);
  if (!am) return apnsError('InvalidProviderToken', apnsId);
  const v = checkApnsJwt(am[1]);
  if (v.header) ctx.jwt = { header: v.header, claims: v.claims };
  if (!v.ok) return apnsError('InvalidProviderToken', apnsId);
  const now = Date.now() / 1000;
  if (v.claims.iat > now + CLOCK_SKEW_S) return apnsError('InvalidProviderToken', apnsId);
  if (v.claims.iat < now - APNS_JWT_MAX_AGE_S) return apnsError('ExpiredProviderToken', apnsId);

  // Headers.
  const topic = h['apns-topic'];
  if (!topic) return apnsError('MissingTopic', apnsId);
  if (opt.apnsTopic && !TOPIC_SUFFIXES.some((s) => topic === opt.apnsTopic + s)) {
    return apnsError('BadTopic', apnsId);
  }
  const pushType = h['apns-push-type'];
  if (pushType !== undefined && !PUSH_TYPES.has(pushType)) return apnsError('InvalidPushType', apnsId);
  const prio = h['apns-priority'];
  if (prio !== undefined) {
    if (prio !== '10' && prio !== '5' && prio !== '1') return apnsError('BadPriority', apnsId);
    if (pushType === 'background' && prio !== '5') return apnsError('BadPriority', apnsId);
  }
  const exp = h['apns-expiration'];
  if (exp !== undefined && !/^\d{1,19}$/.test(exp)) return apnsError('BadExpirationDate', apnsId);
  const collapse = h['apns-collapse-id'];
  if (collapse !== undefined && Buffer.byteLength(collapse) > 64) return apnsError('BadCollapseId', apnsId);
  if (h['apns-id'] !== undefined && !UUID_RE.test(h['apns-id'])) return apnsError('BadMessageId', apnsId);
  if (!DEVICE_TOKEN_RE.test(ctx.token)) return apnsError('BadDeviceToken', apnsId);

  // Payload: 4 KB (5 KB for VoIP), a JSON object with an "aps" dictionary.
  const limit = pushType === 'voip' ? 5120 : 4096;
  if (ctx.bodyLength === 0) return apnsError('PayloadEmpty', apnsId);
  if (ctx.bodyLength > limit) return apnsError('PayloadTooLarge', apnsId);
  const body = parseJsonObject(ctx.bodyText);
  if (!body) return apnsError('BadPayload', apnsId);
  if (pushType !== 'mdm' && !isObject(body.aps)) return apnsError('BadPayload', apnsId);
  return null;
}

function apnsSuccess(ctx) {
  return { status: 200, headers: { 'apns-id': ctx.apnsId }, body: undefined, reason: undefined };
}

// --------------------------------------------------------------- OAuth2 --

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const SHORT_LIVED = 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.';

function expectedAudience() {
  return sa.token_uri.replace('FAKE_PUSH_PORT', String(listenPort));
}

function checkOauth(ctx) {
  if (ctx.method !== 'POST') return oauthError(405, 'invalid_request', 'Method not allowed: use POST.');
  if (ctx.path !== '/token') return null404();
  const ct = (ctx.headers['content-type'] || '').toLowerCase();
  if (!ct.startsWith('application/x-www-form-urlencoded')) {
    return oauthError(400, 'invalid_request', 'Invalid content type: expected application/x-www-form-urlencoded.');
  }
  const form = new URLSearchParams(ctx.bodyText);
  const grant = form.get('grant_type');
  if (!grant) return oauthError(400, 'invalid_request', 'Missing required parameter: grant_type');
  if (grant !== JWT_BEARER) return oauthError(400, 'unsupported_grant_type', `Invalid grant_type: ${grant}`);
  const assertion = form.get('assertion');
  if (!assertion) return oauthError(400, 'invalid_request', 'Missing required parameter: assertion');

  const p = parseJwt(assertion);
  if (!p) return oauthError(400, 'invalid_grant', 'Invalid JWT: the assertion is not a JWT.');
  ctx.jwt = { header: p.header, claims: p.claims };
  const c = p.claims;
  if (p.header.alg !== 'RS256') return oauthError(400, 'invalid_grant', 'Invalid JWT Signature.');
  if (p.header.kid !== undefined && p.header.kid !== sa.private_key_id) {
    return oauthError(400, 'invalid_grant', 'Invalid JWT Signature.');
  }
  if (c.iss !== sa.client_email) return oauthError(400, 'invalid_grant', 'Invalid grant: account not found');
  if (!verifySignature(p, 'RS256', sa.publicKey)) return oauthError(400, 'invalid_grant', 'Invalid JWT Signature.');
  if (c.aud !== expectedAudience()) {
    return oauthError(400, 'invalid_grant', `Invalid JWT: Failed audience check. The right audience is ${expectedAudience()}`);
  }
  const now = Date.now() / 1000;
  if (!Number.isInteger(c.iat) || !Number.isInteger(c.exp) || c.exp <= c.iat ||
      c.exp - c.iat > 3600 || c.iat > now + CLOCK_SKEW_S || c.exp < now - CLOCK_SKEW_S) {
    return oauthError(400, 'invalid_grant', SHORT_LIVED);
  }
  if (typeof c.scope !== 'string' || !c.scope.split(' ').includes(FCM_SCOPE)) {
    return oauthError(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
  }
  return null;
}

function oauthSuccess(ctx) {
  const token = 'ya29.fake-' + crypto.randomBytes(24).toString('base64url');
  // Keep the table small: forget expired tokens once it grows.
  if (accessTokens.size > 10000) {
    const now = Date.now();
    for (const [t, exp] of accessTokens) if (exp < now) accessTokens.delete(t);
  }
  accessTokens.set(token, Date.now() + opt.tokenTtl * 1000);
  stats.tokens_issued++;
  return jsonAnswer(200, { access_token: token, expires_in: opt.tokenTtl, token_type: 'Bearer' }, undefined,
    { 'cache-control': 'no-cache, no-store, max-age=0, must-revalidate' });
}

// ------------------------------------------------------------ FCM HTTP v1 --

const MESSAGE_FIELDS = new Set(['name', 'data', 'notification', 'android', 'webpush', 'apns',
  'fcm_options', 'fcmOptions', 'token', 'topic', 'condition']);
const ANDROID_FIELDS = new Set(['collapse_key', 'collapseKey', 'priority', 'ttl',
  'restricted_package_name', 'restrictedPackageName', 'data', 'notification',
  'fcm_options', 'fcmOptions', 'direct_boot_ok', 'directBootOk']);
const FCM_TOKEN_RE = /^[A-Za-z0-9_:.-]{1,4096}$/;

function checkFcm(ctx) {
  const m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(ctx.path);
  if (!m) return null404();
  if (ctx.method !== 'POST') {
    return googleError(405, 'METHOD_NOT_ALLOWED', `Method ${ctx.method} not allowed.`);
  }
  ctx.project = m[1];

  // The bearer token must be one the OAuth role issued, not yet expired.
  const auth = ctx.headers.authorization;
  const www = { 'www-authenticate': 'Bearer realm="https://accounts.google.com/", error="invalid_token"' };
  if (!auth) {
    ctx.auth = 'missing';
    return googleError(401, 'UNAUTHENTICATED', `Request is missing required authentication credential. ${GOOGLE_AUTH_HELP}`, undefined, www);
  }
  const am = /^bearer (.+)$/i.exec(auth);
  const exp = am ? accessTokens.get(am[1]) : undefined;
  const fixed = am && opt.fcmAccessToken && am[1] === opt.fcmAccessToken;
  ctx.auth = fixed ? 'fixed' : exp === undefined ? 'unknown' : exp <= Date.now() ? 'expired' : 'valid';
  if (ctx.auth !== 'valid' && ctx.auth !== 'fixed') {
    return googleError(401, 'UNAUTHENTICATED', `Request had invalid authentication credentials. ${GOOGLE_AUTH_HELP}`, undefined, www);
  }
  if (ctx.project !== opt.fcmProject) {
    return googleError(403, 'PERMISSION_DENIED', `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${ctx.project}' (or it may not exist).`);
  }

  // The body: {"message": {...}} (validate_only allowed).
  const body = parseJsonObject(ctx.bodyText);
  if (!body) return fcmBadField('', 'Invalid JSON payload received. Expected a JSON object.');
  for (const k of Object.keys(body)) {
    if (k !== 'message' && k !== 'validate_only' && k !== 'validateOnly') {
      return fcmBadField(k, `Invalid JSON payload received. Unknown name "${k}": Cannot find field.`);
    }
  }
  const msg = body.message;
  if (!isObject(msg)) return fcmBadField('message', 'Invalid value at \'message\': expected an object.');
  for (const k of Object.keys(msg)) {
    if (!MESSAGE_FIELDS.has(k)) {
      return fcmBadField('message', `Invalid JSON payload received. Unknown name "${k}" at 'message': Cannot find field.`);
    }
  }
  if (msg.topic !== undefined || msg.condition !== undefined) {
    return fcmBadField('message', 'This fake supports only token targets (message.token).');
  }
  if (msg.token === undefined) return fcmBadField('message', 'Recipient of the message is not set.');
  if (typeof msg.token !== 'string') {
    return fcmBadField('message.token', `Invalid value at 'message.token' (TYPE_STRING), ${JSON.stringify(msg.token)}`);
  }
  ctx.token = msg.token;
  if (!FCM_TOKEN_RE.test(msg.token)) {
    return fcmError('INVALID_ARGUMENT', { field: 'message.token' });
  }
  const dataErr = checkStringMap(msg.data, 'message.data');
  if (dataErr) return dataErr;
  if (msg.android !== undefined) {
    const a = msg.android;
    if (!isObject(a)) return fcmBadField('message.android', 'Invalid value at \'message.android\': expected an object.');
    for (const k of Object.keys(a)) {
      if (!ANDROID_FIELDS.has(k)) {
        return fcmBadField('message.android', `Invalid JSON payload received. Unknown name "${k}" at 'message.android': Cannot find field.`);
      }
    }
    const ck = a.collapse_key !== undefined ? a.collapse_key : a.collapseKey;
    if (ck !== undefined && typeof ck !== 'string') {
      return fcmBadField('message.android.collapse_key', `Invalid value at 'message.android.collapse_key' (TYPE_STRING), ${JSON.stringify(ck)}`);
    }
    if (a.priority !== undefined && !(typeof a.priority === 'string' && /^(high|normal)$/i.test(a.priority))) {
      return fcmBadField('message.android.priority', `Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), ${JSON.stringify(a.priority)}`);
    }
    if (a.ttl !== undefined && !(typeof a.ttl === 'string' && /^\d+(\.\d{1,9})?s$/.test(a.ttl))) {
      return fcmBadField('message.android.ttl', `Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(a.ttl)}`);
    }
    const adErr = checkStringMap(a.data, 'message.android.data');
    if (adErr) return adErr;
  }
  if (msg.apns !== undefined) {
    const ap = msg.apns;
    if (!isObject(ap)) return fcmBadField('message.apns', 'Invalid value at \'message.apns\': expected an object.');
    const hErr = checkStringMap(ap.headers, 'message.apns.headers');
    if (hErr) return hErr;
    if (ap.payload !== undefined) {
      if (!isObject(ap.payload)) return fcmBadField('message.apns.payload', 'Invalid value at \'message.apns.payload\': expected an object.');
      if (!isObject(ap.payload.aps)) {
        return fcmBadField('message.apns.payload', 'Payload of Apple Push Notification Service must contain an [aps] key.');
      }
    }
  }
  // FCM's limit: 4096 bytes of data keys and values.
  if (msg.data) {
    let size = 0;
    for (const [k, v] of Object.entries(msg.data)) size += Buffer.byteLength(k) + Buffer.byteLength(v);
    if (size > 4096) return fcmBadField('message', 'Android message is too big');
  }
  return null;
}

// A map<string,string>: absent, or an object whose values are all strings.
function checkStringMap(v, field) {
  if (v === undefined) return null;
  if (!isObject(v)) return fcmBadField(field, `Invalid value at '${field}': expected a map of strings.`);
  let i = 0;
  for (const val of Object.values(v)) {
    if (typeof val !== 'string') {
      const f = `${field}[${i}].value`;
      return fcmBadField(f, `Invalid value at '${f}' (TYPE_STRING), ${JSON.stringify(val)}`);
    }
    i++;
  }
  return null;
}

function fcmSuccess(ctx) {
  const id = `0:${Date.now()}${String(Math.floor(Math.random() * 1000)).padStart(3, '0')}%${crypto.randomBytes(8).toString('hex')}`;
  return jsonAnswer(200, { name: `projects/${ctx.project}/messages/${id}` });
}

// ---------------------------------------------------------------- common --

function null404() {
  return { status: 404, headers: { 'content-type': 'text/plain' }, body: 'Not Found\n', reason: 'NotFound' };
}

function parseJsonObject(text) {
  try {
    const v = JSON.parse(text);
    return isObject(v) ? v : null;
  } catch (e) {
    return null;
  }
}

// Which role a path belongs to (only among the roles this fake plays).
function roleOf(path) {
  if (path.startsWith('/3/device') && opt.roleSet.has('apns')) return 'apns';
  if (path.startsWith('/v1/projects/') && opt.roleSet.has('fcm')) return 'fcm';
  if (path === '/token' && opt.roleSet.has('oauth')) return 'oauth';
  return null;
}

const ROLES = {
  apns: { check: checkApns, success: apnsSuccess },
  fcm: { check: checkFcm, success: fcmSuccess },
  oauth: { check: checkOauth, success: oauthSuccess },
};

// Headers worth recording per role (never the credentials themselves).
const RECORDED_HEADERS = {
  apns: ['apns-topic', 'apns-push-type', 'apns-priority', 'apns-expiration', 'apns-collapse-id', 'apns-id', 'content-type'],
  fcm: ['content-type'],
  oauth: ['content-type'],
};

const BODY_CAP = 1 << 20; // bytes buffered per request; more is counted, not kept
const RECORD_BODY_MAX = 8192; // characters of a body kept in a record

let sessionSeq = 0;

// One HTTP/2 request: gather the body, check it, apply rules, answer.
function onStream(stream, headers, flags, rawHeaders) {
  stats.streams_current++;
  if (stats.streams_current > stats.streams_max) stats.streams_max = stats.streams_current;
  stream.on('close', () => { stats.streams_current--; });
  stream.on('error', () => {}); // a reset by the peer is not our problem

  const ctx = {
    started: Date.now(), stream, headers, role: null,
    method: headers[':method'], path: headers[':path'] || '',
    apnsId: undefined, token: undefined, jwt: undefined, auth: undefined,
    bodyText: '', bodyLength: 0, project: undefined, duplicate: false,
  };
  ctx.role = roleOf(ctx.path);
  if (ctx.role === 'apns') {
    ctx.apnsId = headers['apns-id'] || crypto.randomUUID();
    ctx.duplicate = hasDuplicateApnsHeaders(rawHeaders);
  }

  const chunks = [];
  stream.on('data', (c) => {
    ctx.bodyLength += c.length;
    if (ctx.bodyLength <= BODY_CAP) chunks.push(c);
  });
  stream.on('end', () => {
    ctx.bodyText = chunks.length === 0 ? '' : (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)).toString('utf8');
    handle(ctx);
  });
}

// rawHeaders is [name, value, name, value, ...]; Apple refuses repeated headers.
function hasDuplicateApnsHeaders(raw) {
  if (!Array.isArray(raw)) return false;
  const seen = new Set();
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n === 'authorization' || n.startsWith('apns-')) {
      if (seen.has(n)) return true;
      seen.add(n);
    }
  }
  return false;
}

function handle(ctx) {
  if (!ctx.role) return send(ctx, null404(), null);
  const role = ROLES[ctx.role];
  if (ctx.bodyLength > BODY_CAP) {
    const a = ctx.role === 'apns' ? apnsError('PayloadTooLarge', ctx.apnsId)
      : googleError(413, 'INVALID_ARGUMENT', `Request payload size exceeds the limit: ${BODY_CAP} bytes.`);
    return send(ctx, a, null);
  }
  const bad = role.check(ctx);
  if (bad) return send(ctx, bad, null);

  const rule = matchRule(ctx.role, ctx.token);
  if (!rule) return send(ctx, role.success(ctx), null);
  const act = () => {
    if (rule.drop) return drop(ctx, rule);
    if (rule.goaway) return goaway(ctx, rule);
    if (rule.status || rule.reason || rule.errorCode || rule.error) {
      return send(ctx, ruleAnswer(ctx.role, rule, ctx.apnsId), rule);
    }
    return send(ctx, role.success(ctx), rule); // a delay-only rule
  };
  if (rule.delay_ms) setTimeout(act, rule.delay_ms);
  else act();
}

function send(ctx, answer, rule) {
  const s = ctx.stream;
  count(ctx.role || 'none', answer.status);
  addRecord(ctx, answer.status, answer.reason, rule, false);
  if (s.destroyed || s.closed) return; // the client went away while we waited
  const headers = Object.assign({ ':status': answer.status }, answer.headers);
  try {
    if (answer.body === undefined) {
      s.respond(headers, { endStream: true });
    } else {
      s.respond(headers);
      s.end(answer.body);
    }
  } catch (e) {
    log(`respond failed: ${e.message}`);
  }
  if (opt.verbose) log(`${ctx.role} ${ctx.method} ${ctx.path} -> ${answer.status} ${answer.reason || ''}`);
}

// Close the TCP connection under the session without any HTTP/2 goodbye.
function drop(ctx, rule) {
  stats.dropped++;
  count(ctx.role, 'dropped');
  addRecord(ctx, null, 'dropped', rule, true);
  const session = ctx.stream.session;
  log(`dropping session ${session && session.fakeId} (rule for ${ctx.role})`);
  const sock = session && session.socket ? socketsByPort.get(session.socket.remotePort) : undefined;
  if (sock) sock.destroy();
  else if (session) session.destroy();
}

// Refuse this stream and send GOAWAY, the way APNs closes a connection
// (Apple documents that the GOAWAY frame may carry the JSON reason).
function goaway(ctx, rule) {
  stats.goaways++;
  count(ctx.role, 'goaway');
  const reason = rule.reason || 'Shutdown';
  addRecord(ctx, null, 'goaway:' + reason, rule, true);
  const session = ctx.stream.session;
  if (!session || session.destroyed) return;
  const last = Math.max(0, ctx.stream.id - 2); // this stream was not processed
  try {
    ctx.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, last, Buffer.from(JSON.stringify({ reason })));
    session.close();
  } catch (e) {
    log(`goaway failed: ${e.message}`);
  }
}

// Record one answered (or dropped) request; with --record-max 0 only count it.
function addRecord(ctx, status, reason, rule, dropped) {
  if (opt.recordMax === 0) {
    stats.records_total++;
    return;
  }
  const hdrs = {};
  for (const n of RECORDED_HEADERS[ctx.role] || []) {
    if (ctx.headers[n] !== undefined) hdrs[n] = ctx.headers[n];
  }
  if (ctx.headers.authorization !== undefined) hdrs.authorization = ctx.headers.authorization.split(' ')[0] + ' …';
  record({
    time: ctx.started,
    role: ctx.role,
    method: ctx.method,
    path: ctx.path,
    token: ctx.token,
    headers: hdrs,
    // The body is kept as text (one string, cheap to hold); GET /requests parses it.
    body: ctx.bodyText.length > RECORD_BODY_MAX ? ctx.bodyText.slice(0, RECORD_BODY_MAX) : ctx.bodyText,
    jwt: ctx.jwt,
    auth: ctx.auth,
    status,
    reason,
    rule: rule ? rule.lastIndex : undefined,
    dropped: dropped || undefined,
    session: ctx.stream.session ? ctx.stream.session.fakeId : undefined,
    ms: Date.now() - ctx.started,
  });
}

// ----------------------------------------------------------- control API --

function controlHandler(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= BODY_CAP) chunks.push(c);
  });
  req.on('end', () => {
    const reply = (status, obj) => {
      const body = JSON.stringify(obj) + '\n';
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const p = url.pathname;
    if (req.method === 'POST' && (p === '/behaviour' || p === '/behavior')) {
      let list;
      try {
        list = JSON.parse(Buffer.concat(chunks).toString('utf8') || '[]');
      } catch (e) {
        return reply(400, { error: `bad JSON: ${e.message}` });
      }
      if (!Array.isArray(list)) list = [list];
      for (let i = 0; i < list.length; i++) {
        const err = ruleError(list[i]);
        if (err) return reply(400, { error: `rule ${i}: ${err}` });
      }
      rules = list.map((r) => Object.assign({}, r));
      log(`behaviour: ${rules.length} rule(s)`);
      return reply(200, { rules: rules.length });
    }
    if (req.method === 'GET' && (p === '/behaviour' || p === '/behavior')) return reply(200, rules);
    if (req.method === 'POST' && p === '/reset') {
      resetState();
      return reply(200, { ok: true });
    }
    if (req.method === 'POST' && p === '/expire-tokens') {
      for (const t of accessTokens.keys()) accessTokens.set(t, 0);
      return reply(200, { expired: accessTokens.size });
    }
    if (req.method === 'GET' && p === '/requests') {
      const role = url.searchParams.get('role');
      const token = url.searchParams.get('token');
      const since = Number(url.searchParams.get('since') || 0);
      const limit = Number(url.searchParams.get('limit') || 0);
      let out = records.slice(-opt.recordMax)
        .filter((r) => (!role || r.role === role) && (!token || r.token === token) && r.seq > since);
      if (limit > 0) out = out.slice(-limit);
      return reply(200, out.map(presentRecord));
    }
    if (req.method === 'GET' && p === '/stats') {
      return reply(200, Object.assign({ pid: process.pid, port: listenPort, roles: [...opt.roleSet],
        rules: rules.length, records_kept: Math.min(records.length, opt.recordMax),
        access_tokens: accessTokens.size, rss_mb: Math.round(process.memoryUsage().rss / 1048576),
        heap_used_mb: Math.round(process.memoryUsage().heapUsed / 1048576) }, stats));
    }
    return reply(404, { error: `no such control endpoint ${req.method} ${p}` });
  });
}

// A record as GET /requests shows it: the body parsed (JSON for APNs and
// FCM, the form fields for OAuth), or left as text when it does not parse.
function presentRecord(r) {
  let body = r.body;
  if (r.role === 'oauth') {
    body = Object.fromEntries(new URLSearchParams(r.body));
  } else if (r.body !== '') {
    try { body = JSON.parse(r.body); } catch (e) { /* keep the text */ }
  }
  return Object.assign({}, r, { body });
}

// Forget rules, records and counters (not issued access tokens, not live gauges).
function resetState() {
  rules = [];
  records = [];
  for (const k of Object.keys(stats)) {
    if (k === 'requests') stats.requests = {};
    else if (k !== 'sessions_current' && k !== 'streams_current') stats[k] = 0;
  }
  stats.streams_max = stats.streams_current;
  log('reset');
}

// ------------------------------------------------------------------ start --

let listenPort = 0;

const server = http2.createSecureServer({
  cert: fs.readFileSync(opt.cert),
  key: fs.readFileSync(opt.key),
  allowHTTP1: false,
  ALPNProtocols: ['h2'],
  settings: { maxConcurrentStreams: opt.maxStreams },
  maxSessionMemory: 64, // MB; many streams in flight need more than the 10 MB default
});

// Remember each TLS socket by its remote port, so "drop" can close a session's
// connection without any HTTP/2 goodbye (session.socket is a guarded proxy that
// refuses destroy(), but it does tell the remote port).
const socketsByPort = new Map();
server.on('secureConnection', (sock) => {
  const port = sock.remotePort;
  sock.on('error', () => {});
  socketsByPort.set(port, sock);
  sock.on('close', () => { if (socketsByPort.get(port) === sock) socketsByPort.delete(port); });
});
server.on('session', (session) => {
  session.fakeId = ++sessionSeq;
  stats.sessions_opened++;
  stats.sessions_current++;
  session.on('close', () => { stats.sessions_current--; });
  session.on('error', (e) => { if (opt.verbose) log(`session ${session.fakeId}: ${e.message}`); });
});
server.on('stream', onStream);
server.on('sessionError', (e) => { if (opt.verbose) log(`session error: ${e.message}`); });
server.on('tlsClientError', (e) => { if (opt.verbose) log(`TLS error: ${e.message}`); });

const control = http.createServer(controlHandler);

server.listen(opt.port, '127.0.0.1', () => {
  listenPort = server.address().port;
  if (opt.writeSa && sa) {
    const copy = Object.assign({}, sa);
    delete copy.publicKey;
    copy.token_uri = expectedAudience();
    fs.writeFileSync(opt.writeSa, JSON.stringify(copy, null, 2) + '\n', { mode: 0o600 });
  }
  control.listen(opt.controlPort, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: listenPort, control_port: control.address().port }) + '\n');
    log(`listening on 127.0.0.1:${listenPort} (roles ${[...opt.roleSet].join(',')}), control on 127.0.0.1:${control.address().port}`);
  });
});
server.on('error', (e) => die(`listen: ${e.message}`));
control.on('error', (e) => die(`control listen: ${e.message}`));

// Exit at once: open client sessions are not waited for.
function shutdown(sig) {
  log(`${sig}: exiting`);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
