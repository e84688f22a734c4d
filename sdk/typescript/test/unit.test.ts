/** Transport behaviour with a fake fetch: retries, Retry-After, headers, errors, refresh, paging. */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  AInTandemClient,
  AInTandemError,
  AuthenticationFailedError,
  CLIENT_VERSION,
  RateLimitExceededError,
  ResourceNotFoundError,
  SandboxNotReadyError,
  ServiceUnavailableError,
  ValidationError,
  VERSION,
} from '@aintandem/sdk';

type Call = { method: string; url: string; headers: Record<string, string>; body: unknown; at: number };
type Reply = { status: number; body?: unknown; headers?: Record<string, string> };

function fakeFetch(replies: Reply[] | ((call: Call, n: number) => Reply)): {
  fetch: (input: string, init: RequestInit) => Promise<Response>;
  calls: Call[];
} {
  const calls: Call[] = [];
  return {
    calls,
    fetch: async (input, init) => {
      const call: Call = {
        method: init.method ?? 'GET',
        url: input,
        headers: { ...(init.headers as Record<string, string>) },
        body: init.body === undefined ? undefined : JSON.parse(String(init.body)),
        at: Date.now(),
      };
      calls.push(call);
      const reply = typeof replies === 'function' ? replies(call, calls.length - 1) : replies[calls.length - 1];
      assert.ok(reply, `unexpected request #${calls.length}: ${call.method} ${call.url}`);
      const body = reply.body === undefined ? null : JSON.stringify(reply.body);
      return new Response(reply.status === 204 ? null : body, {
        status: reply.status,
        headers: { 'content-type': 'application/json', ...(reply.headers ?? {}) },
      });
    },
  };
}

const meta = { request_id: 'rid-1', timestamp: '2026-11-25T00:00:00Z', version: '0.1.0' };
const ok = (data: unknown, status = 200): Reply => ({ status, body: { success: true, data, meta } });
const fail = (status: number, code: string, extra: Partial<Reply> = {}, details: unknown = {}): Reply => ({
  status,
  body: { success: false, error: { code, message: `${code} happened`, details }, meta: { ...meta, request_id: `rid-${status}` } },
  ...extra,
});
const BASE = 'http://api.test/api/v1';
const workspace = { workspace_id: 'ws_abcdefghij', name: 'w' };

