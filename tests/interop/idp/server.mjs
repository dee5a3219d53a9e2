#!/usr/bin/env node
// gatehouse interop peer: a real `oidc-provider` (the certified OpenID provider) for tests.
//
// Issues RFC 9068 JWT access tokens through the client_credentials grant and, for the clients
// named by --exchange-clients, the RFC 8693 token-exchange grant (registered through
// oidc-provider's own extension point, registerGrantType); serves OIDC discovery and JWKS, and
// rotates its signing keys at runtime through /__admin endpoints.
//
// Protocol with a test harness:
//   stdout: exactly one line, `READY <base-url>`, once listening. Nothing else is ever written to
//           stdout (console.log/console.info are redirected to stderr).
//   stderr: logs.
//   SIGTERM / SIGINT: close the listener and every open connection, exit 0.
//
// See tests/interop/README.md for flags, environment variables and admin endpoints.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints NOTICEs with console.info (stdout). Keep stdout for the READY line only.
const toStderr = (...args) => { process.stderr.write(`${args.map(String).join(' ')}\n`); };
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;

const { default: Provider, errors: oidcErrors } = await import('oidc-provider');

const HELP = `usage: node tests/interop/idp/server.mjs [options]

  --port N              listen port; 0 picks a free one            (env IDP_PORT, PORT; default 0)
  --host ADDR           listen address                             (env IDP_HOST; default 127.0.0.1)
  --issuer-path PATH    mount the issuer under a path, e.g. /realms/test
                        (issuer becomes http://host:port/realms/test) (env IDP_ISSUER_PATH; default none)
  --audience LIST       comma-separated resource indicators accepted; the first is the default
                        resource and the 'aud' of tokens requested without 'resource'
                                                                   (env IDP_AUDIENCE; default https://agents.example.com)
  --any-resource        also accept any other absolute http(s) resource indicator (its value becomes 'aud')
                                                                   (env IDP_ANY_RESOURCE=1)
  --alg ALG             access-token signing alg: RS256 or ES256   (env IDP_ALG; default RS256)
  --ttl SECONDS         access-token lifetime                      (env IDP_TOKEN_TTL; default 300)
  --scopes LIST         comma-separated scopes the resource server knows
                                                                   (env IDP_SCOPES; default invoke,read)
  --client SPEC         id:secret[:scope,scope...[:auth_method]], repeatable; replaces the defaults.
                        auth_method: client_secret_basic (default) or client_secret_post
                                                                   (env IDP_CLIENTS, specs separated by ';')
                        defaults: agent-client:agent-secret:invoke,read  other-client:other-secret:invoke,read
  --client-claims JSON  extra claims per client id, e.g. '{"agent-client":{"cognito:groups":["support"]}}'
                                                                   (env IDP_CLIENT_CLAIMS)
  --exchange-clients LIST
                        comma-separated client ids also allowed the RFC 8693 token-exchange grant
                        (urn:ietf:params:oauth:grant-type:token-exchange): subject_token must be an
                        access token this OP signed and that has not expired; audience or resource
                        names the new token's audience (a configured --audience, or any URL with
                        --any-resource); the new JWT has the subject's sub and
                        act: {sub: <exchanging client>}           (env IDP_EXCHANGE_CLIENTS; default none)
  --jwks-max-age N      send Cache-Control: public, max-age=N on /jwks (default: no Cache-Control,
                        as oidc-provider itself)                   (env IDP_JWKS_MAX_AGE)
  --quiet               no per-request log lines on stderr         (env IDP_QUIET=1)
  --watch-stdin         exit when stdin reaches EOF (give it a pipe and keep the write end;
                        a harness killed without cleanup then takes the IdP with it)
                                                                   (env IDP_WATCH_STDIN=1)
  -h, --help            this text

Admin endpoints (same listener, no auth; test use only):
  POST /__admin/rotate        new signing key (new kid) becomes current; old keys stay published
  POST /__admin/retire-old    publish only the current keys
  GET  /__admin/keys          {current:{RS256:kid,ES256:kid}, published:[kid...], generation}
  POST /__admin/fault         JSON body {"jwks":FAULT,"discovery":FAULT,"exchange":FAULT}; {} clears.
                              FAULT fields: delayMs (wait first), status (answer with it and an
                              error JSON), body (+ optional status, contentType: answer with this
                              body instead), drop (true: close the connection without an answer);
                              for exchange also refuse (an OAuth error code, e.g. invalid_grant:
                              answer 400 with it). Exchange faults apply to token-exchange requests
                              only, after the client authenticated.
  GET  /__admin/stats         request counts: {discovery, jwks, token, other, exchange (token-exchange
                              requests that reached the grant), exchanged (tokens issued by it),
                              exchangeMaxInFlight (most token-exchange requests handled at once)}
  POST /__admin/stats/reset   zero the counters
`;

