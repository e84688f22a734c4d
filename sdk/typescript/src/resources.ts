import { CollaborationFailedError, RateLimitExceededError, WaitTimeoutError } from './errors.js';
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
  CollaborationListParams,
  CollaborationStatus,
  CollaborationSummary,
  DiscoveredAgents,
  DiscoverParams,
  JsonObject,
  ListParams,
  LoginResult,
  MessageAccepted,
  MessageDecision,
  MessageDetail,
  MessageList,
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
  WorkspaceMessagesParams,
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

  /** GET /workspaces/{id}/messages: every message of the workspace, newest first (filters: status, sandbox_id, since). */
  async listMessages(workspaceId: string, params: WorkspaceMessagesParams = {}): Promise<MessageList> {
    const res = await this.http.request<MessageList>('GET', `/workspaces/${p(workspaceId)}/messages`, {
      query: { ...params },
    });
    return res.data;
  }

  /** GET /workspaces/{id}/collaborations, every page, newest first (filter: status; search in the task). */
  listCollaborations(workspaceId: string, params: CollaborationListParams = {}): Paginator<CollaborationSummary> {
    return new Paginator<CollaborationSummary>(
      this.http,
      `/workspaces/${p(workspaceId)}/collaborations`,
      { ...params },
      (raw: CollaborationSummary) => raw,
      (c) => c.collaboration_id,
    );
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

  /** GET /workspaces/{id}/messages (same as workspaces.listMessages). */
  async list(workspaceId: string, params: WorkspaceMessagesParams = {}): Promise<MessageList> {
    return new WorkspacesApi(this.http).listMessages(workspaceId, params);
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
  /** Poll interval without a WebSocket (default 2 000 ms); none while the stream is live. */
  intervalMs?: number;
  /** Give up after this long with a WaitTimeoutError (default: no limit). */
  timeoutMs?: number;
  /** Use WS /ws/collaborations/{id} to learn of changes at once (default true when available). */
  useWebSocket?: boolean;
  /** Polling without a WebSocket backs off up to this (default 30 000 ms). */
  maxIntervalMs?: number;
  /** How long to wait for the WebSocket before reading (default 10 000 ms). */
  connectTimeoutMs?: number;
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

  /** GET /workspaces/{id}/collaborations (same as workspaces.listCollaborations). */
  list(workspaceId: string, params: CollaborationListParams = {}): Paginator<CollaborationSummary> {
    return new WorkspacesApi(this.http).listCollaborations(workspaceId, params);
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
   * failed, cancelled). Watching costs two GETs however long the run: the stream
   * WS /ws/collaborations/{id} (channel `collaboration`) is opened first, the collaboration read
   * once, and every later snapshot is built from the stream's events (each carries the status,
   * the whole progress, the estimate and a version; a version is yielded once, never an older
   * state after a newer); the finished state is read once more in full. Only while no
   * WebSocket can be had is it polled: every `intervalMs`, doubling up to `maxIntervalMs` while
   * nothing changes, waiting out a 429's Retry-After.
   */
  async *watch(
    collaborationId: string,
    options: WatchOptions = {},
  ): AsyncGenerator<CollaborationData, void, undefined> {
    const base = options.intervalMs ?? 2_000;
    const maxInterval = Math.max(base, options.maxIntervalMs ?? 30_000);
    let interval = base;
    const deadline = options.timeoutMs === undefined ? null : Date.now() + options.timeoutMs;
    let stream: EventStream | null = null;
    let iterator: AsyncIterator<StreamFrame> | null = null;
    let pending: Promise<IteratorResult<StreamFrame>> | null = null;
    let live = false;
    try {
      if ((options.useWebSocket ?? true) && this.http.WebSocket) {
        // Every channel: a collaboration's stream has no `collaboration` filter; others are skipped.
        stream = new EventStream(this.http, `/ws/collaborations/${p(collaborationId)}`, null, {
          signal: options.signal,
          maxReconnects: 1_000_000,
        });
        iterator = stream[Symbol.asyncIterator]();
        pending = this.next(iterator);
        // Subscribed before the read, so no change between the two is missed.
        const connectWait = new Promise<void>((resolve) => setTimeout(resolve, options.connectTimeoutMs ?? 10_000));
        live = await Promise.race([
          stream.ready.then(() => true, () => false),
          connectWait.then(() => false),
        ]);
      }
      let current = await this.get(collaborationId);
      let seen = stateKey(current);
      let version = 0;
      yield current;
      if (TERMINAL_COLLABORATION_STATUSES.includes(current.status)) return;
      for (;;) {
        const wait = pending && live ? null : interval;
        const remaining =
          deadline === null ? wait : Math.min(wait ?? Number.POSITIVE_INFINITY, deadline - Date.now());
        if (deadline !== null && Date.now() >= deadline) {
          throw new WaitTimeoutError({
            status: 0,
            code: 'WAIT_TIMEOUT',
            message: `collaboration ${collaborationId} still ${current.status} after ${options.timeoutMs} ms`,
            details: { collaboration_id: collaborationId, status: current.status },
          });
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const racers: Promise<{ kind: 'timeout' } | { kind: 'frame'; frame: StreamFrame } | { kind: 'ended' }>[] = [];
        if (remaining !== null) {
          racers.push(
            new Promise((resolve) => {
              timer = setTimeout(() => resolve({ kind: 'timeout' }), Math.max(0, remaining));
            }),
          );
        }
        if (pending) {
          racers.push(
            pending.then(
              (r) => (r.done ? { kind: 'ended' as const } : { kind: 'frame' as const, frame: r.value }),
              () => ({ kind: 'ended' as const }),
            ),
          );
        }
        const outcome = await Promise.race(racers);
        clearTimeout(timer);
        options.signal?.throwIfAborted();
        if (outcome.kind === 'frame' && iterator) {
          live = true;
          pending = this.next(iterator);
          const next = applyEvent(current, outcome.frame, version);
          if (next === null) continue;
          version = next.version;
          const key = stateKey(next.snapshot);
          current = next.snapshot;
          if (key === seen) continue;
          seen = key;
          if (TERMINAL_COLLABORATION_STATUSES.includes(current.status)) {
            try {
              current = await this.get(collaborationId); // the finished state in full, once
            } catch {
              // the event's snapshot stands
            }
            yield current;
            return;
          }
          yield current;
          continue;
        }
        if (outcome.kind === 'ended') {
          pending = null; // refused or lost for good: poll from here on
          live = false;
          stream?.close();
          continue;
        }
        try {
          current = await this.get(collaborationId);
        } catch (error) {
          if (error instanceof RateLimitExceededError) {
            const after = Number(error.details?.retry_after_seconds ?? 0) * 1000;
            interval = Math.max(interval * 2, after, base);
            continue;
          }
          throw error;
        }
        const key = stateKey(current);
        if (key === seen) {
          interval = Math.min(interval * 2, maxInterval);
        } else {
          seen = key;
          interval = base;
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


const TERMINAL_RANK: readonly string[] = ['completed', 'failed', 'cancelled'];

/** How far a state is: finished, percentage, steps completed (each only grows). */
function rank(c: CollaborationData): [number, number, number] {
  return [
    TERMINAL_RANK.includes(c.status) ? 1 : 0,
    Math.trunc(c.progress?.percentage ?? 0),
    c.progress?.completed_steps?.length ?? 0,
  ];
}

function before(a: [number, number, number], b: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

/** What makes a snapshot new (the estimate alone does not). */
function stateKey(c: CollaborationData): string {
  return JSON.stringify([c.status, c.progress ?? null, c.result ?? null, c.error ?? null]);
}

/**
 * Fold one `collaboration` event into the last snapshot; null when it is not newer (a version
 * seen, or a state behind the one read).
 */
function applyEvent(
  current: CollaborationData,
  frame: StreamFrame,
  version: number,
): { snapshot: CollaborationData; version: number } | null {
  if (frame.channel !== 'collaboration') return null;
  const data = (frame.data ?? {}) as JsonObject;
  const v = typeof data.version === 'number' ? data.version : null;
  if (v !== null && v <= version) return null;
  const next = { ...current } as CollaborationData & Record<string, unknown>;
  if (typeof data.status === 'string') next.status = data.status as CollaborationStatus;
  const progress = data.progress as JsonObject | undefined;
  if (progress && typeof progress === 'object') {
    next.progress = {
      percentage: Math.trunc(Number(progress.percentage ?? 0)),
      current_step: (progress.current_step as string | null) ?? null,
      completed_steps: (progress.completed_steps as string[]) ?? [],
      remaining_steps: (progress.remaining_steps as string[]) ?? [],
    };
    const states = (progress.participants ?? {}) as Record<string, JsonObject>;
    if (Array.isArray(current.participants)) {
      next.participants = current.participants.map((p) => {
        const state = states[(p as { sandbox_id: string }).sandbox_id];
        return state ? { ...p, ...pick(state, ['status', 'messages_exchanged']) } : p;
      }) as CollaborationData['participants'];
    }
  }
  if ('estimated_completion' in data) {
    (next as Record<string, unknown>).estimated_completion = data.estimated_completion;
  }
  if (data.result !== undefined && data.result !== null) {
    (next as Record<string, unknown>).result = data.result;
  }
  if (before(rank(next), rank(current))) return null;
  return { snapshot: next, version: v ?? version };
}

function pick(o: JsonObject, keys: string[]): JsonObject {
  const out: JsonObject = {};
  for (const k of keys) {
    const v = o[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}