describe('retries', () => {
  it('retries a 429 after Retry-After, reusing the Idempotency-Key, with a new X-Request-ID', async () => {
    const fake = fakeFetch([
      fail(429, 'RATE_LIMIT_EXCEEDED', { headers: { 'retry-after': '1' } }),
      fail(429, 'RATE_LIMIT_EXCEEDED', { headers: { 'retry-after': '1' } }),
      ok(workspace, 201),
    ]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 'tok', fetch: fake.fetch });
    const created = await client.workspaces.create({ name: 'w' });
    assert.equal(created.id, 'ws_abcdefghij');
    assert.equal(fake.calls.length, 3);
    const [a, b, c] = fake.calls as [Call, Call, Call];
    assert.ok(b.at - a.at >= 950, `waited ${b.at - a.at} ms, Retry-After said 1 s`);
    assert.ok(c.at - b.at >= 950, `waited ${c.at - b.at} ms, Retry-After said 1 s`);
    const keys = fake.calls.map((x) => x.headers['Idempotency-Key']);
    assert.match(keys[0]!, /^[0-9a-f-]{36}$/);
    assert.deepEqual(new Set(keys).size, 1, 'one Idempotency-Key across the retries');
    assert.equal(new Set(fake.calls.map((x) => x.headers['X-Request-ID'])).size, 3);
    for (const call of fake.calls) {
      assert.equal(call.headers['X-Client-Version'], CLIENT_VERSION);
      assert.equal(call.headers['Authorization'], 'Bearer tok');
      assert.deepEqual(call.body, { name: 'w' });
    }
  });

  it('gives every POST its own Idempotency-Key and none to GET', async () => {
    const fake = fakeFetch([ok(workspace, 201), ok(workspace, 201), ok({ ...workspace, sandboxes: [] })]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 'tok', fetch: fake.fetch });
    await client.workspaces.create({ name: 'a' });
    await client.workspaces.create({ name: 'b' });
    await client.workspaces.get('ws_abcdefghij');
    assert.notEqual(fake.calls[0]!.headers['Idempotency-Key'], fake.calls[1]!.headers['Idempotency-Key']);
    assert.equal(fake.calls[2]!.headers['Idempotency-Key'], undefined);
  });

  it('retries 503 with backoff when there is no Retry-After', async () => {
    const fake = fakeFetch([fail(503, 'SERVICE_UNAVAILABLE'), ok({ status: 'healthy' })]);
    const client = new AInTandemClient({ baseUrl: BASE, fetch: fake.fetch });
    assert.equal((await client.system.health()).status, 'healthy');
    assert.equal(fake.calls.length, 2);
  });

  it('stops after maxRetries and throws the typed error with retryAfter', async () => {
    const fake = fakeFetch(() => fail(429, 'RATE_LIMIT_EXCEEDED', { headers: { 'retry-after': '0' } }));
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch, maxRetries: 2 });
    const err = await client.workspaces.get('ws_abcdefghij').catch((e: unknown) => e);
    assert.ok(err instanceof RateLimitExceededError);
    assert.equal(err.status, 429);
    assert.equal(err.retryAfter, 0);
    assert.equal(fake.calls.length, 3);
  });

  it('does not wait for a Retry-After beyond maxRetryDelayMs', async () => {
    const fake = fakeFetch(() => fail(429, 'RATE_LIMIT_EXCEEDED', { headers: { 'retry-after': '3600' } }));
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch, maxRetryDelayMs: 5_000 });
    const started = Date.now();
    const err = await client.workspaces.get('ws_abcdefghij').catch((e: unknown) => e);
    assert.ok(err instanceof RateLimitExceededError);
    assert.equal(err.retryAfter, 3600);
    assert.equal(fake.calls.length, 1);
    assert.ok(Date.now() - started < 1_000);
  });

  it('retries a 409 for an Idempotency-Key still in flight after Retry-After, with the same key', async () => {
    const inFlight = fail(
      409,
      'RESOURCE_ALREADY_EXISTS',
      { headers: { 'retry-after': '1' } },
      { field: 'Idempotency-Key', state: 'in_flight', retry_after_seconds: 1 },
    );
    const fake = fakeFetch([inFlight, ok(workspace, 201)]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch });
    const created = await client.workspaces.create({ name: 'w' });
    assert.equal(created.id, 'ws_abcdefghij');
    assert.equal(fake.calls.length, 2);
    const [a, b] = fake.calls as [Call, Call];
    assert.ok(b.at - a.at >= 950, `waited ${b.at - a.at} ms, Retry-After said 1 s`);
    assert.equal(a.headers['Idempotency-Key'], b.headers['Idempotency-Key']);

    // Bounded like the others, and the last answer is thrown with its details.
    const always = fakeFetch(() => ({ ...inFlight, headers: { 'retry-after': '0' } }));
    const bounded = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: always.fetch, maxRetries: 1 });
    const err = await bounded.workspaces.create({ name: 'w' }).catch((e: unknown) => e);
    assert.ok(err instanceof AInTandemError);
    assert.equal(err.code, 'RESOURCE_ALREADY_EXISTS');
    assert.equal(err.details['state'], 'in_flight');
    assert.equal(always.calls.length, 2);
  });

  it('does not retry a 409 RESOURCE_ALREADY_EXISTS that is a real conflict', async () => {
    const fake = fakeFetch(() => fail(409, 'RESOURCE_ALREADY_EXISTS', { headers: { 'retry-after': '0' } }));
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch });
    const err = await client.workspaces.create({ name: 'w' }).catch((e: unknown) => e);
    assert.ok(err instanceof AInTandemError);
    assert.equal(err.code, 'RESOURCE_ALREADY_EXISTS');
    assert.equal(fake.calls.length, 1);
  });

  it('does not retry other errors', async () => {
    const fake = fakeFetch([fail(409, 'SANDBOX_NOT_READY')]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch });
    const err = await client.sandboxes.fromId('sb_abcdefghij').restart().catch((e: unknown) => e);
    assert.ok(err instanceof SandboxNotReadyError);
    assert.ok(err instanceof AInTandemError);
    assert.equal(fake.calls.length, 1);
  });

  it('retries a GET after a connection error, then reports it as ConnectionError', async () => {
    let n = 0;
    const client = new AInTandemClient({
      baseUrl: BASE,
      apiKey: 't',
      maxRetries: 1,
      fetch: async () => {
        n++;
        throw new TypeError('fetch failed');
      },
    });
    const err = await client.system.info().catch((e: unknown) => e);
    assert.ok(err instanceof AInTandemError);
    assert.equal((err as AInTandemError).name, 'ConnectionError');
    assert.equal((err as AInTandemError).status, 0);
    assert.equal(n, 2);
  });
  it('resends a POST after a connection error only when the server honours its Idempotency-Key', async () => {
    const keys: (string | undefined)[] = [];
    let n = 0;
    const client = new AInTandemClient({
      baseUrl: BASE,
      apiKey: 't',
      maxRetries: 2,
      fetch: async (_url, init) => {
        keys.push((init.headers as Record<string, string>)['Idempotency-Key']);
        if (n++ === 0) throw new TypeError('socket hang up');
        return new Response(JSON.stringify({ success: true, data: { message_id: 'msg_abcdefghij', status: 'queued', timestamp: 'x' }, meta }), { status: 202 });
      },
    });
    const sent = await client.sandboxes.fromId('sb_abcdefghij').sendMessage('other', { a: 1 });
    assert.equal(sent.message_id, 'msg_abcdefghij');
    assert.equal(keys.length, 2);
    assert.equal(keys[0], keys[1]);
    n = 0;
    keys.length = 0;
    const err = await client.workspaces.create({ name: 'w' }).catch((e: unknown) => e);
    assert.equal((err as AInTandemError).name, 'ConnectionError');
    assert.equal(keys.length, 1, 'creating a workspace twice is not safe: not resent');
  });
});