function fail(msg) {
  process.stderr.write(`idp: error: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'issuer-path': { type: 'string' },
      audience: { type: 'string' },
      'any-resource': { type: 'boolean' },
      alg: { type: 'string' },
      ttl: { type: 'string' },
      scopes: { type: 'string' },
      client: { type: 'string', multiple: true },
      'client-claims': { type: 'string' },
      'jwks-max-age': { type: 'string' },
      'exchange-clients': { type: 'string' },
      quiet: { type: 'boolean' },
      'watch-stdin': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (e) {
  fail(`${e.message}\n\n${HELP}`);
}
if (args.help) {
  process.stderr.write(HELP);
  process.exit(0);
}

const env = process.env;
const truthy = (v) => v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';

const port = Number(args.port ?? env.IDP_PORT ?? env.PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port: ${args.port}`);
const host = args.host ?? env.IDP_HOST ?? '127.0.0.1';
let issuerPath = args['issuer-path'] ?? env.IDP_ISSUER_PATH ?? '';
if (issuerPath && !issuerPath.startsWith('/')) issuerPath = `/${issuerPath}`;
issuerPath = issuerPath.replace(/\/+$/, '');
const audiences = (args.audience ?? env.IDP_AUDIENCE ?? 'https://agents.example.com')
  .split(',').map((s) => s.trim()).filter(Boolean);
if (!audiences.length) fail('--audience must name at least one resource');
for (const a of audiences) if (!URL.canParse(a)) fail(`--audience entry is not an absolute URI: ${a}`);
const anyResource = args['any-resource'] || truthy(env.IDP_ANY_RESOURCE);
const alg = (args.alg ?? env.IDP_ALG ?? 'RS256').toUpperCase();
if (!['RS256', 'ES256'].includes(alg)) fail(`--alg must be RS256 or ES256, got ${alg}`);
const ttl = Number(args.ttl ?? env.IDP_TOKEN_TTL ?? 300);
if (!Number.isInteger(ttl) || ttl < 1) fail(`bad --ttl: ${args.ttl}`);
const scopes = (args.scopes ?? env.IDP_SCOPES ?? 'invoke,read').split(/[ ,]+/).filter(Boolean);
const jwksMaxAgeRaw = args['jwks-max-age'] ?? env.IDP_JWKS_MAX_AGE;
const jwksMaxAge = jwksMaxAgeRaw === undefined ? undefined : Number(jwksMaxAgeRaw);
if (jwksMaxAge !== undefined && (!Number.isInteger(jwksMaxAge) || jwksMaxAge < 0)) fail(`bad --jwks-max-age: ${jwksMaxAgeRaw}`);
const quiet = args.quiet || truthy(env.IDP_QUIET);
const watchStdin = args['watch-stdin'] || truthy(env.IDP_WATCH_STDIN);

let clientSpecs = args.client;
if (!clientSpecs && env.IDP_CLIENTS) clientSpecs = env.IDP_CLIENTS.split(';').map((s) => s.trim()).filter(Boolean);
if (!clientSpecs) clientSpecs = ['agent-client:agent-secret:invoke,read', 'other-client:other-secret:invoke,read'];

let clientClaims = {};
const claimsJson = args['client-claims'] ?? env.IDP_CLIENT_CLAIMS;
if (claimsJson) {
  try { clientClaims = JSON.parse(claimsJson); } catch (e) { fail(`--client-claims is not JSON: ${e.message}`); }
  if (typeof clientClaims !== 'object' || clientClaims === null || Array.isArray(clientClaims)) {
    fail('--client-claims must be a JSON object keyed by client id');
  }
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const exchangeClients = new Set((args['exchange-clients'] ?? env.IDP_EXCHANGE_CLIENTS ?? '')
  .split(',').map((s) => s.trim()).filter(Boolean));

const clients = clientSpecs.map((spec) => {
  const [id, secret, scopeList, method = 'client_secret_basic'] = spec.split(':');
  if (!id || !secret) fail(`bad --client ${spec}: want id:secret[:scopes[:auth_method]]`);
  if (!['client_secret_basic', 'client_secret_post'].includes(method)) {
    fail(`bad --client ${spec}: auth_method must be client_secret_basic or client_secret_post`);
  }
  const clientScopes = scopeList === undefined ? scopes : scopeList.split(/[ ,]+/).filter(Boolean);
  return {
    client_id: id,
    client_secret: secret,
    grant_types: exchangeClients.has(id) ? ['client_credentials', TOKEN_EXCHANGE] : ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: method,
    scope: clientScopes.join(' '),
  };
});

// ---------------------------------------------------------------------------------------------
// Signing keys. Each generation has one RSA (RS256) and one P-256 (ES256) key; both are published,
// `--alg` picks which one signs access tokens. Newest generation first.

let generation = 0;
let keyGenerations = [];

function newGeneration() {
  generation += 1;
  const tag = crypto.randomBytes(4).toString('hex');
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return {
    generation,
    keys: {
      RS256: { ...rsa, kid: `rs256-g${generation}-${tag}`, alg: 'RS256', use: 'sig' },
      ES256: { ...ec, kid: `es256-g${generation}-${tag}`, alg: 'ES256', use: 'sig' },
    },
  };
}

const currentKid = () => keyGenerations[0].keys[alg].kid;
const publishedKids = () => keyGenerations.flatMap((g) => [g.keys.RS256.kid, g.keys.ES256.kid]);

// ---------------------------------------------------------------------------------------------
// The provider. oidc-provider builds its keystore at construction, so a key change builds a new
// Provider and swaps the request handler of the same HTTP server.

let issuer;
let handler;

function buildProvider() {
  const signKid = currentKid();
  const jwks = {
    // current generation first: the preferred key for everything oidc-provider signs itself
    keys: keyGenerations.flatMap((g) => (alg === 'ES256'
      ? [g.keys.ES256, g.keys.RS256]
      : [g.keys.RS256, g.keys.ES256])),
  };

  const provider = new Provider(issuer, {
    clients: structuredClone(clients),
    jwks,
    scopes,
    claims: { openid: ['sub'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // a plain client_credentials request without `resource` still gets a JWT for the default audience
        defaultResource: () => audiences[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          const known = audiences.includes(resourceIndicator);
          if (!known && !(anyResource && /^https?:\/\//.test(resourceIndicator))) {
            throw new oidcErrors.InvalidTarget(`unknown resource indicator: ${resourceIndicator}`);
          }
          return {
            scope: scopes.join(' '),
            audience: resourceIndicator,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg, kid: signKid } },
          };
        },
      },
    },
    ttl: {
      ClientCredentials: ttl,
      AccessToken: ttl,
    },
    extraTokenClaims: (ctx, token) => {
      const claims = clientClaims[token.clientId];
      return claims ? structuredClone(claims) : undefined;
    },
    formats: {
      customizers: {
        // Tokens issued by the exchange grant speak for the subject, with the edge as actor.
        jwt: (ctx, token, jwt) => {
          const exchanged = exchangedClaims.get(token);
          if (exchanged) Object.assign(jwt.payload, exchanged);
        },
      },
    },
    clientBasedCORS: () => true,
    renderError: (ctx, out) => {
      ctx.type = 'application/json';
      ctx.body = out;
    },
  });
  if (exchangeClients.size) {
    provider.registerGrantType(
      TOKEN_EXCHANGE,
      (ctx) => tokenExchange(provider, ctx),
      ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope',
        'actor_token', 'actor_token_type'],
    );
  }
  provider.on('server_error', (ctx, err) => process.stderr.write(`idp: server_error: ${err.stack}\n`));
  provider.on('grant.error', (ctx, err) => { if (!quiet) process.stderr.write(`idp: grant error: ${err.message} ${err.error_description ?? ''}\n`); });
  return provider.callback();
}

