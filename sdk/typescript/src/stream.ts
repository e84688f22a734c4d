/**
 * WebSocket streams (/ws/sandboxes/{id}, /ws/collaborations/{id}) as async iterators.
 *
 * Handshake: connect, send `{"action":"auth","token":...}` as the first frame (the token stays
 * out of URLs and access logs), wait for the server's `system/connected` frame, then send
 * `{"action":"subscribe","channels":[...]}` and wait for `system/subscribed`. Frames are
 * `{channel, event, data, timestamp, id}`; `id` is the durable event id. When the connection
 * drops (or the access token expires) the stream reconnects with `?last_event_id=<last id seen>`,
 * so the server replays what was missed, in order, each event once.
 */

import {
  AInTandemError,
  AuthenticationFailedError,
  ConnectionError,
  RateLimitExceededError,
  ResourceNotFoundError,
  ValidationError,
} from './errors.js';
import type { HttpClient, WebSocketLike } from './http.js';
import { sleep } from './http.js';
import type { JsonObject, StreamFrame } from './types.js';

export interface StreamOptions {
  /** Resume after this event id: the server replays every later event first. */
  lastEventId?: number | null;
  /** Reconnect (resuming) after a dropped connection or an expired token (default true). */
  reconnect?: boolean;
  /** Consecutive failed reconnects before the iterator throws (default 5). */
  maxReconnects?: number;
  /** Also yield `system` frames (connected, subscribed, ping, ...). Default false. */
  includeSystem?: boolean;
  signal?: AbortSignal;
}

type Waiter = {
  resolve: (r: IteratorResult<StreamFrame<JsonObject>>) => void;
  reject: (e: unknown) => void;
};

const AUTH_CLOSE = /^authentication failed|token expired|session revoked/i;

/** A live, resuming stream of frames. Iterate it; `close()` (or `break`) ends it. */
export class EventStream<D = JsonObject> implements AsyncIterable<StreamFrame<D>> {
  /** Id of the last event yielded: what a reconnect resumes from. */
  lastEventId: number | null;
  /** Resolves when the first connection is authenticated and subscribed. */
  readonly ready: Promise<void>;

  private ws: WebSocketLike | null = null;
  private readonly queue: StreamFrame<JsonObject>[] = [];
  private readonly waiters: Waiter[] = [];
  private failure: unknown = null;
  private ended = false;
  private failures = 0;
  private resolveReady!: () => void;
  private rejectReady!: (e: unknown) => void;
  private isReady = false;

