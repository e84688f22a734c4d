/** Against the live stack: orchestrate, get, cancel, watch (WebSocket and polling), wait. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  AInTandemClient,
  CollaborationFailedError,
  ResourceNotFoundError,
  TERMINAL_COLLABORATION_STATUSES,
  ValidationError,
  type CollaborationData,
  type Sandbox,
  type Workspace,
} from '@aintandem/sdk';
import { collaborationRoutes } from './collab_routes.js';
import { LIVE, NO_STACK, newUser, sandboxConfig } from './helpers.js';

const { missing } = LIVE ? await collaborationRoutes() : { missing: [] as string[] };
const SKIP = NO_STACK || (missing.length ? `the server has no ${missing.join(', ')} route yet` : false);

describe('collaborations', { skip: SKIP, timeout: 600_000 }, () => {
  let client: AInTandemClient;
  let workspace: Workspace;
  let a: Sandbox;
  let b: Sandbox;

  before(async () => {
    ({ client } = await newUser('collab'));
    workspace = await client.workspaces.create({ name: 'collaborations' });
    a = await client.sandboxes.create(workspace.id, sandboxConfig('frontend-team', 'Frontend Architect'));
    b = await client.sandboxes.create(workspace.id, sandboxConfig('backend-team', 'Backend Architect'));
    await a.waitUntil('running');
    await b.waitUntil('running');
  });

  after(async () => {
    if (workspace) await client.workspaces.delete(workspace.id).catch(() => undefined);
  });

  it('orchestrate, get, cancel; watch() follows the WebSocket to the terminal state', async () => {
    const started = Date.now();
    const collaboration = await client.collaborations.orchestrate(workspace.id, {
      task: 'Design a login form and its API',
      participants: ['frontend-team', 'backend-team'],
      collaboration_mode: 'orchestrated',
      timeout: 300,
      deliverables: ['frontend_components', 'backend_api'],
    });
    assert.match(collaboration.id, /^col_[a-z0-9]{10}$/);
    assert.equal(collaboration.accepted.status, 'initializing');
    assert.deepEqual([...collaboration.accepted.participants].sort(), [a.id, b.id].sort());
    assert.equal(collaboration.accepted.collaboration_mode, 'orchestrated');

    const detail = await collaboration.get();
    assert.equal(detail.collaboration_id, collaboration.id);
    assert.equal(detail.workspace_id, workspace.id);
    assert.equal(detail.task, 'Design a login form and its API');
    assert.ok(detail.progress.percentage >= 0 && detail.progress.percentage <= 100);
    assert.deepEqual(detail.participants.map((p) => p.sandbox_id).sort(), [a.id, b.id].sort());

    const snapshots: CollaborationData[] = [];
    const polled: CollaborationData[] = [];
    const polling = (async () => {
      for await (const s of client.collaborations.watch(collaboration.id, { useWebSocket: false, intervalMs: 500 })) polled.push(s);
    })();
    let cancelled = false;
    for await (const snapshot of collaboration.watch({ timeoutMs: 120_000 })) {
      snapshots.push(snapshot);
      if (!cancelled) {
        cancelled = true;
        const answer = await collaboration.cancel('enough for a test').catch(async (e: unknown) => {
          const now = JSON.stringify(await collaboration.get()).slice(0, 2000);
          return assert.fail(`cancel refused (${String(e)}) ${Date.now() - started} ms after orchestrate: ${now}`);
        });
        assert.equal(answer.collaboration_id, collaboration.id);
      }
    }
    await polling;
    const last = snapshots.at(-1)!;
    assert.ok(TERMINAL_COLLABORATION_STATUSES.includes(last.status), last.status);
    assert.equal(polled.at(-1)!.status, last.status);
    // Already finished: wait() answers at once with the same terminal snapshot.
    if (last.status !== 'failed') assert.equal((await collaboration.wait()).status, last.status);
    // Cancelling a finished collaboration is refused with the spec's code.
    const again = await collaboration.cancel().catch((e: unknown) => e);
    assert.ok(again instanceof CollaborationFailedError, String(again));
    assert.equal(again.status, 409);
  });

  it('wait() resolves with the finished collaboration, or throws CollaborationFailedError', async () => {
    const collaboration = await client.collaborations.orchestrate(workspace.id, {
      task: 'Agree on a name for the login endpoint. One short sentence each.',
      participants: [a.id, b.id],
      collaboration_mode: 'peer_to_peer',
      timeout: 60,
      max_turns: 2,
    });
    let final: CollaborationData;
    try {
      final = await collaboration.wait({ timeoutMs: 240_000 });
      assert.equal(final.status === 'completed' || final.status === 'cancelled', true);
      assert.ok(final.completed_at);
    } catch (err) {
      assert.ok(err instanceof CollaborationFailedError, String(err));
      final = err.details as unknown as CollaborationData;
      assert.equal(final.status, 'failed');
      assert.ok(final.error, 'a failed collaboration says why');
    }
    assert.equal(final.collaboration_id, collaboration.id);
  });

  it('typed errors: unknown collaboration, invalid request', async () => {
    await assert.rejects(client.collaborations.get('col_0000000000'), ResourceNotFoundError);
    const invalid = await client.collaborations
      .orchestrate(workspace.id, { task: 'x', participants: ['frontend-team'], collaboration_mode: 'swarm', timeout: 5 })
      .catch((e: unknown) => e);
    assert.ok(invalid instanceof ValidationError, String(invalid));
    assert.deepEqual(invalid.fields.map((f) => f.field).sort(), ['participants', 'timeout']);
  });
});
