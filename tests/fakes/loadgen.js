#!/usr/bin/env node
'use strict';
// loadgen.js — how many pushes per second can fake_push.js take, and at what CPU cost?
//
// pushd's benchmark wants >= 10,000 pushes/s, so the fake must not be the
// bottleneck. This drives APNs (or FCM) requests at the fake over a few HTTP/2
// sessions with many streams in flight on each, all signed with one reused
// JWT (as a real provider does), and prints requests/s and the fake's CPU
// seconds per 1000 requests, read from /proc/<pid>/stat (utime + stime)
// around the measured phase. The client is Node too and shares the machine,
// so requests/s is a lower bound; CPU per 1000 requests is the figure that
// says how much of a core the fake needs at a given rate.
//
// By default it makes its own credentials (gen_certs.sh), starts its own fake,
// measures, and kills it. Give --url/--control-port/--ca/--apns-key to drive a
// fake that is already running instead.
//
//   node tests/fakes/loadgen.js [--requests 200000] [--duration S] [--sessions 1]
//        [--streams 100] [--role apns|fcm] [--record-max N] [--tokens 1000]

const http2 = require('http2');
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const { signJwt } = require('./jwt_util');

const HERE = __dirname;

function parseArgs(argv) {
  const o = { requests: 200000, duration: 60, sessions: 1, streams: 100, role: 'apns',
    recordMax: null, tokens: 1000, warmup: null, url: null, controlPort: null, ca: null,
    apnsKey: null, keyId: 'KEYID12345', teamId: 'TEAMID1234', topic: 'com.example.mqchat',
    fcmProject: 'mqchat-fake', fcmAccessToken: 'loadgen-static-token', json: false };
  const names = { '--requests': 'requests', '--duration': 'duration', '--sessions': 'sessions',
    '--streams': 'streams', '--role': 'role', '--record-max': 'recordMax', '--tokens': 'tokens',
    '--warmup': 'warmup', '--url': 'url', '--control-port': 'controlPort', '--ca': 'ca',
    '--apns-key': 'apnsKey', '--key-id': 'keyId', '--team-id': 'teamId', '--topic': 'topic',
    '--fcm-project': 'fcmProject', '--fcm-access-token': 'fcmAccessToken' };
  const numeric = new Set(['requests', 'duration', 'sessions', 'streams', 'recordMax', 'tokens', 'warmup', 'controlPort']);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--json') { o.json = true; continue; }
    const n = names[argv[i]];
    if (!n || i + 1 >= argv.length) { console.error(`loadgen: bad argument ${argv[i]}`); process.exit(2); }
    const v = argv[++i];
    o[n] = numeric.has(n) ? Number(v) : v;
  }
  if (o.warmup === null) o.warmup = Math.min(20000, Math.ceil(o.requests / 10));
  if (!['apns', 'fcm'].includes(o.role)) { console.error('loadgen: --role apns|fcm'); process.exit(2); }
  return o;
}

const opt = parseArgs(process.argv.slice(2));
let child = null;
let tmpDir = null;
function cleanup() {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
}
process.on('exit', cleanup);
// Bounded: the whole run can never outlive duration + a margin.
setTimeout(() => { console.error('loadgen: global timeout'); process.exit(1); },
  (opt.duration * 2 + 60) * 1000).unref();

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([promise, new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms);
  })]).finally(() => clearTimeout(t));
}

function getJson(port, p) {
  return withTimeout(new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p }, (res) => {
      let t = '';
      res.on('data', (c) => { t += c; });
      res.on('end', () => resolve(JSON.parse(t)));
    }).on('error', reject);
  }), 5000, `GET ${p}`);
}

// utime + stime of a process, in seconds.
const CLK_TCK = (() => {
  try { return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100; } catch (e) { return 100; }
})();
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from #3 on
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;             // #14 utime, #15 stime
}

async function startOwnFake() {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-push-loadgen-'));
  execFileSync('sh', [path.join(HERE, 'gen_certs.sh'), tmpDir], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 30000 });
  const f = (n) => path.join(tmpDir, n);
  const args = [path.join(HERE, 'fake_push.js'), '--cert', f('server.pem'), '--key', f('server-key.pem'),
    '--apns-key', f('apns-key.p8'), '--apns-key-id', opt.keyId, '--apns-team-id', opt.teamId,
    '--apns-topic', opt.topic, '--fcm-sa', f('fcm-sa.json'), '--fcm-access-token', opt.fcmAccessToken];
  if (opt.recordMax !== null) args.push('--record-max', String(opt.recordMax));
  child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await withTimeout(new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
    });
    child.on('exit', (c) => reject(new Error(`fake exited ${c}`)));
  }), 10000, 'fake startup');
  const j = JSON.parse(line);
  opt.url = `https://127.0.0.1:${j.port}`;
  opt.controlPort = j.control_port;
  opt.ca = f('ca.pem');
  opt.apnsKey = f('apns-key.p8');
}

