/** Against the live stack: authentication with refresh, workspace CRUD, pagination, typed errors. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AInTandemClient,
  AuthenticationFailedError,
  ResourceNotFoundError,
  ValidationError,
} from '@aintandem/sdk';
import { assertDeclaredShape } from './shapes.js';
import { BASE_URL, NO_STACK, newUser, PASSWORD, recordingFetch, uniqueEmail } from './helpers.js';

describe('auth', { skip: NO_STACK, timeout: 300_000 }, () => {
  it('registers, logs in, refreshes (rotating the refresh token) and logs out', async () => {
    const anon = new AInTandemClient({ baseUrl: BASE_URL });
    const email = uniqueEmail('auth');
    const user = await anon.auth.register({ email, password: PASSWORD, name: 'Auth Test', organization: 'Org' });
    assert.match(user.user_id, /^usr_[a-z0-9]{10}$/);
    assert.equal(user.email, email);
    assert.equal(user.organization, 'Org');

    const login = await anon.auth.login(email, PASSWORD);
    assert.equal(login.token_type, 'Bearer');
    assert.equal(login.user.user_id, user.user_id);
    assert.equal(anon.auth.accessToken, login.access_token);
    const firstRefresh = anon.http.tokens.refreshToken;

    const refreshed = await anon.auth.refresh();
    assert.notEqual(refreshed.refresh_token, firstRefresh);
    assert.equal(anon.auth.accessToken, refreshed.access_token);
    // The refreshed token works, through an apiKey-mode client too.
    const keyed = new AInTandemClient({ baseUrl: BASE_URL, apiKey: refreshed.access_token });
    assert.ok(Array.isArray(await keyed.workspaces.list()));

    // The rotated-out refresh token is spent: replaying it revokes the session (reuse detection).
    const replay = new AInTandemClient({ baseUrl: BASE_URL });
    replay.http.tokens.refreshToken = firstRefresh;
    await assert.rejects(replay.auth.refresh(), AuthenticationFailedError);
    const revoked = await keyed.workspaces.list().firstPage().catch((e: unknown) => e);
    assert.ok(revoked instanceof AuthenticationFailedError, String(revoked));

    // A new login, then logout: its token stops working.
    await anon.auth.login(email, PASSWORD);
    const second = new AInTandemClient({ baseUrl: BASE_URL, apiKey: anon.auth.accessToken! });
    await second.workspaces.list();
    await anon.auth.logout();
    assert.equal(anon.auth.accessToken, null);
    const err = await second.workspaces.list().firstPage().catch((e: unknown) => e);
    assert.ok(err instanceof AuthenticationFailedError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.code, 'AUTHENTICATION_FAILED');
  });

  it('wrong credentials are an AuthenticationFailedError', async () => {
    const client = new AInTandemClient({ baseUrl: BASE_URL, email: uniqueEmail('nobody'), password: 'wrong-password' });
    await assert.rejects(client.workspaces.list().firstPage(), AuthenticationFailedError);
  });

  it('email/password mode logs in lazily and refreshes after a 401 and before expiry', async () => {
    const rec = recordingFetch();
    const { client } = await newUser('refresh', { fetch: rec.fetch });
    await client.workspaces.create({ name: 'one' });
    assert.deepEqual(paths(rec.calls).slice(0, 2), ['POST /auth/login', 'POST /workspaces']);

    // A token the server refuses (as after expiry): one refresh, then the call succeeds.
    client.http.tokens.accessToken = 'not-a-valid-token';
    rec.calls.length = 0;
    const listed = await client.workspaces.list();
    assert.equal(listed.length, 1);
    assert.deepEqual(paths(rec.calls), ['GET /workspaces', 'POST /auth/refresh', 'GET /workspaces']);
    assert.notEqual(client.http.tokens.accessToken, 'not-a-valid-token');

    // Close to expiry: refreshed before the call, no 401 needed.
    client.http.tokens.expiresAt = Date.now() + 5_000;
    rec.calls.length = 0;
    await client.workspaces.list();
    assert.deepEqual(paths(rec.calls), ['POST /auth/refresh', 'GET /workspaces']);

    // A spent refresh token: the client logs in again with its credentials.
    client.http.tokens.accessToken = 'not-a-valid-token';
    client.http.tokens.refreshToken = 'spent';
    rec.calls.length = 0;
    await client.workspaces.list();
    assert.deepEqual(paths(rec.calls), ['GET /workspaces', 'POST /auth/refresh', 'POST /auth/login', 'GET /workspaces']);
    for (const call of rec.calls) {
      assert.match(call.headers['X-Request-ID']!, /^[0-9a-f-]{36}$/);
      assert.match(call.headers['X-Client-Version']!, /^typescript\/\d+\.\d+\.\d+$/);
    }
  });
});

describe('workspaces', { skip: NO_STACK, timeout: 300_000 }, () => {
  it('create, get, update, config, discover, metrics, delete', async () => {
    const { client } = await newUser('crud');
    const ws = await client.workspaces.create({
      name: 'E-commerce Development',
      description: 'AI agents for e-commerce platform',
      settings: { max_sandboxes: 10, default_llm_provider: 'qwen' },
    });
    assert.equal(ws.id, ws.workspace_id);
    assert.match(ws.id, /^ws_[a-z0-9]{10}$/);
    assert.equal(ws.settings.max_sandboxes, 10);
    assert.equal(ws.sandbox_count, 0);

    const detail = await client.workspaces.get(ws.id);
    assert.equal(detail.name, 'E-commerce Development');
    assert.deepEqual(detail.sandboxes, []);

    const updated = await client.workspaces.update(ws.id, { name: 'Renamed', settings: { max_sandboxes: 20 } });
    assert.equal(updated.name, 'Renamed');
    assert.equal(updated.settings.max_sandboxes, 20);
    assert.equal(updated.description, 'AI agents for e-commerce platform');

    const config = await client.workspaces.updateConfig(ws.id, {
      llm_providers: [{ name: 'qwen', api_key: '${DASHSCOPE_API_KEY}', models: ['qwen-plus'], default_model: 'qwen-plus' }],
      collaboration_policy: { mode: 'allow_all', rules: [] },
    });
    assert.equal(config.llm_providers[0]?.name, 'qwen');
    assert.equal(config.llm_providers[0]?.api_key_set, true);
    const again = await client.workspaces.getConfig(ws.id);
    assert.equal(again.workspace_id, ws.id);
    assert.equal(again.settings.max_sandboxes, 20);

    assert.deepEqual((await client.workspaces.discoverAgents(ws.id, { capability: 'api design' })).agents, []);
    const aggregate = await client.workspaces.aggregateMetrics(ws.id, { granularity: 'minute' });
    assertDeclaredShape('MetricsAggregate', aggregate);
    assert.equal(aggregate.summary.total_sandboxes, 0);

    await client.workspaces.delete(ws.id);
    const gone = await client.workspaces.get(ws.id).catch((e: unknown) => e);
    assert.ok(gone instanceof ResourceNotFoundError, String(gone));
    assert.equal(gone.status, 404);
    assert.equal(gone.code, 'RESOURCE_NOT_FOUND');
    assert.match(gone.requestId ?? '', /^[0-9a-f-]{36}$/, 'requestId from the error envelope');
  });

  it('auto-paginates the list', async () => {
    const { client } = await newUser('pages');
    const names = ['p1', 'p2', 'p3', 'p4', 'p5'];
    for (const name of names) await client.workspaces.create({ name });

    const seen: string[] = [];
    for await (const ws of client.workspaces.list({ per_page: 2, order: 'asc' })) seen.push(ws.name);
    assert.deepEqual(seen, names);

    const pages = [];
    for await (const page of client.workspaces.list({ per_page: 2 }).pages()) pages.push(page);
    assert.deepEqual(pages.map((p) => p.items.length), [2, 2, 1]);
    assert.deepEqual(pages.map((p) => [p.meta.page, p.meta.has_next, p.meta.has_prev]), [
      [1, true, false],
      [2, true, true],
      [3, false, true],
    ]);
    assert.equal(pages[0]!.meta.total, 5);
    assert.equal(pages[0]!.meta.total_pages, 3);

    const all = await client.workspaces.list({ per_page: 3 });
    assert.deepEqual(all.map((w) => w.name).sort(), names);
    const searched = await client.workspaces.list({ search: 'p3' });
    assert.deepEqual(searched.map((w) => w.name), ['p3']);
  });

  it('422 carries per-field details', async () => {
    const { client } = await newUser('invalid');
    const err = await client.workspaces
      .create({ name: '', settings: { max_sandboxes: 0 } })
      .catch((e: unknown) => e);
    assert.ok(err instanceof ValidationError, String(err));
    assert.equal(err.status, 422);
    assert.equal(err.code, 'VALIDATION_ERROR');
    assert.ok(err.requestId);
    const fields = err.fields.map((f) => f.field).sort();
    assert.deepEqual(fields, ['name', 'settings.max_sandboxes']);
    assert.ok(err.fields.every((f) => typeof f.message === 'string' && f.message.length > 0));
  });

  it('system health and info', async () => {
    const client = new AInTandemClient({ baseUrl: BASE_URL });
    const health = await client.system.health();
    assert.equal(health.status, 'healthy');
    assertDeclaredShape('SystemHealth', health);
    const info = await client.system.info();
    assert.equal(info.edition, 'community');
    assertDeclaredShape('SystemInfo', info);
  });
});

function paths(calls: { method: string; url: string }[]): string[] {
  return calls.map((c) => `${c.method} ${new URL(c.url).pathname.replace(/^\/api\/v1/, '')}`);
}