// ---------------------------------------------------------------------------------------------
// RFC 8693 token exchange. oidc-provider has authenticated the client (client_secret_basic or
// _post, as registered) and checked that it may use this grant before calling the handler.

const exchangedClaims = new WeakMap();
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// Verifies an access token this OP issued, with node:crypto and the OP's own keys (every
// published generation): compact JWS, `typ: at+jwt`, RS256 or ES256 with a known kid, our
// issuer, not expired. Returns the payload; throws invalid_grant otherwise.
function verifyOwnToken(token) {
  const refuse = (why) => new oidcErrors.InvalidGrant(`subject_token is invalid: ${why}`);
  const parts = String(token).split('.');
  if (parts.length !== 3) throw refuse('not a compact JWS');
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    throw refuse('not JSON');
  }
  if (header.typ !== 'at+jwt' || !['RS256', 'ES256'].includes(header.alg)) throw refuse('not an access token of this OP');
  const jwk = keyGenerations.map((g) => g.keys[header.alg]).find((k) => k.kid === header.kid);
  if (!jwk) throw refuse('unknown kid');
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  const ok = crypto.verify(
    'sha256',
    Buffer.from(`${parts[0]}.${parts[1]}`),
    header.alg === 'ES256'
      ? { key: crypto.createPublicKey({ key: pub, format: 'jwk' }), dsaEncoding: 'ieee-p1363' }
      : crypto.createPublicKey({ key: pub, format: 'jwk' }),
    Buffer.from(parts[2], 'base64url'),
  );
  if (!ok) throw refuse('bad signature');
  if (payload.iss !== issuer) throw refuse('wrong issuer');
  if (typeof payload.exp !== 'number' || payload.exp <= Date.now() / 1000) throw refuse('expired');
  return payload;
}

