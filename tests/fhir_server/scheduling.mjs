// IHE ITI Scheduling operations over the server's own Schedules and Slots: Appointment $find
// (ITI-115), $hold (ITI-116) and $book (ITI-117). Off until POST /$admin/features
// {"iheScheduling": true}; see README.md. Medplum has $find/$hold in its server package only
// (alpha, computed from scheduling extensions), not in fhir-router, so this is ours.
//
// Proposed and held appointments live here, in memory, not in the repository: searches, _history
// and subscriptions never see them (a real EHR's proposals are not chart entries either). Slots
// are changed through the repository, so they are validated, versioned and notified like any write.
import crypto from 'node:crypto';
import { badRequest, OperationOutcomeError } from '@medplum/core';

const PROPOSAL_TTL_MS = 10 * 60 * 1000;
const HOLD_MS = Number(process.env.IHE_HOLD_SECONDS ?? 300) * 1000;
const DEFAULT_COUNT = 50;

export function newSchedulingState() {
  return { proposals: new Map(), holds: new Map() };
}

export const OPERATIONS = ['find', 'hold', 'book'].map((code) => ({
  name: code,
  definition: `https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-${code}`,
}));

function outcome(code, diagnostics, severity = 'error') {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

function searchset(resources, base, total = resources.length) {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total,
    entry: resources.map((resource) => ({
      fullUrl: resource.id ? `${base}/${resource.resourceType}/${resource.id}` : undefined,
      resource,
      search: { mode: resource.resourceType === 'OperationOutcome' ? 'outcome' : 'match' },
    })),
  };
}

// Parameters from a POST body (a Parameters resource) or from the query string (GET $find).
function readParameters(method, body, query) {
  const values = new Map();
  const add = (name, value) => values.set(name, [...(values.get(name) ?? []), value]);
  if (method === 'GET') {
    for (const [name, value] of query) add(name, value);
    return values;
  }
  if (body?.resourceType !== 'Parameters') throw new OperationOutcomeError(badRequest('Expected a Parameters body'));
  for (const p of body.parameter ?? []) {
    const value = p.resource ?? p.valueReference?.reference ?? p.valueDateTime ?? p.valueString ?? p.valueInteger ?? p.valueCode;
    if (value !== undefined) add(p.name, value);
  }
  return values;
}

