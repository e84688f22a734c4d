import { CollaborationFailedError, WaitTimeoutError } from './errors.js';
import type { HttpClient } from './http.js';
import { Paginator } from './pagination.js';
import { Sandbox } from './sandbox.js';
import { EventStream } from './stream.js';
import type {
  AggregateParams,
  BroadcastAccepted,
  BroadcastRequest,
  CollaborationAccepted,
  CollaborationCancelled,
  CollaborationData,
  CollaborationStatus,
  DiscoveredAgents,
  DiscoverParams,
  JsonObject,
  ListParams,
  LoginResult,
  MessageAccepted,
  MessageDecision,
  MessageDetail,
  MessageRetried,
  MetricsAggregate,
  OrchestrateRequest,
  RefreshResult,
  RegisteredUser,
  RegisterRequest,
  SandboxConfig,
  SandboxCreated,
  SandboxData,
  SandboxDetail,
  SandboxListParams,
  SendMessageOptions,
  StreamFrame,
  SystemHealth,
  SystemInfo,
  Workspace,
  WorkspaceConfig,
  WorkspaceConfigUpdate,
  WorkspaceCreate,
  WorkspaceData,
  WorkspaceDetail,
  WorkspaceDetailData,
  WorkspaceUpdate,
} from './types.js';

const p = encodeURIComponent;

function withId<T extends { workspace_id: string }>(data: T): T & { readonly id: string } {
  return { ...data, id: data.workspace_id };
}

/** POST /auth/*: register, log in (the client then uses and refreshes these tokens), refresh, log out. */
export class AuthApi {
  constructor(private readonly http: HttpClient) {}

  /** POST /auth/register (201). */
  async register(body: RegisterRequest): Promise<RegisteredUser> {
    return (await this.http.request<RegisteredUser>('POST', '/auth/register', { auth: false, body })).data;
  }

  /** POST /auth/login; the client uses the returned tokens from now on (and refreshes them). */
  async login(email: string, password: string): Promise<LoginResult> {
    const res = await this.http.request<LoginResult>('POST', '/auth/login', {
      auth: false,
      body: { email, password },
    });
    this.http.tokens.setLogin(res.data);
    return res.data;
  }

  /** POST /auth/refresh with the held refresh token (rotated: the new one replaces it). */
  async refresh(): Promise<RefreshResult> {
    return this.http.tokens.refresh();
  }

  /** POST /auth/logout: revokes this session server-side and forgets the tokens. */
  async logout(): Promise<void> {
    await this.http.request<void>('POST', '/auth/logout');
    this.http.tokens.clear();
  }

  /** The access token in use (null before the first login). */
  get accessToken(): string | null {
    return this.http.tokens.accessToken;
  }
}

export class WorkspacesApi {
  constructor(private readonly http: HttpClient) {}

  /** POST /workspaces (201). */
  async create(body: WorkspaceCreate): Promise<Workspace> {
    return withId((await this.http.request<WorkspaceData>('POST', '/workspaces', { body })).data);
  }

  /** GET /workspaces, every page: `for await (const ws of client.workspaces.list())`. */
  list(params: ListParams = {}): Paginator<Workspace> {
    return new Paginator<Workspace>(
      this.http,
      '/workspaces',
      { ...params },
      (raw: WorkspaceData) => withId(raw),
      (w) => w.workspace_id,
    );
  }

  /** GET /workspaces/{id}: with its sandboxes. */
  async get(workspaceId: string): Promise<WorkspaceDetail> {
    return withId((await this.http.request<WorkspaceDetailData>('GET', `/workspaces/${p(workspaceId)}`)).data);
  }

  /** PUT /workspaces/{id}: name, description, settings (merged). */
  async update(workspaceId: string, body: WorkspaceUpdate): Promise<WorkspaceDetail> {
    const res = await this.http.request<WorkspaceDetailData>('PUT', `/workspaces/${p(workspaceId)}`, { body });
    return withId(res.data);
  }

