'use strict';
// jwt_util.js — the few JWT (JWS compact form) helpers the fakes share.
//
// A JWT is three base64url parts "header.claims.signature"; the signature
// covers the ASCII bytes "header.claims". APNs uses ES256 (ECDSA P-256 with
// SHA-256, signature as raw r||s, 64 bytes — JOSE's form, not DER); Google's
// service-account flow uses RS256 (RSASSA-PKCS1-v1_5 with SHA-256).
// fake_push.js verifies with these; selftest.js and loadgen.js sign with them.
// Only Node's built-in crypto is used.

const crypto = require('crypto');

function b64url(buf) {
  return Buffer.from(buf).toString('base64')
    .replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

// Decode base64url; returns null for characters outside the base64url set.
function b64urlDecode(str) {
  if (typeof str !== 'string' || !/^[A-Za-z0-9_-]*$/.test(str)) return null;
  return Buffer.from(str.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

// Split and decode a compact JWT. Returns {header, claims, signingInput,
// signature} or null when it is not three parts of base64url JSON objects.
function parseJwt(token) {
  if (typeof token !== 'string' || token.length > 8192) return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const h = b64urlDecode(parts[0]);
  const c = b64urlDecode(parts[1]);
  const s = b64urlDecode(parts[2]);
  if (!h || !c || !s) return null;
  let header, claims;
  try {
    header = JSON.parse(h.toString('utf8'));
    claims = JSON.parse(c.toString('utf8'));
  } catch (e) {
    return null;
  }
  if (!isObject(header) || !isObject(claims)) return null;
  return { header, claims, signingInput: parts[0] + '.' + parts[1], signature: s };
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Verify a parsed JWT's signature with a KeyObject. alg is 'ES256' or 'RS256'.
function verifySignature(parsed, alg, publicKey) {
  try {
    if (alg === 'ES256') {
      if (parsed.signature.length !== 64) return false; // raw r||s only
      return crypto.verify('sha256', Buffer.from(parsed.signingInput),
        { key: publicKey, dsaEncoding: 'ieee-p1363' }, parsed.signature);
    }
    if (alg === 'RS256') {
      return crypto.verify('sha256', Buffer.from(parsed.signingInput),
        publicKey, parsed.signature);
    }
  } catch (e) {
    return false;
  }
  return false;
}

// Sign header+claims (objects) with a private key (KeyObject or PEM).
function signJwt(alg, privateKey, header, claims) {
  const input = b64url(JSON.stringify(header)) + '.' + b64url(JSON.stringify(claims));
  let sig;
  if (alg === 'ES256') {
    sig = crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  } else if (alg === 'RS256') {
    sig = crypto.sign('sha256', Buffer.from(input), privateKey);
  } else {
    throw new Error('unsupported alg ' + alg);
  }
  return input + '.' + b64url(sig);
}

module.exports = { b64url, b64urlDecode, parseJwt, verifySignature, signJwt, isObject };