const idOf = (reference, type) => {
  const match = new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})$`).exec(String(reference ?? ''));
  return match?.[1];
};
const codings = (resource) => (resource?.serviceType ?? []).flatMap((c) => c.coding ?? []).map((c) => `${c.system}|${c.code}`);
const stored = (repo, type) => [...(repo.resources.get(type)?.values() ?? [])];

function readSlot(repo, id) {
  return repo.resources.get('Slot')?.get(id);
}

async function setSlotStatus(repo, slot, status) {
  return repo.updateResource({ ...slot, status }, { ifMatch: slot.meta?.versionId });
}

// Holds past their time give their slots back (checked on every scheduling operation).
async function expireHolds(state, repo) {
  const now = Date.now();
  for (const [id, hold] of state.holds) {
    if (hold.expires > now) continue;
    state.holds.delete(id);
    for (const slotId of hold.slotIds) {
      const slot = readSlot(repo, slotId);
      if (slot?.status === 'busy-tentative') await setSlotStatus(repo, slot, 'free');
    }
  }
  for (const [id, proposal] of state.proposals) if (proposal.expires <= now) state.proposals.delete(id);
}

function find(state, repo, params, base) {
  const start = params.get('start')?.[0];
  const end = params.get('end')?.[0];
  if (!start || !end) throw new OperationOutcomeError(badRequest('$find needs start and end'));
  const [from, to] = [Date.parse(start), Date.parse(end)];
  const practitioners = params.get('practitioner') ?? [];
  const locations = params.get('location-reference') ?? [];
  const visitTypes = params.get('visit-type') ?? [];
  const count = Number(params.get('_count')?.[0] ?? DEFAULT_COUNT);
  // Within an actor type any listed one will do (OR); across types all must be there (AND).
  const schedules = new Map(
    stored(repo, 'Schedule')
      .filter((s) => s.active !== false)
      .filter((s) => {
        const actors = (s.actor ?? []).map((a) => a.reference);
        return [practitioners, locations].every((wanted) => wanted.length === 0 || wanted.some((w) => actors.includes(w)));
      })
      .map((s) => [`Schedule/${s.id}`, s])
  );
  const matches = stored(repo, 'Slot')
    .filter((slot) => slot.status === 'free' && schedules.has(slot.schedule?.reference))
    .filter((slot) => Date.parse(slot.start) >= from && Date.parse(slot.start) < to)
    .filter((slot) => {
      const offered = codings(slot).length ? codings(slot) : codings(schedules.get(slot.schedule.reference));
      return visitTypes.length === 0 || offered.length === 0 || visitTypes.some((v) => offered.includes(v));
    })
    .sort((a, b) => Date.parse(a.start) - Date.parse(b.start) || a.id.localeCompare(b.id));
  const proposals = matches.slice(0, count).map((slot) => {
    const schedule = schedules.get(slot.schedule.reference);
    const appointment = {
      resourceType: 'Appointment',
      id: crypto.randomUUID(),
      status: 'proposed',
      serviceType: slot.serviceType ?? schedule.serviceType,
      start: slot.start,
      end: slot.end,
      slot: [{ reference: `Slot/${slot.id}` }],
      participant: (schedule.actor ?? []).map((actor) => ({ actor, required: 'required', status: 'needs-action' })),
    };
    state.proposals.set(appointment.id, { appointment, slotIds: [slot.id], expires: Date.now() + PROPOSAL_TTL_MS });
    return appointment;
  });
  return [200, searchset(proposals, base, matches.length)];
}

async function hold(state, repo, params, base) {
  const id = idOf(params.get('appointment-reference')?.[0], 'Appointment');
  const proposal = id && state.proposals.get(id);
  if (!proposal) return [404, outcome('not-found', 'No such proposed appointment (unknown or expired)', 'fatal')];
  const slots = proposal.slotIds.map((slotId) => readSlot(repo, slotId));
  const stillFree = slots.every((s) => s?.status === 'free' && s.start === proposal.appointment.start && s.end === proposal.appointment.end);
  if (!stillFree) {
    state.proposals.delete(id);
    return [409, outcome('not-found', 'The proposed appointment is no longer available', 'fatal')];
  }
  for (const slot of slots) await setSlotStatus(repo, slot, 'busy-tentative');
  state.proposals.delete(id);
  const held = { ...proposal.appointment, status: 'pending' };
  state.holds.set(id, { appointment: held, slotIds: proposal.slotIds, expires: Date.now() + HOLD_MS });
  return [200, searchset([held], base)];
}

// $book: cancel a hold, or modify an existing Appointment (ITI-117's two uses we need). Booking a
// held proposal as a new Appointment (appointment-reference alone) is not implemented.
async function book(state, repo, params, base) {
  const resource = params.get('appointment-resource')?.[0];
  const holdId = idOf(params.get('appointment-reference')?.[0], 'Appointment');
  if (!resource || typeof resource !== 'object' || resource.resourceType !== 'Appointment') {
    throw new OperationOutcomeError(badRequest('This test server needs appointment-resource for $book'));
  }
  if (resource.status === 'cancelled' && state.holds.has(resource.id)) {
    const released = await release(state, repo, resource.id);
    return [200, searchset([{ ...released.appointment, status: 'cancelled' }], base)];
  }
  const current = repo.resources.get('Appointment')?.get(resource.id ?? '');
  if (!current) return [200, searchset([outcome('not-found', 'No such Appointment to modify')], base)];
  if (resource.status !== 'booked') throw new OperationOutcomeError(badRequest('Modifying needs status booked'));
  // Like If-Match: a resource read before someone else's change does not overwrite it.
  if (resource.meta?.versionId && resource.meta.versionId !== current.meta?.versionId) {
    return [200, searchset([outcome('conflict', 'The Appointment changed since this version')], base)];
  }
  const hold = holdId ? state.holds.get(holdId) : undefined;
  const wanted = (resource.slot ?? []).map((s) => idOf(s.reference, 'Slot'));
  const available = wanted.every((slotId) => {
    const slot = slotId && readSlot(repo, slotId);
    if (!slot) return false;
    return slot.status === 'free' || (slot.status === 'busy-tentative' && hold?.slotIds.includes(slotId));
  });
  if (!available) return [200, searchset([outcome('not-found', 'The requested slot is not available')], base)];
  const previous = (current.slot ?? []).map((s) => idOf(s.reference, 'Slot')).filter((slotId) => slotId && !wanted.includes(slotId));
  const booked = await repo.withTransaction(async () => {
    for (const slotId of wanted) await setSlotStatus(repo, readSlot(repo, slotId), 'busy');
    for (const slotId of previous) {
      const slot = readSlot(repo, slotId);
      if (slot && slot.status !== 'free') await setSlotStatus(repo, slot, 'free');
    }
    const { meta, ...content } = resource;
    return repo.updateResource({ ...content, id: current.id }, { ifMatch: current.meta?.versionId });
  });
  if (holdId) state.holds.delete(holdId);
  return [200, searchset([booked], base)];
}

async function release(state, repo, holdId) {
  const hold = state.holds.get(holdId);
  state.holds.delete(holdId);
  for (const slotId of hold?.slotIds ?? []) {
    const slot = readSlot(repo, slotId);
    if (slot?.status === 'busy-tentative') await setSlotStatus(repo, slot, 'free');
  }
  return hold;
}

// One operation request; returns [status, body]. Runs inside the server's one-at-a-time queue,
// so a $hold or $book checks and writes its Slots with no other request in between.
export async function handleSchedulingOperation(state, repo, { operation, method, body, query, base }) {
  await expireHolds(state, repo);
  if (operation !== 'find' && method !== 'POST') throw new OperationOutcomeError(badRequest(`$${operation} needs POST`));
  const params = readParameters(method, body, query);
  if (operation === 'find') return find(state, repo, params, base);
  if (operation === 'hold') return hold(state, repo, params, base);
  return book(state, repo, params, base);
}