async function tokenExchange(provider, ctx) {
  stats.exchange += 1;
  exchangesInFlight += 1;
  stats.exchangeMaxInFlight = Math.max(stats.exchangeMaxInFlight, exchangesInFlight);
  try {
    await exchange(provider, ctx);
  } finally {
    exchangesInFlight -= 1;
  }
}

let exchangesInFlight = 0;

async function exchange(provider, ctx) {
  const fault = faults.exchange;
  if (fault) {
    if (fault.delayMs) await sleep(fault.delayMs);
    if (fault.drop) { ctx.req.socket.destroy(); return; }
    if (fault.body !== undefined) {
      ctx.status = fault.status ?? 200;
      ctx.type = fault.contentType ?? 'application/json';
      ctx.body = typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body);
      return;
    }
    if (fault.status) {
      ctx.status = fault.status;
      ctx.body = { error: 'server_error', error_description: 'injected exchange fault' };
      return;
    }
    if (fault.refuse) throw new oidcErrors.CustomOIDCProviderError(fault.refuse, 'injected refusal');
  }
  const { params, client } = ctx.oidc;
  if (!params.subject_token) throw new oidcErrors.InvalidRequest('missing subject_token');
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new oidcErrors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new oidcErrors.InvalidRequest('only access tokens are issued');
  }
  // The subject token must be one this OP signed (its own keys), for this issuer, unexpired.
  const subject = verifyOwnToken(params.subject_token);
  const target = params.resource ?? params.audience;
  if (!target) throw new oidcErrors.InvalidTarget('audience or resource is required');
  if (!audiences.includes(target) && !(anyResource && /^https?:\/\//.test(target))) {
    throw new oidcErrors.InvalidTarget(`unknown audience: ${target}`);
  }
  const requested = (params.scope ?? '').split(' ').filter(Boolean);
  const allowed = new Set(client.scope?.split(' ') ?? []);
  const unknown = requested.filter((s) => !allowed.has(s));
  if (unknown.length) throw new oidcErrors.InvalidScope('requested scope is not allowed', unknown.join(' '));

  const token = new provider.ClientCredentials({ client, scope: requested.join(' ') || undefined });
  token.resourceServer = {
    audience: target,
    scope: [...allowed].join(' '),
    accessTokenTTL: ttl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg, kid: currentKid() } },
    identifier: () => target,
  };
  const act = subject.act ? { sub: client.clientId, act: subject.act } : { sub: client.clientId };
  exchangedClaims.set(token, { sub: subject.sub, act });
  const value = await token.save();
  stats.exchanged += 1;
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope || undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Test-only admin surface, counters and fault injection.

const stats = {
  discovery: 0, jwks: 0, token: 0, other: 0, exchange: 0, exchanged: 0, exchangeMaxInFlight: 0,
};
let faults = {};

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function keysState() {
  return {
    generation: keyGenerations[0].generation,
    signingAlg: alg,
    current: { RS256: keyGenerations[0].keys.RS256.kid, ES256: keyGenerations[0].keys.ES256.kid },
    signingKid: currentKid(),
    published: publishedKids(),
  };
}