  /** DELETE /workspaces/{id}: its sandboxes (containers) go first (204). */
  async delete(workspaceId: string): Promise<void> {
    await this.http.request<void>('DELETE', `/workspaces/${p(workspaceId)}`);
  }

  /** GET /workspaces/{id}/sandboxes, every page, as Sandbox handles. */
  listSandboxes(workspaceId: string, params: SandboxListParams = {}): Paginator<Sandbox> {
    return new Paginator<Sandbox>(
      this.http,
      `/workspaces/${p(workspaceId)}/sandboxes`,
      { ...params },
      (raw: SandboxData) => new Sandbox(this.http, raw),
      (s) => s.id,
    );
  }

  /** POST /workspaces/{id}/broadcast (202). */
  async broadcast(
    workspaceId: string,
    body: BroadcastRequest,
    options: { idempotencyKey?: string } = {},
  ): Promise<BroadcastAccepted> {
    const res = await this.http.request<BroadcastAccepted>('POST', `/workspaces/${p(workspaceId)}/broadcast`, {
      body,
      idempotencyKey: options.idempotencyKey,
      replaySafe: true,
    });
    return res.data;
  }

  /** GET /workspaces/{id}/config (API keys masked). */
  async getConfig(workspaceId: string): Promise<WorkspaceConfig> {
    return (await this.http.request<WorkspaceConfig>('GET', `/workspaces/${p(workspaceId)}/config`)).data;
  }

  /** PUT /workspaces/{id}/config. */
  async updateConfig(workspaceId: string, body: WorkspaceConfigUpdate): Promise<WorkspaceConfig> {
    return (await this.http.request<WorkspaceConfig>('PUT', `/workspaces/${p(workspaceId)}/config`, { body })).data;
  }

  /** GET /workspaces/{id}/metrics/aggregate. */
  async aggregateMetrics(workspaceId: string, params: AggregateParams = {}): Promise<MetricsAggregate> {
    const res = await this.http.request<MetricsAggregate>(
      'GET',
      `/workspaces/${p(workspaceId)}/metrics/aggregate`,
      { query: { ...params } },
    );
    return res.data;
  }

  /** GET /workspaces/{id}/agents/discover: agents by capability, role, sandbox. */
  async discoverAgents(workspaceId: string, params: DiscoverParams = {}): Promise<DiscoveredAgents> {
    const res = await this.http.request<DiscoveredAgents>('GET', `/workspaces/${p(workspaceId)}/agents/discover`, {
      query: { ...params },
    });
    return res.data;
  }
}

export class SandboxesApi {
  constructor(private readonly http: HttpClient) {}

  /** POST /workspaces/{id}/sandboxes (201, `provisioning`): a Sandbox handle. */
  async create(workspaceId: string, config: SandboxConfig): Promise<Sandbox> {
    const res = await this.http.request<SandboxCreated>('POST', `/workspaces/${p(workspaceId)}/sandboxes`, {
      body: config,
    });
    return new Sandbox(this.http, res.data);
  }

  /** GET /sandboxes/{id}: a Sandbox handle holding the details. */
  async get(sandboxId: string): Promise<Sandbox> {
    const res = await this.http.request<SandboxDetail>('GET', `/sandboxes/${p(sandboxId)}`);
    return new Sandbox(this.http, res.data);
  }

  /** A handle for a known id, without a request. */
  fromId(sandboxId: string): Sandbox {
    return new Sandbox(this.http, { sandbox_id: sandboxId });
  }

  /** GET /workspaces/{id}/sandboxes (same as workspaces.listSandboxes). */
  list(workspaceId: string, params: SandboxListParams = {}): Paginator<Sandbox> {
    return new WorkspacesApi(this.http).listSandboxes(workspaceId, params);
  }

  /** DELETE /sandboxes/{id} (204). */
  async delete(sandboxId: string): Promise<void> {
    await this.http.request<void>('DELETE', `/sandboxes/${p(sandboxId)}`);
  }
}

export class MessagesApi {
  constructor(private readonly http: HttpClient) {}

