/** The spec's "TypeScript SDK Structure" example (api-endpoints.md), run as written. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AInTandemClient } from '@aintandem/sdk';
import { BASE_URL, NO_STACK, newUser, sandboxConfig } from './helpers.js';
import { collaborationRoutes } from './collab_routes.js';

describe('spec example', { skip: NO_STACK, timeout: 300_000 }, () => {
  it('runs as written (with the setup it needs)', async (t) => {
    // -- setup, not in the spec: a user whose access token is the apiKey; the base URL comes
    // from AINTANDEM_BASE_URL (the client's default); `config` for the sandbox.
    const { client: setupClient } = await newUser('example');
    await setupClient.system.info();
    await setupClient.workspaces.list().firstPage(); // logs in
    const apiKey = setupClient.auth.accessToken!;
    assert.equal(process.env['AINTANDEM_BASE_URL'], BASE_URL);
    const config = sandboxConfig('my-sandbox');

    // -- the spec's example --
    const client = new AInTandemClient({ apiKey: apiKey });

    // Workspaces
    const workspace = await client.workspaces.create({ name: 'My Workspace' });
    const sandboxes = await client.workspaces.listSandboxes(workspace.id);

    // Sandboxes
    const sandbox = await client.sandboxes.create(workspace.id, config);
    await sandbox.start();
    const status = await sandbox.getStatus();

    // setup, not in the spec: the message goes to 'other-sandbox', which must exist
    const other = await client.sandboxes.create(workspace.id, sandboxConfig('other-sandbox'));

    // Messages
    await sandbox.sendMessage('other-sandbox', { text: 'hello from the spec example' });
    const messages = await sandbox.getMessages();

    // -- what it did --
    assert.equal(client.baseUrl, BASE_URL);
    assert.equal(workspace.name, 'My Workspace');
    assert.deepEqual(sandboxes, []);
    assert.equal(status.sandbox_id, sandbox.id);
    assert.ok(['provisioning', 'starting', 'running'].includes(status.status), status.status);
    assert.equal(messages.messages.length, 1);
    assert.equal(messages.messages[0]!.to_sandbox, other.id);
    assert.deepEqual(messages.messages[0]!.content, { text: 'hello from the spec example' });

    // Collaboration (participants must be running first)
    const routes = await collaborationRoutes();
    if (routes.missing.length === 0) {
      await sandbox.waitUntil('running');
      await other.waitUntil('running');
      const collaboration = await client.collaborations.orchestrate(workspace.id, {
        task: 'Say hello to each other',
        participants: ['my-sandbox', 'other-sandbox'],
        collaboration_mode: 'orchestrated',
        timeout: 60,
      });
      assert.match(collaboration.id, /^col_[a-z0-9]{10}$/);
      assert.equal(collaboration.accepted.status, 'initializing');
      await collaboration.cancel('spec example done');
    } else {
      t.diagnostic(`collaboration step not run: the server lacks ${routes.missing.join(', ')}`);
    }
    await client.workspaces.delete(workspace.id);
  });
});
