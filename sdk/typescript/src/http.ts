/**
 * The transport: envelope unwrapping, typed errors, bounded retries on 429/503 (and on the 409
 * of an Idempotency-Key whose first attempt is still in flight) honouring Retry-After, one
 * Idempotency-Key per POST reused across its retries, X-Request-ID and
 * X-Client-Version on every attempt, and bearer-token handling (with refresh in
 * email/password mode).
 */

import {
  AInTandemError,
  AuthenticationFailedError,
  ConnectionError,
  errorFor,
} from './errors.js';
import type { JsonObject, LoginResult, Meta, RefreshResult } from './types.js';
import { VERSION } from './version.js';

export const CLIENT_VERSION = `typescript/${VERSION}`;
export const DEFAULT_BASE_URL = 'http://localhost:8000/api/v1';

type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** The subset of the WHATWG WebSocket the SDK uses (the `ws` package's class fits). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open', listener: (event: unknown) => void): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  addEventListener(type: 'close', listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: 'error', listener: (event: unknown) => void): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

interface BaseOptions {
  /** e.g. `http://localhost:8000/api/v1`. Default: env AINTANDEM_BASE_URL, else that URL. */
  baseUrl?: string;
  /** A `fetch` to use instead of the global one (tests, proxies). */
  fetch?: FetchLike;
  /**
   * A WebSocket class for `stream()` / `collaborations.watch()`. Default: the global
   * `WebSocket` (browsers, Deno, Node >= 22). On Node 20 pass one, e.g. `import WebSocket from 'ws'`.
   */
  WebSocket?: WebSocketConstructor;
  /** Per-attempt timeout (default 30 000 ms). */
  timeoutMs?: number;
  /**
   * Retries after a 429/503, a 409 "Idempotency-Key still in flight" or a connection error
   * (default 3). 0 turns retries off.
   */
  maxRetries?: number;
  /**
   * Longest single wait between attempts (default 30 000 ms). A Retry-After beyond it is not
   * waited for: the error is thrown at once, with `retryAfter` set.
   */
  maxRetryDelayMs?: number;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

export interface ApiKeyOptions extends BaseOptions {
  /** A bearer token (an access token from `auth.login`), sent as is and never refreshed. */
  apiKey: string;
  email?: never;
  password?: never;
}

export interface PasswordOptions extends BaseOptions {
  /** Logs in on first use and refreshes the access token (POST /auth/refresh) as it expires. */
  email: string;
  password: string;
  apiKey?: never;
}

export interface AnonymousOptions extends BaseOptions {
  apiKey?: undefined;
  email?: undefined;
  password?: undefined;
}

export type ClientOptions = ApiKeyOptions | PasswordOptions | AnonymousOptions;

export interface RequestOptions {
  query?: Record<string, string | number | boolean | Date | null | undefined>;
  body?: unknown;
  /** Send the bearer token (default true). */
  auth?: boolean;
  /** Reuse a caller-chosen Idempotency-Key (POST). */
  idempotencyKey?: string;
  /**
   * The server honours this POST's Idempotency-Key, so it is safe to resend after a connection
   * error (which may have happened after the server acted). GET/PUT/DELETE always are.
   */
  replaySafe?: boolean;
  signal?: AbortSignal;
}

export interface ApiResponse<T> {
  status: number;
  data: T;
  meta: Meta & JsonObject;
  requestId: string | null;
}

const RETRY_STATUSES = new Set([429, 503]);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
const REFRESH_MARGIN_MS = 60_000;

function envBaseUrl(): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  return env?.['AINTANDEM_BASE_URL'] || undefined;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function parseRetryAfter(value: string | null): number | null {
  if (value === null || value.trim() === '') return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

/**
 * The 409 that says the first attempt with this request's Idempotency-Key is still being
 * processed (`details.state: "in_flight"`, with Retry-After: 1): resending the same key gets
 * that attempt's answer once it is stored. Any other 409 (a real conflict, the key reused for
 * another body) is final.
 */
function keyInFlight(status: number, error: AInTandemError): boolean {
  return (
    status === 409 && error.code === 'RESOURCE_ALREADY_EXISTS' && error.details['state'] === 'in_flight'
  );
}

function encodeQuery(query: RequestOptions['query']): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    params.set(key, value instanceof Date ? value.toISOString() : String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** Tokens of one client: fixed (apiKey), or obtained and refreshed (email/password, login). */
export class TokenStore {
  accessToken: string | null = null;
  refreshToken: string | null = null;
  /** epoch ms; null when unknown (apiKey). */
  expiresAt: number | null = null;
  private pending: Promise<void> | null = null;

  constructor(
    private readonly http: HttpClient,
    private readonly credentials: { email: string; password: string } | null,
    apiKey: string | null,
  ) {
    this.accessToken = apiKey;
  }

  get refreshable(): boolean {
    return this.credentials !== null || this.refreshToken !== null;
  }

  /** The token to send now; logs in or refreshes first when needed. */
  async current(): Promise<string | null> {
    if (this.pending) await this.pending;
    if (this.accessToken === null && this.credentials) {
      await this.single(() => this.login());
    } else if (
      this.refreshToken !== null &&
      this.expiresAt !== null &&
      this.expiresAt - Date.now() < REFRESH_MARGIN_MS
    ) {
      await this.single(() => this.refreshOrLogin());
    }
    return this.accessToken;
  }

  /** A 401 came back for `used`: renew once (concurrent callers share one renewal). */
  async renewAfter401(used: string | null): Promise<boolean> {
    if (!this.refreshable) return false;
    if (this.pending) await this.pending;
    if (this.accessToken !== used && this.accessToken !== null) return true; // renewed meanwhile
    await this.single(() => this.refreshOrLogin());
    return this.accessToken !== null;
  }

  setLogin(result: LoginResult): void {
    this.accessToken = result.access_token;
    this.refreshToken = result.refresh_token;
    this.expiresAt = Date.now() + result.expires_in * 1000;
  }

  setRefresh(result: RefreshResult): void {
    this.accessToken = result.access_token;
    // The server rotates refresh tokens: the presented one is spent.
    this.refreshToken = result.refresh_token ?? this.refreshToken;
    this.expiresAt = Date.now() + result.expires_in * 1000;
  }

  clear(): void {
    this.accessToken = null;
    this.refreshToken = null;
    this.expiresAt = null;
  }

  async refresh(): Promise<RefreshResult> {
    if (this.refreshToken === null) {
      throw new AuthenticationFailedError({
        status: 0,
        code: 'AUTHENTICATION_FAILED',
        message: 'No refresh token: log in first (auth.login) or construct with email/password',
      });
    }
    const res = await this.http.request<RefreshResult>('POST', '/auth/refresh', {
      auth: false,
      body: { refresh_token: this.refreshToken },
    });
    this.setRefresh(res.data);
    return res.data;
  }

  private async login(): Promise<void> {
    const creds = this.credentials!;
    const res = await this.http.request<LoginResult>('POST', '/auth/login', {
      auth: false,
      body: { email: creds.email, password: creds.password },
    });
    this.setLogin(res.data);
  }

  private async refreshOrLogin(): Promise<void> {
    try {
      await this.refresh();
    } catch (err) {
      // A spent or expired refresh token: start a new session when we hold the credentials.
      if (!(err instanceof AuthenticationFailedError) || !this.credentials) throw err;
      this.clear();
      await this.login();
    }
  }

  private single(fn: () => Promise<void>): Promise<void> {
    if (!this.pending) {
      this.pending = fn().finally(() => {
        this.pending = null;
      });
    }
    return this.pending;
  }
}

export class HttpClient {
  readonly baseUrl: string;
  readonly tokens: TokenStore;
  readonly WebSocket: WebSocketConstructor | undefined;
  private readonly fetchImpl: FetchLike;
  private readonly timeoutMs: number;
  private readonly maxRetries: number;
  private readonly maxRetryDelayMs: number;
  private readonly extraHeaders: Record<string, string>;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? envBaseUrl() ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
    const fetchImpl = options.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (!fetchImpl) throw new TypeError('No fetch available: pass options.fetch');
    this.fetchImpl = fetchImpl;
    this.WebSocket =
      options.WebSocket ??
      ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket || undefined);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxRetries = Math.max(0, options.maxRetries ?? 3);
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 30_000;
    this.extraHeaders = { ...(options.headers ?? {}) };
    if (options.apiKey !== undefined && (options.email !== undefined || options.password !== undefined)) {
      throw new TypeError('Pass either apiKey or email/password, not both');
    }
    if ((options.email === undefined) !== (options.password === undefined)) {
      throw new TypeError('email and password go together');
    }
    const credentials =
      options.email !== undefined && options.password !== undefined
        ? { email: options.email, password: options.password }
        : null;
    this.tokens = new TokenStore(this, credentials, options.apiKey ?? null);
  }

  /** The server's origin (`http://host:port`), where the WebSocket routes live. */
  get origin(): string {
    return new URL(this.baseUrl).origin;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    const url = `${this.baseUrl}${path}${encodeQuery(options.query)}`;
    const useAuth = options.auth ?? true;
    const idempotencyKey =
      method === 'POST' ? (options.idempotencyKey ?? crypto.randomUUID()) : undefined;
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    let renewed = false;
    for (let attempt = 0; ; attempt++) {
      const token = useAuth ? await this.tokens.current() : null;
      const headers: Record<string, string> = {
        Accept: 'application/json',
        'X-Request-ID': crypto.randomUUID(),
        'X-Client-Version': CLIENT_VERSION,
        ...this.extraHeaders,
      };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (token) headers['Authorization'] = `Bearer ${token}`;
      if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;

      let response: Response;
      try {
        response = await this.fetchWithTimeout(url, { method, headers, body }, options.signal);
      } catch (cause) {
        if (options.signal?.aborted) throw cause;
        const error = new ConnectionError({
          status: 0,
          code: 'CONNECTION_ERROR',
          message: `${method} ${url} failed: ${(cause as Error)?.message ?? String(cause)}`,
          requestId: headers['X-Request-ID'] ?? null,
          cause,
        });
        // Without a response we cannot know whether the call took effect: resend only what is
        // idempotent, or a POST whose Idempotency-Key the server honours (it answers the resend
        // with the first result).
        if (attempt < this.maxRetries && (IDEMPOTENT.has(method) || options.replaySafe === true)) {
          await sleep(this.backoff(attempt), options.signal);
          continue;
        }
        throw error;
      }

      if (response.ok) return this.success<T>(response);
      const error = await this.failure(response);
      if (response.status === 401 && useAuth && !renewed && (await this.tokens.renewAfter401(token))) {
        renewed = true; // one renewal per call: a second 401 is the answer
        attempt--;
        continue;
      }
      const retryable =
        RETRY_STATUSES.has(response.status) ||
        (idempotencyKey !== undefined && keyInFlight(response.status, error));
      if (retryable && attempt < this.maxRetries) {
        const delay = error.retryAfter !== null ? error.retryAfter * 1000 : this.backoff(attempt);
        if (delay <= this.maxRetryDelayMs) {
          await sleep(delay, options.signal);
          continue;
        }
      }
      throw error;
    }
  }

  private backoff(attempt: number): number {
    // Exponential with full jitter: 0.5 s, 1 s, 2 s ... capped.
    const base = Math.min(this.maxRetryDelayMs, 500 * 2 ** attempt);
    return base / 2 + Math.random() * (base / 2);
  }

  private async fetchWithTimeout(
    url: string,
    init: RequestInit,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    return this.fetchImpl(url, { ...init, signal: combined });
  }

  private async success<T>(response: Response): Promise<ApiResponse<T>> {
    const requestId = response.headers.get('x-request-id');
    if (response.status === 204) {
      return { status: 204, data: undefined as T, meta: {} as Meta & JsonObject, requestId };
    }
    const text = await response.text();
    let parsed: { data?: T; meta?: Meta & JsonObject };
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch (cause) {
      throw new AInTandemError({
        status: response.status,
        code: 'INVALID_RESPONSE',
        message: `Expected a JSON envelope, got: ${text.slice(0, 200)}`,
        requestId,
        cause,
      });
    }
    const meta = (parsed.meta ?? {}) as Meta & JsonObject;
    return {
      status: response.status,
      data: parsed.data as T,
      meta,
      requestId: meta.request_id ?? requestId,
    };
  }

  private async failure(response: Response): Promise<AInTandemError> {
    const headerId = response.headers.get('x-request-id');
    const retryAfter = parseRetryAfter(response.headers.get('retry-after'));
    const text = await response.text().catch(() => '');
    let envelope: { error?: { code?: string; message?: string; details?: JsonObject }; meta?: Meta };
    try {
      envelope = text ? JSON.parse(text) : {};
    } catch {
      envelope = {};
    }
    const err = envelope.error ?? {};
    return errorFor({
      status: response.status,
      code: err.code ?? `HTTP_${response.status}`,
      message: err.message ?? (text.slice(0, 200) || response.statusText || `HTTP ${response.status}`),
      details: err.details ?? {},
      requestId: envelope.meta?.request_id ?? headerId,
      retryAfter,
    });
  }
}