  /** POST /sandboxes/{from}/messages (same as Sandbox.sendMessage). */
  async send(
    fromSandboxId: string,
    to: string,
    content: JsonObject,
    options: SendMessageOptions & { idempotencyKey?: string } = {},
  ): Promise<MessageAccepted> {
    return new Sandbox(this.http, { sandbox_id: fromSandboxId }).sendMessage(to, content, options);
  }

  /** GET /messages/{id}: with the linked response, once there is one. */
  async get(messageId: string): Promise<MessageDetail> {
    return (await this.http.request<MessageDetail>('GET', `/messages/${p(messageId)}`)).data;
  }

  /** POST /messages/{id}/retry: re-enqueue a failed or timed-out delivery (202). */
  async retry(messageId: string): Promise<MessageRetried> {
    return (await this.http.request<MessageRetried>('POST', `/messages/${p(messageId)}/retry`)).data;
  }

  /** POST /messages/{id}/approve: release a message held by an approval_required rule (202). */
  async approve(messageId: string, reason?: string): Promise<MessageDecision> {
    const res = await this.http.request<MessageDecision>('POST', `/messages/${p(messageId)}/approve`, {
      body: reason === undefined ? {} : { reason },
    });
    return res.data;
  }

  /** POST /messages/{id}/deny (202): the message fails with the reason. */
  async deny(messageId: string, reason?: string): Promise<MessageDecision> {
    const res = await this.http.request<MessageDecision>('POST', `/messages/${p(messageId)}/deny`, {
      body: reason === undefined ? {} : { reason },
    });
    return res.data;
  }
}

export const TERMINAL_COLLABORATION_STATUSES: readonly CollaborationStatus[] = [
  'completed',
  'failed',
  'cancelled',
];

export interface WatchOptions {
  /** Poll interval without a WebSocket (default 2 000 ms); with one, a 5x slower safety net. */
  intervalMs?: number;
  /** Give up after this long with a WaitTimeoutError (default: no limit). */
  timeoutMs?: number;
  /** Use WS /ws/collaborations/{id} to learn of changes at once (default true when available). */
  useWebSocket?: boolean;
  signal?: AbortSignal;
}

/** A collaboration started by `orchestrate()`. */
export class Collaboration {
  readonly id: string;

  constructor(
    private readonly api: CollaborationsApi,
    /** The 202 answer of orchestrate. */
    readonly accepted: CollaborationAccepted,
  ) {
    this.id = accepted.collaboration_id;
  }

  get(): Promise<CollaborationData> {
    return this.api.get(this.id);
  }

  cancel(reason?: string): Promise<CollaborationCancelled> {
    return this.api.cancel(this.id, reason);
  }

  watch(options: WatchOptions = {}): AsyncGenerator<CollaborationData, void, undefined> {
    return this.api.watch(this.id, options);
  }

  wait(options: WatchOptions = {}): Promise<CollaborationData> {
    return this.api.wait(this.id, options);
  }
}

export class CollaborationsApi {
  constructor(private readonly http: HttpClient) {}

  /** POST /workspaces/{id}/collaboration/orchestrate (202, `initializing`). */
  async orchestrate(workspaceId: string, request: OrchestrateRequest): Promise<Collaboration> {
    const res = await this.http.request<CollaborationAccepted>(
      'POST',
      `/workspaces/${p(workspaceId)}/collaboration/orchestrate`,
      { body: request, replaySafe: true },
    );
    return new Collaboration(this, res.data);
  }

  /** GET /collaborations/{id}: status, progress, participants, deliverables, result. */
  async get(collaborationId: string): Promise<CollaborationData> {
    return (await this.http.request<CollaborationData>('GET', `/collaborations/${p(collaborationId)}`)).data;
  }

  /** POST /collaborations/{id}/cancel (202): stops it and every step in flight. */
  async cancel(collaborationId: string, reason?: string): Promise<CollaborationCancelled> {
    const res = await this.http.request<CollaborationCancelled>(
      'POST',
      `/collaborations/${p(collaborationId)}/cancel`,
      { body: reason === undefined ? {} : { reason } },
    );
    return res.data;
  }

