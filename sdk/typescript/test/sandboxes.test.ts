/** Against the live stack (real Docker containers): the Sandbox object, messages, streams. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  AInTandemClient,
  MessageDeliveryFailedError,
  ResourceNotFoundError,
  Sandbox,
  SandboxNotReadyError,
  ValidationError,
  type StreamFrame,
  type Workspace,
} from '@aintandem/sdk';
import { eventually, NO_STACK, newUser, sandboxConfig } from './helpers.js';
import { assertDeclaredShape } from './shapes.js';

describe('sandboxes', { skip: NO_STACK, timeout: 600_000 }, () => {
  let client: AInTandemClient;
  let workspace: Workspace;
  let frontend: Sandbox;
  let backend: Sandbox;

  before(async () => {
    ({ client } = await newUser('sandboxes'));
    workspace = await client.workspaces.create({ name: 'sandboxes' });
    frontend = await client.sandboxes.create(workspace.id, sandboxConfig('frontend-team', 'Frontend Architect'));
    backend = await client.sandboxes.create(workspace.id, sandboxConfig('backend-team', 'Backend Architect'));
  });

  after(async () => {
    if (workspace) await client.workspaces.delete(workspace.id).catch(() => undefined);
  });

  it('create returns a Sandbox handle that reaches running', async () => {
    assert.ok(frontend instanceof Sandbox);
    assert.match(frontend.id, /^sb_[a-z0-9]{10}$/);
    assert.equal(frontend.name, 'frontend-team');
    assert.equal(frontend.workspaceId, workspace.id);
    assert.equal(frontend.status, 'provisioning');
    // A new sandbox starts by itself: start() on it resolves instead of the server's 409.
    assert.ok(['provisioning', 'starting', 'running'].includes((await frontend.start()).status));
    const detail = await frontend.waitUntil('running', { timeoutMs: 120_000 });
    assert.equal(detail.status, 'running');
    assert.equal(frontend.status, 'running');
    assert.ok(detail.started_at);
    await backend.waitUntil('running', { timeoutMs: 120_000 });

    const listed = await client.workspaces.listSandboxes(workspace.id);
    assert.deepEqual(listed.map((s) => s.name).sort(), ['backend-team', 'frontend-team']);
    assert.ok(listed.every((s) => s instanceof Sandbox));
    const running = await client.sandboxes.list(workspace.id, { status: 'running', per_page: 1 });
    assert.equal(running.length, 2, 'two pages of one');
    const fetched = await client.sandboxes.get(frontend.id);
    assert.equal(fetched.name, 'frontend-team');
  });

  it('status, logs, metrics and config', async () => {
    const status = await frontend.getStatus();
    assertDeclaredShape('SandboxStatus', status);
    assert.equal(status.status, 'running');
    assert.equal(status.resources.memory_mb.allocated, 256);

    const logs = await eventually(async () => {
      const l = await frontend.getLogs({ limit: 50 });
      return l.logs.length > 0 && l;
    }, 60_000, 'log lines');
    assert.equal(logs.sandbox_id, frontend.id);
    assert.ok(logs.logs.every((e) => typeof e.message === 'string' && e.timestamp));

    const metrics = await eventually(async () => {
      const m = await frontend.getMetrics();
      return m.resources !== null && m;
    }, 60_000, 'a metrics sample');
    assertDeclaredShape('SandboxMetrics', metrics);
    assert.equal(metrics.sandbox_id, frontend.id);
    assert.equal(typeof metrics.messaging.messages_sent, 'number');

    const config = await frontend.getConfig();
    assert.equal(config.sandbox_id, frontend.id);
    assert.equal(config.agent_config.primary_agent.name, 'frontend-team-agent');
    const changed = await frontend.updateConfig({
      resources: { memory_mb: 384 },
      environment_variables: { NODE_ENV: 'production' },
    });
    assert.equal(changed.resources.memory_mb, 384);
    assert.deepEqual(Object.keys(changed.environment_variables), ['NODE_ENV']);

    const agents = await client.workspaces.discoverAgents(workspace.id, { capability: 'api design' });
    assert.deepEqual(agents.agents.map((a) => a.sandbox_name).sort(), ['backend-team', 'frontend-team']);
  });

  it('stream() receives real events, and resumes from the last event id', { timeout: 60_000 }, async () => {
    const stream = frontend.stream(['messages']);
    await stream.ready;
    const sent = await frontend.sendMessage('backend-team', { task: 'Design the auth API' }, { priority: 7 });
    const frames: StreamFrame[] = [];
    for await (const frame of stream) {
      frames.push(frame);
      if (frame.event === 'message_queued' && frame.data['message_id'] === sent.message_id) break;
    }
    const queued = frames.at(-1)!;
    assert.equal(queued.channel, 'messages');
    assert.equal(typeof queued.id, 'number');
    assert.ok(queued.timestamp);
    assert.equal(stream.lastEventId, queued.id);
    assert.ok(frames.every((f) => f.channel === 'messages'), 'only the subscribed channel');

    // Closed; meanwhile another message; a stream resumed from the last id replays it.
    const missed = await frontend.sendMessage('backend-team', { task: 'while away' });
    const resumed = frontend.stream(['messages'], { lastEventId: queued.id });
    let replayed: StreamFrame | undefined;
    for await (const frame of resumed) {
      assert.ok(frame.id! > queued.id!, 'nothing at or before the resume point');
      if (frame.event === 'message_queued' && frame.data['message_id'] === missed.message_id) {
        replayed = frame;
        break;
      }
    }
    assert.ok(replayed);
  });

  it('stream() on an unknown sandbox fails with ResourceNotFoundError', { timeout: 60_000 }, async () => {
    const stream = client.sandboxes.fromId('sb_0000000000').stream(['events']);
    await assert.rejects(stream.ready, ResourceNotFoundError);
    await assert.rejects(async () => {
      for await (const _ of stream) assert.fail('no frames expected');
    }, ResourceNotFoundError);
  });

  it('sendMessage / getMessages / messages.get / broadcast', async () => {
    const accepted = await frontend.sendMessage(
      backend.id,
      { task: 'Design user authentication API', context: 'OAuth2' },
      { message_type: 'request', priority: 7, to_agent: 'backend-team-agent' },
    );
    assert.match(accepted.message_id, /^msg_[a-z0-9]{10}$/);
    assert.equal(accepted.status, 'queued');

    const delivered = await eventually(async () => {
      const m = await client.messages.get(accepted.message_id);
      return m.status === 'delivered' && m;
    }, 60_000, 'delivery');
    assert.equal(delivered.from_sandbox, frontend.id);
    assert.equal(delivered.to_sandbox, backend.id);
    assert.equal(delivered.priority, 7);
    assert.deepEqual(delivered.content, { task: 'Design user authentication API', context: 'OAuth2' });
    assert.equal(delivered.response, null);

    const sent = await frontend.getMessages({ direction: 'sent' });
    assert.ok(sent.messages.some((m) => m.message_id === accepted.message_id));
    const received = await backend.getMessages({ direction: 'received', limit: 100 });
    assert.ok(received.messages.some((m) => m.message_id === accepted.message_id));
    assert.equal(typeof received.meta.total, 'number');

    // The same Idempotency-Key answers with the first message.
    const key = `ts-${Date.now()}`;
    const first = await frontend.sendMessage('backend-team', { n: 1 }, { idempotencyKey: key });
    const again = await client.messages.send(frontend.id, 'backend-team', { n: 1 }, { idempotencyKey: key });
    assert.equal(again.message_id, first.message_id);

    const bc = await client.workspaces.broadcast(workspace.id, {
      from_sandbox: frontend.id,
      message_type: 'notification',
      content: { event: 'deployment_completed', version: 'v2.5.0' },
    });
    assert.match(bc.broadcast_id, /^bc_[a-z0-9]{10}$/);
    assert.deepEqual(bc.recipients, [backend.id]);

    // Retry is only for failed deliveries: a typed refusal.
    const refused = await client.messages.retry(accepted.message_id).catch((e: unknown) => e);
    assert.ok(refused instanceof MessageDeliveryFailedError, String(refused));
    assert.equal(refused.status, 409);
    const missing = await client.messages.get('msg_0000000000').catch((e: unknown) => e);
    assert.ok(missing instanceof ResourceNotFoundError);
    const invalid = await frontend.sendMessage('backend-team', { x: 1 }, { priority: 42 }).catch((e: unknown) => e);
    assert.ok(invalid instanceof ValidationError);
    assert.deepEqual(invalid.fields.map((f) => f.field), ['priority']);
  });

  it('approve, deny and retry under a policy that asks for approval', async () => {
    await client.workspaces.updateConfig(workspace.id, {
      collaboration_policy: {
        mode: 'allow_all',
        rules: [{ from: 'frontend-team', to: 'backend-team', message_types: ['command'], approval_required: true }],
      },
    });
    try {
      const held = await frontend.sendMessage('backend-team', { run: 'deploy' }, { message_type: 'command' });
      await eventually(async () => (await client.messages.get(held.message_id)).status === 'pending_approval', 30_000, 'pending_approval');
      const approved = await client.messages.approve(held.message_id, 'looks fine');
      assertDeclaredShape('MessageDecision', approved);
      assert.equal(approved.message_id, held.message_id);
      await eventually(async () => (await client.messages.get(held.message_id)).status === 'delivered', 60_000, 'delivery after approval');

      const refused = await frontend.sendMessage('backend-team', { run: 'drop tables' }, { message_type: 'command' });
      await eventually(async () => (await client.messages.get(refused.message_id)).status === 'pending_approval', 30_000, 'pending_approval');
      assertDeclaredShape('MessageDecision', await client.messages.deny(refused.message_id, 'no'));
      const failed = await eventually(async () => {
        const m = await client.messages.get(refused.message_id);
        return m.status === 'failed' && m;
      }, 60_000, 'failed after deny');
      assert.ok(failed.status_reason);

      const retried = await client.messages.retry(refused.message_id);
      assertDeclaredShape('MessageRetried', retried);
      assert.equal(retried.message_id, refused.message_id);
    } finally {
      await client.workspaces.updateConfig(workspace.id, { collaboration_policy: { mode: 'allow_all', rules: [] } });
    }
  });

  it('stop, start, restart, delete through the Sandbox object', async () => {
    const stopping = await backend.stop();
    assert.equal(stopping.sandbox_id, backend.id);
    await backend.waitUntil('stopped', { timeoutMs: 90_000 });
    // Already stopped: stop() resolves (idempotent); restart() is refused with a typed 409.
    assert.equal((await backend.stop()).status, 'stopped');
    const notReady = await backend.restart().catch((e: unknown) => e);
    assert.ok(notReady instanceof SandboxNotReadyError, String(notReady));
    assert.equal(notReady.status, 409);
    assert.equal(notReady.code, 'SANDBOX_NOT_READY');

    const starting = await backend.start();
    assert.equal(starting.status, 'starting');
    await backend.waitUntil('running', { timeoutMs: 90_000 });
    await backend.restart();
    await backend.waitUntil('running', { timeoutMs: 90_000 });

    await backend.delete();
    await assert.rejects(backend.refresh(), ResourceNotFoundError);
  });
});
