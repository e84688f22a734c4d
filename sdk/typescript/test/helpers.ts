/** Shared by the test files: the live stack's URL, fresh users, the `ws` WebSocket for Node 20. */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import {
  AInTandemClient,
  type ClientOptions,
  type SandboxConfig,
  type WebSocketConstructor,
} from '@aintandem/sdk';

export const BASE_URL = process.env['AINTANDEM_BASE_URL'] ?? '';
/** Live tests need the stack that tests/sdk_ts/test_typescript_sdk.py starts. */
export const LIVE = BASE_URL !== '';
export const NO_STACK = LIVE ? false : 'AINTANDEM_BASE_URL is not set (run through pytest tests/sdk_ts)';

/** Node 20 has no global WebSocket: the tests inject the `ws` package's (a devDependency). */
export const WS = WebSocket as unknown as WebSocketConstructor;

export const PASSWORD = 'a-long-test-password';

export function uniqueEmail(tag: string): string {
  return `ts-${tag}-${randomUUID().slice(0, 8)}@example.com`;
}

/** A registered user and a client logged in as them (email/password mode, WebSocket injected). */
export async function newUser(
  tag: string,
  extra: Partial<ClientOptions> = {},
): Promise<{ client: AInTandemClient; email: string }> {
  const email = uniqueEmail(tag);
  await new AInTandemClient({ baseUrl: BASE_URL }).auth.register({
    email,
    password: PASSWORD,
    name: `TS ${tag}`,
  });
  const client = new AInTandemClient({
    baseUrl: BASE_URL,
    email,
    password: PASSWORD,
    WebSocket: WS,
    ...extra,
  } as ClientOptions);
  return { client, email };
}

export function sandboxConfig(name: string, role = 'Engineer'): SandboxConfig {
  return {
    name,
    agent_config: {
      primary_agent: { name: `${name}-agent`, role, capabilities: ['api_design'] },
    },
    resources: { memory_mb: 256, cpu_cores: 0.5 },
  };
}

/** Records every request a client's fetch makes (method, url, headers). */
export function recordingFetch(): {
  fetch: (input: string, init: RequestInit) => Promise<Response>;
  calls: { method: string; url: string; headers: Record<string, string> }[];
} {
  const calls: { method: string; url: string; headers: Record<string, string> }[] = [];
  return {
    calls,
    fetch: (input, init) => {
      calls.push({
        method: init.method ?? 'GET',
        url: input,
        headers: { ...(init.headers as Record<string, string>) },
      });
      return fetch(input, init);
    },
  };
}

export async function eventually<T>(
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 60_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}