  constructor(
    private readonly http: HttpClient,
    private readonly path: string,
    private readonly channels: string[] | null,
    private readonly options: StreamOptions = {},
  ) {
    this.lastEventId = options.lastEventId ?? null;
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => undefined); // surfaced through iteration too; never unhandled
    options.signal?.addEventListener('abort', () => this.close(), { once: true });
    void this.connect();
  }

  /** Stop: the iterator finishes after the frames already received. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.ws?.close(1000, 'client closed');
    } catch {
      // already closed
    }
    this.flush();
  }

  [Symbol.asyncIterator](): AsyncIterator<StreamFrame<D>> {
    return {
      next: () => this.next() as Promise<IteratorResult<StreamFrame<D>>>,
      return: async () => {
        this.close();
        return { done: true, value: undefined };
      },
    };
  }

  private next(): Promise<IteratorResult<StreamFrame<JsonObject>>> {
    const item = this.queue.shift();
    if (item) return Promise.resolve({ done: false, value: item });
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private push(frame: StreamFrame<JsonObject>): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ done: false, value: frame });
    else this.queue.push(frame);
  }

  private fail(error: unknown): void {
    if (this.ended) return;
    this.failure = error;
    this.ended = true;
    if (!this.isReady) this.rejectReady(error);
    try {
      this.ws?.close(1000, 'client closed');
    } catch {
      // already closed
    }
    this.flush();
  }

  private flush(): void {
    if (!this.isReady && this.failure === null) this.rejectReady(new ConnectionError(closedInit()));
    while (this.waiters.length && this.queue.length === 0) {
      const waiter = this.waiters.shift()!;
      if (this.failure !== null) waiter.reject(this.failure);
      else waiter.resolve({ done: true, value: undefined });
    }
  }

  private url(): string {
    const origin = this.http.origin.replace(/^http/, 'ws');
    const query = this.lastEventId !== null ? `?last_event_id=${this.lastEventId}` : '';
    return `${origin}${this.path}${query}`;
  }

  private async connect(): Promise<void> {
    const Impl = this.http.WebSocket;
    if (!Impl) {
      this.fail(
        new TypeError(
          'No WebSocket implementation: pass one as the WebSocket client option ' +
            "(on Node 20: import WebSocket from 'ws')",
        ),
      );
      return;
    }
    let token: string | null;
    try {
      token = await this.http.tokens.current();
    } catch (err) {
      this.fail(err);
      return;
    }
    if (this.ended) return;
    const ws = new Impl(this.url());
    this.ws = ws;
    let subscribed = false;
    ws.addEventListener('open', () => {
      ws.send(JSON.stringify({ action: 'auth', token: token ?? '' }));
    });
    ws.addEventListener('message', (event) => {
      const frame = parseFrame(event.data);
      if (!frame || this.ended) return;
      if (frame.channel === 'system') {
        if (frame.event === 'connected') {
          if (this.channels) ws.send(JSON.stringify({ action: 'subscribe', channels: this.channels }));
          else this.markReady();
        } else if (frame.event === 'subscribed') {
          subscribed = true;
          this.markReady();
        } else if (frame.event === 'error' && !subscribed && this.channels) {
          const data = frame.data as { code?: string; message?: string };
          this.fail(
            new ValidationError({
              status: 0,
              code: data.code ?? 'VALIDATION_ERROR',
              message: data.message ?? 'subscribe refused',
              details: frame.data,
            }),
          );
          return;
        }
        if (this.options.includeSystem) this.push(frame);
        return;
      }
      // Before the subscribe is acknowledged the server follows every channel: filter here.
      if (this.channels && !this.channels.includes(frame.channel)) return;
      if (typeof frame.id === 'number') {
        if (this.lastEventId !== null && frame.id <= this.lastEventId) return;
        this.lastEventId = frame.id;
      }
      this.push(frame);
    });
    ws.addEventListener('error', () => undefined); // the close event that follows decides
    ws.addEventListener('close', (event) => {
      if (this.ws === ws) this.ws = null;
      if (this.ended) return;
      void this.onClose(event.code, event.reason ?? '', token);
    });
  }

  private markReady(): void {
    this.failures = 0;
    if (!this.isReady) {
      this.isReady = true;
      this.resolveReady();
    }
  }

  private async onClose(code: number, reason: string, token: string | null): Promise<void> {
    const init = { status: 0, code: `WS_CLOSE_${code}`, message: `stream closed (${code}): ${reason}` };
    if (code === 1008) {
      if (AUTH_CLOSE.test(reason)) {
        let renewed = false;
        try {
          renewed = await this.http.tokens.renewAfter401(token);
        } catch (err) {
          this.fail(err);
          return;
        }
        if (!renewed || this.failures > 0) {
          this.fail(new AuthenticationFailedError({ ...init, code: 'AUTHENTICATION_FAILED' }));
          return;
        }
        this.failures++;
        void this.connect();
        return;
      }
      if (/not found/i.test(reason)) {
        this.fail(new ResourceNotFoundError({ ...init, code: 'RESOURCE_NOT_FOUND' }));
      } else if (/too many connections/i.test(reason)) {
        this.fail(new RateLimitExceededError({ ...init, code: 'RATE_LIMIT_EXCEEDED' }));
      } else if (/admin only/i.test(reason)) {
        this.fail(new AInTandemError({ ...init, code: 'AUTHORIZATION_FAILED' }));
      } else {
        this.fail(new ValidationError({ ...init, code: 'VALIDATION_ERROR' }));
      }
      return;
    }
    const limit = this.options.maxReconnects ?? 5;
    if (this.options.reconnect === false || this.failures >= limit) {
      this.fail(new ConnectionError(init));
      return;
    }
    this.failures++;
    try {
      await sleep(Math.min(10_000, 250 * 2 ** this.failures), this.options.signal);
    } catch {
      this.close();
      return;
    }
    if (!this.ended) void this.connect();
  }
}

function closedInit(): { status: number; code: string; message: string } {
  return { status: 0, code: 'STREAM_CLOSED', message: 'stream closed before it was ready' };
}

function parseFrame(raw: unknown): StreamFrame<JsonObject> | null {
  let text: string;
  if (typeof raw === 'string') text = raw;
  else if (raw instanceof ArrayBuffer) text = new TextDecoder().decode(raw);
  else if (ArrayBuffer.isView(raw)) text = new TextDecoder().decode(raw as Uint8Array);
  else return null;
  try {
    const value = JSON.parse(text) as StreamFrame<JsonObject>;
    return value && typeof value === 'object' && typeof value.channel === 'string' ? value : null;
  } catch {
    return null;
  }
}
