import { AInTandemError, SandboxNotReadyError, WaitTimeoutError } from './errors.js';
import type { HttpClient } from './http.js';
import { sleep } from './http.js';
import { EventStream, type StreamOptions } from './stream.js';
import type {
  JsonObject,
  LifecycleAccepted,
  LogsParams,
  MessageAccepted,
  MessageList,
  MessagesParams,
  SandboxChannel,
  SandboxConfigData,
  SandboxConfigUpdate,
  SandboxCreated,
  SandboxData,
  SandboxDetail,
  SandboxLogs,
  SandboxMetrics,
  SandboxStatus,
  SandboxStatusName,
  SendMessageOptions,
  StreamFrame,
} from './types.js';

export interface WaitOptions {
  /** Give up after this long (default 120 000 ms) with a WaitTimeoutError. */
  timeoutMs?: number;
  /** Poll interval (default 500 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
}

const p = encodeURIComponent;

/**
 * A handle on one sandbox. `data` is the last snapshot the SDK saw (from create, list or get);
 * `refresh()` fetches a new one. Every method talks to the API; nothing is cached beyond `data`.
 */
export class Sandbox {
  /** `sandbox_id`. */
  readonly id: string;
  /** Last snapshot, snake_case as the server sends it. */
  data: SandboxCreated | SandboxData | SandboxDetail | { sandbox_id: string };

  constructor(
    private readonly http: HttpClient,
    data: SandboxCreated | SandboxData | SandboxDetail | { sandbox_id: string },
  ) {
    this.id = data.sandbox_id;
    this.data = data;
  }

  get name(): string | undefined {
    return (this.data as { name?: string }).name;
  }

  get workspaceId(): string | undefined {
    return (this.data as { workspace_id?: string }).workspace_id;
  }

  /** Status of the last snapshot (see `getStatus()` / `refresh()` for a fresh one). */
  get status(): SandboxStatusName | undefined {
    return (this.data as { status?: SandboxStatusName }).status;
  }

  /** GET /sandboxes/{id}: details with health and metrics; updates `data`. */
  async refresh(): Promise<SandboxDetail> {
    const res = await this.http.request<SandboxDetail>('GET', `/sandboxes/${p(this.id)}`);
    this.data = res.data;
    return res.data;
  }

  /**
   * POST /sandboxes/{id}/start (202; the sandbox becomes `running` shortly after).
   *
   * Idempotent: a new sandbox starts by itself, so when the server refuses (409) because the
   * sandbox is already provisioning, starting, restarting or running, this resolves with that
   * status instead of throwing. Any other refusal is a SandboxNotReadyError.
   */
  async start(): Promise<LifecycleAccepted> {
    return this.lifecycle('start', ['provisioning', 'starting', 'restarting', 'running']);
  }

  /** POST /sandboxes/{id}/stop (202). Idempotent like start(): stopping/stopped resolve. */
  async stop(): Promise<LifecycleAccepted> {
    return this.lifecycle('stop', ['stopping', 'stopped']);
  }

  /** POST /sandboxes/{id}/restart (202); only a running (or errored) sandbox can restart. */
  async restart(): Promise<LifecycleAccepted> {
    return this.lifecycle('restart', []);
  }

  private async lifecycle(op: string, alreadyThere: SandboxStatusName[]): Promise<LifecycleAccepted> {
    try {
      const res = await this.http.request<LifecycleAccepted>('POST', `/sandboxes/${p(this.id)}/${op}`);
      return res.data;
    } catch (err) {
      if (!(err instanceof SandboxNotReadyError) || alreadyThere.length === 0) throw err;
      const detail = await this.refresh();
      if (!alreadyThere.includes(detail.status)) throw err;
      return { sandbox_id: this.id, status: detail.status, estimated_ready_seconds: null };
    }
  }

  /** GET /sandboxes/{id}/status: status, health, resource use and connections. */
  async getStatus(): Promise<SandboxStatus> {
    return (await this.http.request<SandboxStatus>('GET', `/sandboxes/${p(this.id)}/status`)).data;
  }

  /** GET /sandboxes/{id}/logs. */
  async getLogs(params: LogsParams = {}): Promise<SandboxLogs> {
    const res = await this.http.request<SandboxLogs>('GET', `/sandboxes/${p(this.id)}/logs`, {
      query: { ...params },
    });
    return res.data;
  }