  /**
   * Snapshots of the collaboration as it changes, ending with the terminal one (completed,
   * failed, cancelled). Changes are noticed through WS /ws/collaborations/{id} (each frame
   * triggers a GET) and, when no WebSocket is available or the stream fails, by polling.
   */
  async *watch(
    collaborationId: string,
    options: WatchOptions = {},
  ): AsyncGenerator<CollaborationData, void, undefined> {
    const interval = options.intervalMs ?? 2_000;
    const deadline = options.timeoutMs === undefined ? null : Date.now() + options.timeoutMs;
    let stream: EventStream | null = null;
    let iterator: AsyncIterator<StreamFrame> | null = null;
    let pending: Promise<IteratorResult<StreamFrame>> | null = null;
    try {
      let current = await this.get(collaborationId);
      let seen = JSON.stringify(current);
      yield current;
      if (TERMINAL_COLLABORATION_STATUSES.includes(current.status)) return;
      if ((options.useWebSocket ?? true) && this.http.WebSocket) {
        // Follow every channel: whatever the stream says, a fresh GET tells what changed.
        stream = new EventStream(this.http, `/ws/collaborations/${p(collaborationId)}`, null, {
          signal: options.signal,
        });
        iterator = stream[Symbol.asyncIterator]();
        pending = this.next(iterator);
      }
      for (;;) {
        const wait = pending ? interval * 5 : interval;
        const remaining = deadline === null ? wait : Math.min(wait, deadline - Date.now());
        if (remaining <= 0) {
          throw new WaitTimeoutError({
            status: 0,
            code: 'WAIT_TIMEOUT',
            message: `collaboration ${collaborationId} still ${current.status} after ${options.timeoutMs} ms`,
            details: { collaboration_id: collaborationId, status: current.status },
          });
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), remaining);
        });
        const outcome = await Promise.race([
          timeout,
          ...(pending
            ? [pending.then((r) => (r.done ? 'ended' : 'frame'), () => 'ended' as const)]
            : []),
        ]);
        clearTimeout(timer);
        options.signal?.throwIfAborted();
        if (outcome === 'frame' && iterator) pending = this.next(iterator);
        else if (outcome === 'ended') {
          pending = null; // the stream gave up (or is refused): poll from here on
          stream?.close();
        }
        current = await this.get(collaborationId);
        const text = JSON.stringify(current);
        if (text !== seen) {
          seen = text;
          yield current;
        }
        if (TERMINAL_COLLABORATION_STATUSES.includes(current.status)) return;
      }
    } finally {
      stream?.close();
    }
  }

  private next(iterator: AsyncIterator<StreamFrame>): Promise<IteratorResult<StreamFrame>> {
    const pending = iterator.next();
    // The stream may fail while the caller is busy with a snapshot: handled when raced next.
    pending.catch(() => undefined);
    return pending;
  }

  /**
   * Resolve with the final snapshot once the collaboration is completed or cancelled; throw a
   * CollaborationFailedError (its `details` carry the snapshot) when it failed.
   */
  async wait(collaborationId: string, options: WatchOptions = {}): Promise<CollaborationData> {
    let last: CollaborationData | null = null;
    for await (const snapshot of this.watch(collaborationId, options)) last = snapshot;
    if (last === null) throw new Error('unreachable: watch() yields at least once');
    if (last.status === 'failed') {
      throw new CollaborationFailedError({
        status: 0,
        code: last.error?.code ?? 'COLLABORATION_FAILED',
        message: last.error?.message ?? `collaboration ${collaborationId} failed`,
        details: last as unknown as JsonObject,
      });
    }
    return last;
  }
}

export class SystemApi {
  constructor(private readonly http: HttpClient) {}

  /** GET /system/health (no authentication). An unhealthy system answers 503. */
  async health(): Promise<SystemHealth> {
    return (await this.http.request<SystemHealth>('GET', '/system/health', { auth: false })).data;
  }

  /** GET /system/info (no authentication). */
  async info(): Promise<SystemInfo> {
    return (await this.http.request<SystemInfo>('GET', '/system/info', { auth: false })).data;
  }
}

