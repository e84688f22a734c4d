/** Against the live stack: orchestrate, get, cancel, watch (WebSocket and polling), wait. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  AInTandemClient,
  CollaborationFailedError,
  EventStream,
  InternalError,
  ResourceNotFoundError,
  ValidationError,
  type CollaborationData,
  type Sandbox,
  type StreamFrame,
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

  it('orchestrate, cancel, get; watch() and wait() end at the terminal state', async (t) => {
    const collaboration = await client.collaborations.orchestrate(workspace.id, {
      task: 'Design a login form and its API',
      participants: ['frontend-team', 'backend-team'],
      collaboration_mode: 'orchestrated',
      timeout: 300,
      deliverables: ['frontend_components', 'backend_api'],
    });
    // At once, before the first step's agent turn starts.
    const answer = await collaboration.cancel('enough for a test').catch((e: unknown) => {
      // Under load the first agent turn may already run: then the server's cancel hits the bug
      // named in the todo test below. Known, reported: shown as a failing TODO, not a failure.
      if (e instanceof InternalError) t.todo(`server bug: POST /collaborations/{id}/cancel answered 500 (${e.requestId})`);
      throw e;
    });
    assert.equal(answer.collaboration_id, collaboration.id);
    assert.equal(answer.cancel_requested, true);
    assert.match(collaboration.id, /^col_[a-z0-9]{10}$/);
    assert.equal(collaboration.accepted.status, 'initializing');
    assert.deepEqual([...collaboration.accepted.participants].sort(), [a.id, b.id].sort());
    assert.equal(collaboration.accepted.collaboration_mode, 'orchestrated');

    const snapshots: CollaborationData[] = [];
    for await (const snapshot of collaboration.watch({ timeoutMs: 60_000 })) snapshots.push(snapshot);
    const last = snapshots.at(-1)!;
    assert.equal(last.status, 'cancelled');
    assert.equal(last.collaboration_id, collaboration.id);
    assert.equal(last.workspace_id, workspace.id);
    assert.equal(last.task, 'Design a login form and its API');
    assert.deepEqual(last.participants.map((p) => p.sandbox_id).sort(), [a.id, b.id].sort());
    assert.ok(last.progress.percentage >= 0 && last.progress.percentage <= 100);
    assert.equal((await collaboration.wait()).status, 'cancelled');
    const polled = await client.collaborations.wait(collaboration.id, { useWebSocket: false });
    assert.equal(polled.status, 'cancelled');

    // Cancelling a finished collaboration is refused with the spec's code.
    const again = await collaboration.cancel().catch((e: unknown) => e);
    assert.ok(again instanceof CollaborationFailedError, String(again));
    assert.equal(again.status, 409);
  });

  it('wait() follows WS /ws/collaborations/{id} to the end (completed, or CollaborationFailedError)', async () => {
    const collaboration = await client.collaborations.orchestrate(workspace.id, {
      task: 'Agree on a name for the login endpoint. One short sentence each.',
      participants: [a.id, b.id],
      collaboration_mode: 'peer_to_peer',
      timeout: 60,
      max_turns: 2,
    });
    const frames: StreamFrame[] = [];
    const raw = new EventStream(client.http, `/ws/collaborations/${collaboration.id}`, null);
    const reading = (async () => {
      for await (const frame of raw) frames.push(frame);
    })();
    const polled = client.collaborations.wait(collaboration.id, { useWebSocket: false, intervalMs: 1_000 }).catch((e: unknown) => e);
    let final: CollaborationData;
    try {
      final = await collaboration.wait({ timeoutMs: 240_000 });
      assert.ok(final.status === 'completed' || final.status === 'cancelled', final.status);
      assert.ok(final.completed_at);
    } catch (err) {
      assert.ok(err instanceof CollaborationFailedError, String(err));
      final = err.details as unknown as CollaborationData;
      assert.equal(final.status, 'failed');
      assert.ok(final.error, 'a failed collaboration says why');
    }
    assert.equal(final.collaboration_id, collaboration.id);
    raw.close();
    await reading;
    assert.ok(frames.some((f) => f.channel === 'collaboration'), `collaboration frames: ${frames.map((f) => `${f.channel}/${f.event}`).join(' ')}`);
    const viaPolling = await polled;
    const pollStatus = viaPolling instanceof CollaborationFailedError ? (viaPolling.details['status'] as string) : (viaPolling as CollaborationData).status;
    assert.equal(pollStatus, final.status);
  });

  it(
    'cancel while a step is running answers promptly; the collaboration ends cancelled',
    {
      todo:
        'server bug (api/services/collaborations.py cancel): when the update outlasts CANCEL_WAIT_SECONDS, ' +
        'asyncio.wait_for surfaces temporalio WorkflowUpdateRPCTimeoutOrCancelledError, not TimeoutError: 500',
    },
    async () => {
    const collaboration = await client.collaborations.orchestrate(workspace.id, {
      task: 'Design a login form and its API',
      participants: ['frontend-team', 'backend-team'],
      collaboration_mode: 'orchestrated',
      timeout: 120,
    });
    const quick = new AInTandemClient({ baseUrl: client.baseUrl, apiKey: client.auth.accessToken!, timeoutMs: 20_000, maxRetries: 0 });
    for (;;) {
      const now = await collaboration.get();
      if (now.messages.some((m) => m.status === 'delivered')) break; // an agent turn is running
      assert.equal(now.completed_at, null, 'finished before its first turn');
      await new Promise((r) => setTimeout(r, 300));
    }
    const answer = await quick.collaborations.cancel(collaboration.id, 'mid-step');
    assert.equal(answer.cancel_requested, true);
    assert.ok(['cancelled', 'in_progress'].includes(answer.status), answer.status);
    assert.equal((await collaboration.wait({ timeoutMs: 180_000 })).status, 'cancelled');
    },
  );

  it('typed errors: unknown collaboration, invalid request', async () => {
    await assert.rejects(client.collaborations.get('col_0000000000'), ResourceNotFoundError);
    const invalid = await client.collaborations
      .orchestrate(workspace.id, { task: 'x', participants: ['frontend-team'], collaboration_mode: 'swarm', timeout: 5 })
      .catch((e: unknown) => e);
    assert.ok(invalid instanceof ValidationError, String(invalid));
    assert.deepEqual(invalid.fields.map((f) => f.field).sort(), ['participants', 'timeout']);
  });
});