  /** GET /sandboxes/{id}/metrics. */
  async getMetrics(): Promise<SandboxMetrics> {
    return (await this.http.request<SandboxMetrics>('GET', `/sandboxes/${p(this.id)}/metrics`)).data;
  }

  /** GET /sandboxes/{id}/config (environment variable values masked). */
  async getConfig(): Promise<SandboxConfigData> {
    return (await this.http.request<SandboxConfigData>('GET', `/sandboxes/${p(this.id)}/config`))
      .data;
  }

  /** PUT /sandboxes/{id}/config: resources apply live, environment at the next start. */
  async updateConfig(update: SandboxConfigUpdate): Promise<SandboxConfigData> {
    const res = await this.http.request<SandboxConfigData>('PUT', `/sandboxes/${p(this.id)}/config`, {
      body: update,
    });
    return res.data;
  }

  /**
   * POST /sandboxes/{id}/messages: send `content` from this sandbox to `to` (a sandbox name or
   * id). Accepted durably (202, `queued`); delivery follows while the target runs.
   */
  async sendMessage(
    to: string,
    content: JsonObject,
    options: SendMessageOptions & { idempotencyKey?: string } = {},
  ): Promise<MessageAccepted> {
    const { idempotencyKey, ...rest } = options;
    const res = await this.http.request<MessageAccepted>('POST', `/sandboxes/${p(this.id)}/messages`, {
      body: { to_sandbox: to, content, ...rest },
      idempotencyKey,
      replaySafe: true,
    });
    return res.data;
  }

  /** GET /sandboxes/{id}/messages: sent and/or received messages, newest first. */
  async getMessages(params: MessagesParams = {}): Promise<MessageList> {
    const res = await this.http.request<MessageList>('GET', `/sandboxes/${p(this.id)}/messages`, {
      query: { ...params },
    });
    return res.data;
  }

  /** DELETE /sandboxes/{id}: removes the container and the row (204). */
  async delete(): Promise<void> {
    await this.http.request<void>('DELETE', `/sandboxes/${p(this.id)}`);
  }

  /**
   * Poll GET /sandboxes/{id} until the status is `status` (or one of them); updates `data`.
   * Throws SandboxNotReadyError if the sandbox lands in `error` (unless that is awaited), and
   * WaitTimeoutError after `timeoutMs`.
   */
  async waitUntil(
    status: SandboxStatusName | SandboxStatusName[],
    options: WaitOptions = {},
  ): Promise<SandboxDetail> {
    const wanted = Array.isArray(status) ? status : [status];
    const timeoutMs = options.timeoutMs ?? 120_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const detail = await this.refresh();
      if (wanted.includes(detail.status)) return detail;
      if (detail.status === 'error') {
        throw new SandboxNotReadyError({
          status: 0,
          code: 'SANDBOX_NOT_READY',
          message: `sandbox ${this.id} is in error: ${detail.status_reason ?? 'no reason given'}`,
          details: { sandbox_id: this.id, status: detail.status, status_reason: detail.status_reason },
        });
      }
      if (Date.now() >= deadline) {
        throw new WaitTimeoutError({
          status: 0,
          code: 'WAIT_TIMEOUT',
          message: `sandbox ${this.id} not ${wanted.join('|')} after ${timeoutMs} ms (it is ${detail.status})`,
          details: { sandbox_id: this.id, status: detail.status },
        });
      }
      await sleep(Math.min(options.intervalMs ?? 500, Math.max(0, deadline - Date.now())), options.signal);
    }
  }

  /**
   * WS /ws/sandboxes/{id}: a live, resuming stream of this sandbox's frames on `channels`
   * (default all four). Needs a WebSocket implementation (see ClientOptions.WebSocket).
   *
   * ```ts
   * const stream = sandbox.stream(['messages', 'events']);
   * await stream.ready;                  // subscribed: later events will arrive
   * for await (const frame of stream) { console.log(frame.event, frame.data); }
   * ```
   */
  stream(
    channels: SandboxChannel[] = ['messages', 'events', 'logs', 'metrics'],
    options: StreamOptions = {},
  ): EventStream<JsonObject> {
    if (!channels.length) throw new AInTandemError({ status: 0, code: 'VALIDATION_ERROR', message: 'channels must not be empty' });
    return new EventStream(this.http, `/ws/sandboxes/${p(this.id)}`, [...channels], options);
  }
}

export type { StreamFrame };