async function admin(req, res, path) {
  const route = `${req.method} ${path}`;
  switch (route) {
    case 'POST /__admin/rotate': {
      keyGenerations = [newGeneration(), ...keyGenerations];
      handler = buildProvider();
      process.stderr.write(`idp: rotated: signing kid now ${currentKid()}, published ${publishedKids().join(',')}\n`);
      return sendJson(res, 200, keysState());
    }
    case 'POST /__admin/retire-old': {
      keyGenerations = keyGenerations.slice(0, 1);
      handler = buildProvider();
      process.stderr.write(`idp: retired old keys: published ${publishedKids().join(',')}\n`);
      return sendJson(res, 200, keysState());
    }
    case 'GET /__admin/keys':
      return sendJson(res, 200, keysState());
    case 'POST /__admin/fault': {
      const text = await readBody(req);
      let parsed;
      try { parsed = text.trim() ? JSON.parse(text) : {}; } catch (e) {
        return sendJson(res, 400, { error: `body is not JSON: ${e.message}` });
      }
      faults = parsed;
      process.stderr.write(`idp: faults now ${JSON.stringify(faults)}\n`);
      return sendJson(res, 200, { faults });
    }
    case 'GET /__admin/stats':
      return sendJson(res, 200, stats);
    case 'POST /__admin/stats/reset':
      for (const k of Object.keys(stats)) stats[k] = 0;
      return sendJson(res, 200, stats);
    default:
      return sendJson(res, 404, { error: `no admin route ${route}` });
  }
}

function classify(path) {
  if (path === '/.well-known/openid-configuration' || path === '/.well-known/oauth-authorization-server') return 'discovery';
  if (path === '/jwks') return 'jwks';
  if (path === '/token') return 'token';
  return 'other';
}

async function onRequest(req, res) {
  const started = process.hrtime.bigint();
  const url = new URL(req.url, 'http://x');
  let path = url.pathname;

  if (!quiet) {
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      process.stderr.write(`idp: ${req.method} ${req.url} -> ${res.statusCode} (${ms.toFixed(1)} ms)\n`);
    });
  }

  try {
    if (path.startsWith('/__admin/')) return await admin(req, res, path);

    if (issuerPath) {
      if (path !== issuerPath && !path.startsWith(`${issuerPath}/`)) {
        return sendJson(res, 404, { error: 'not_found', error_description: `outside issuer path ${issuerPath}` });
      }
      path = path.slice(issuerPath.length) || '/';
      // mounting as the oidc-provider docs describe for connect-style apps
      req.originalUrl = req.url;
      req.url = path + url.search;
    }

    const kind = classify(path);
    stats[kind] += 1;
    const fault = (kind === 'jwks' || kind === 'discovery') ? faults[kind] : undefined;
    if (fault) {
      if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
      if (fault.body !== undefined) {
        const text = typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body);
        res.writeHead(fault.status ?? 200, { 'content-type': fault.contentType ?? 'application/json', 'content-length': Buffer.byteLength(text) });
        return res.end(text);
      }
      if (fault.status) {
        return sendJson(res, fault.status, { error: 'injected_fault', error_description: `injected ${kind} fault` });
      }
      if (fault.drop) return req.socket.destroy();
    }
    if (kind === 'jwks' && jwksMaxAge !== undefined) res.setHeader('cache-control', `public, max-age=${jwksMaxAge}`);
    return await handler(req, res);
  } catch (e) {
    process.stderr.write(`idp: request failed: ${e.stack}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

const server = http.createServer((req, res) => { onRequest(req, res); });
server.keepAliveTimeout = 5000;

server.on('error', (e) => fail(`listen on ${host}:${port}: ${e.message}`));
server.listen(port, host, () => {
  const { port: actual } = server.address();
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const base = `http://${hostPart}:${actual}`;
  issuer = `${base}${issuerPath}`;
  keyGenerations = [newGeneration()];
  handler = buildProvider();
  process.stderr.write(`idp: issuer ${issuer}, signing ${alg} kid ${currentKid()}, audiences ${audiences.join(',')}, `
    + `clients ${clients.map((c) => c.client_id).join(',')}, ttl ${ttl}s\n`);
  process.stdout.write(`READY ${issuer}\n`);
});

let stopping = false;
function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`idp: ${sig}, shutting down\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
// --watch-stdin: a harness that dies without signalling closes our stdin pipe: stop too
if (watchStdin) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