describe('errors', () => {
  it('maps codes to classes carrying status, code, message, details and requestId', async () => {
    const details = { fields: [{ field: 'name', message: 'too short', location: 'body' }] };
    const fake = fakeFetch([fail(422, 'VALIDATION_ERROR', {}, details), fail(404, 'RESOURCE_NOT_FOUND'), fail(418, 'SOMETHING_NEW')]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch });
    const v = await client.workspaces.create({ name: '' }).catch((e: unknown) => e);
    assert.ok(v instanceof ValidationError);
    assert.equal(v.status, 422);
    assert.equal(v.code, 'VALIDATION_ERROR');
    assert.equal(v.message, 'VALIDATION_ERROR happened');
    assert.equal(v.requestId, 'rid-422');
    assert.deepEqual(v.fields, details.fields);
    assert.equal(v.name, 'ValidationError');
    const nf = await client.workspaces.get('ws_x').catch((e: unknown) => e);
    assert.ok(nf instanceof ResourceNotFoundError);
    const unknown = await client.workspaces.get('ws_y').catch((e: unknown) => e);
    assert.ok(unknown instanceof AInTandemError);
    assert.equal((unknown as AInTandemError).code, 'SOMETHING_NEW');
  });
});

describe('tokens', () => {
  it('logs in lazily, then refreshes once after a 401 and replays the call', async () => {
    const login = { access_token: 'a1', refresh_token: 'r1', token_type: 'Bearer', expires_in: 3600, user: {} };
    const fake = fakeFetch([
      ok(login),
      fail(401, 'AUTHENTICATION_FAILED'),
      ok({ access_token: 'a2', refresh_token: 'r2', expires_in: 3600 }),
      ok({ ...workspace, sandboxes: [] }),
    ]);
    const client = new AInTandemClient({ baseUrl: BASE, email: 'e@x.io', password: 'pw', fetch: fake.fetch });
    await client.workspaces.get('ws_abcdefghij');
    assert.deepEqual(fake.calls.map((c) => `${c.method} ${new URL(c.url).pathname}`), [
      'POST /api/v1/auth/login',
      'GET /api/v1/workspaces/ws_abcdefghij',
      'POST /api/v1/auth/refresh',
      'GET /api/v1/workspaces/ws_abcdefghij',
    ]);
    assert.deepEqual(fake.calls[2]!.body, { refresh_token: 'r1' });
    assert.equal(fake.calls[3]!.headers['Authorization'], 'Bearer a2');
    assert.equal(client.http.tokens.refreshToken, 'r2');
  });

  it('an apiKey is never refreshed: a 401 is thrown', async () => {
    const fake = fakeFetch([fail(401, 'AUTHENTICATION_FAILED')]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 'stale', fetch: fake.fetch });
    const err = await client.workspaces.get('ws_abcdefghij').catch((e: unknown) => e);
    assert.ok(err instanceof AuthenticationFailedError);
    assert.equal(fake.calls.length, 1);
  });

  it('rejects ambiguous credentials', () => {
    assert.throws(() => new AInTandemClient({ baseUrl: BASE, apiKey: 'k', email: 'e', password: 'p' } as never), TypeError);
    assert.throws(() => new AInTandemClient({ baseUrl: BASE, email: 'e' } as never), TypeError);
  });
});

describe('pagination', () => {
  it('follows has_next and de-duplicates items that shift between pages', async () => {
    const page = (items: string[], n: number, hasNext: boolean): Reply => ({
      status: 200,
      body: {
        success: true,
        data: items.map((id) => ({ workspace_id: id, name: id })),
        meta: { ...meta, total: 5, page: n, per_page: 2, total_pages: 3, has_next: hasNext, has_prev: n > 1 },
      },
    });
    const fake = fakeFetch([page(['a', 'b'], 1, true), page(['b', 'c'], 2, true), page(['d'], 3, false)]);
    const client = new AInTandemClient({ baseUrl: BASE, apiKey: 't', fetch: fake.fetch });
    const ids: string[] = [];
    for await (const w of client.workspaces.list({ per_page: 2 })) ids.push(w.id);
    assert.deepEqual(ids, ['a', 'b', 'c', 'd']);
    assert.deepEqual(
      fake.calls.map((c) => new URL(c.url).search),
      ['?per_page=2&page=1', '?per_page=2&page=2', '?per_page=2&page=3'],
    );
  });
});

describe('package', () => {
  it('VERSION matches package.json and is sent as X-Client-Version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    assert.equal(VERSION, pkg.version);
    assert.equal(CLIENT_VERSION, `typescript/${pkg.version}`);
    assert.deepEqual(pkg.dependencies ?? {}, {}, 'no runtime dependencies');
  });

  it('an unhealthy health check is a ServiceUnavailableError once retries are spent', async () => {
    const fake = fakeFetch(() => fail(503, 'SERVICE_UNAVAILABLE', { headers: { 'retry-after': '0' } }));
    const client = new AInTandemClient({ baseUrl: BASE, fetch: fake.fetch, maxRetries: 1 });
    await assert.rejects(client.system.health(), ServiceUnavailableError);
  });
});