// The requests: a fixed set of device tokens, one JWT for all of them.
function buildRequests() {
  const list = [];
  if (opt.role === 'apns') {
    const key = crypto.createPrivateKey(fs.readFileSync(opt.apnsKey));
    const jwt = signJwt('ES256', key, { alg: 'ES256', kid: opt.keyId },
      { iss: opt.teamId, iat: Math.floor(Date.now() / 1000) });
    const body = Buffer.from(JSON.stringify({ aps: { alert: { title: 'New message', body: 'Hello from the load generator' }, 'mutable-content': 1 }, c: 'conv-1', m: 12345 }));
    for (let i = 0; i < opt.tokens; i++) {
      list.push({ headers: { ':method': 'POST', ':path': `/3/device/${crypto.randomBytes(32).toString('hex')}`,
        authorization: `bearer ${jwt}`, 'apns-topic': opt.topic, 'apns-push-type': 'alert',
        'apns-priority': '10', 'apns-expiration': '0' }, body });
    }
  } else {
    for (let i = 0; i < opt.tokens; i++) {
      const body = Buffer.from(JSON.stringify({ message: { token: `tok-${i}-${crypto.randomBytes(60).toString('base64url')}`,
        data: { c: 'conv-1', m: '12345' }, android: { collapse_key: 'conv-1', priority: 'high' } } }));
      list.push({ headers: { ':method': 'POST', ':path': `/v1/projects/${opt.fcmProject}/messages:send`,
        authorization: `Bearer ${opt.fcmAccessToken}`, 'content-type': 'application/json' }, body });
    }
  }
  return list;
}

// Send `count` requests with opt.streams in flight on each session; resolves
// with {elapsed, statuses, errors}.
function run(sessions, requests, count, deadlineMs) {
  return new Promise((resolve) => {
    let sent = 0;
    let finished = 0;
    let active = 0;
    const statuses = {};
    let errors = 0;
    const t0 = process.hrtime.bigint();
    const deadline = Date.now() + deadlineMs;
    const done = () => resolve({ elapsed: Number(process.hrtime.bigint() - t0) / 1e9, statuses, errors, finished });
    function fire(session) {
      if (sent >= count || Date.now() > deadline || session.destroyed) {
        if (--active === 0) done();
        return;
      }
      const r = requests[sent % requests.length];
      sent++;
      let req;
      try {
        req = session.request(r.headers);
      } catch (e) {
        errors++;
        if (--active === 0) done();
        return;
      }
      req.on('response', (h) => { statuses[h[':status']] = (statuses[h[':status']] || 0) + 1; });
      req.on('error', () => { errors++; });
      req.resume();
      req.on('close', () => { finished++; fire(session); });
      req.end(r.body);
    }
    for (const s of sessions) {
      for (let i = 0; i < opt.streams; i++) { active++; fire(s); }
    }
  });
}

async function main() {
  if (!opt.url) await startOwnFake();
  const ca = fs.readFileSync(opt.ca);
  const stats0 = await getJson(opt.controlPort, '/stats');
  const pid = stats0.pid;
  const requests = buildRequests();
  const sessions = [];
  for (let i = 0; i < opt.sessions; i++) {
    const s = http2.connect(opt.url, { ca, peerMaxConcurrentStreams: opt.streams });
    s.on('error', (e) => console.error(`loadgen: session error ${e.message}`));
    await withTimeout(new Promise((resolve) => s.once('remoteSettings', resolve)), 5000, 'connect');
    sessions.push(s);
  }

  await run(sessions, requests, opt.warmup, opt.duration * 1000); // JIT, JWT cache, record array
  const fakeCpu0 = cpuSeconds(pid);
  const ownCpu0 = process.cpuUsage();
  const r = await run(sessions, requests, opt.requests, opt.duration * 1000);
  const fakeCpu = cpuSeconds(pid) - fakeCpu0;
  const own = process.cpuUsage(ownCpu0);
  const stats1 = await getJson(opt.controlPort, '/stats');
  for (const s of sessions) s.close();

  const result = {
    role: opt.role, sessions: opt.sessions, streams_per_session: opt.streams,
    requests: r.finished, seconds: +r.elapsed.toFixed(3),
    requests_per_s: Math.round(r.finished / r.elapsed),
    fake_cpu_s: +fakeCpu.toFixed(3),
    fake_cpu_s_per_1000: +(fakeCpu * 1000 / r.finished).toFixed(4),
    fake_max_rate_one_core: Math.round(r.finished / fakeCpu),
    loadgen_cpu_s: +((own.user + own.system) / 1e6).toFixed(3),
    statuses: r.statuses, errors: r.errors,
    fake_streams_max: stats1.streams_max, fake_jwt_verifications: stats1.jwt_verifications,
    fake_records_kept: stats1.records_kept, fake_rss_mb: stats1.rss_mb,
  };
  if (opt.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(`${result.role}: ${result.requests} requests in ${result.seconds} s over ${result.sessions} session(s) x ${result.streams_per_session} streams = ${result.requests_per_s} req/s`);
    console.log(`fake CPU: ${result.fake_cpu_s} s = ${result.fake_cpu_s_per_1000} CPU-s per 1000 requests (one core would serve ~${result.fake_max_rate_one_core} req/s)`);
    console.log(`loadgen CPU: ${result.loadgen_cpu_s} s; statuses ${JSON.stringify(result.statuses)}; errors ${result.errors}; fake JWT verifications ${result.fake_jwt_verifications}; records kept ${result.fake_records_kept}; fake RSS ${result.fake_rss_mb} MB`);
  }
  const ok = r.errors === 0 && (r.statuses['200'] || 0) === r.finished;
  return ok ? 0 : 1;
}

main().then((code) => { cleanup(); process.exit(code); },
  (e) => { console.error(`loadgen: ${e.stack || e}`); cleanup(); process.exit(1); });
