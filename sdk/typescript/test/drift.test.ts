/** The SDK's declared response fields against the running server's OpenAPI document. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BASE_URL, NO_STACK } from './helpers.js';
import { declaredSchemas, drift, type OpenApi } from './shapes.js';

async function openapi(): Promise<OpenApi> {
  // The app serves it under the API prefix: {base}/openapi.json.
  const res = await fetch(`${BASE_URL}/openapi.json`);
  assert.equal(res.status, 200, `GET ${BASE_URL}/openapi.json`);
  return (await res.json()) as OpenApi;
}

describe('drift', { skip: NO_STACK, timeout: 60_000 }, () => {
  it('declares the schemas it claims to mirror', () => {
    const tags = [...declaredSchemas().keys()];
    for (const expected of ['WorkspaceOut', 'SandboxDetail', 'MessageOut', 'LoginResult', 'live:SandboxStatus']) {
      assert.ok(tags.includes(expected), `no @schema ${expected} in src/types.ts`);
    }
  });

  it('every declared field exists on the server, with the same optionality and nullability', async () => {
    const problems = drift(await openapi());
    assert.deepEqual(problems, [], `SDK types drifted from the server:\n  ${problems.join('\n  ')}`);
  });

  it('a renamed, added or re-typed server field is reported (the check can fail)', async () => {
    const doc = structuredClone(await openapi());
    const ws = doc.components.schemas['WorkspaceOut']!;
    ws.properties!['workspace_uid'] = ws.properties!['workspace_id']!;
    delete ws.properties!['workspace_id'];
    doc.components.schemas['MessageOut']!.properties!['new_field'] = { type: 'string' };
    doc.components.schemas['SandboxOut']!.properties!['name'] = { anyOf: [{ type: 'string' }, { type: 'null' }] };
    doc.components.schemas['NewThing'] = { properties: { a: { type: 'string' } }, required: ['a'] };
    doc.paths['/api/v1/new'] = {
      get: { responses: { '200': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Envelope_NewThing_' } } } } } },
    };
    const problems = drift(doc);
    const has = (text: string): boolean => problems.some((p) => p.includes(text));
    assert.ok(has('WorkspaceData.workspace_id: not in the server'), problems.join('\n'));
    assert.ok(has('WorkspaceOut.workspace_uid: sent by the server'), problems.join('\n'));
    assert.ok(has('MessageOut.new_field'), problems.join('\n'));
    assert.ok(has('SandboxData.name: may be null'), problems.join('\n'));
    assert.ok(has('GET /api/v1/new returns NewThing'), problems.join('\n'));
  });
});
