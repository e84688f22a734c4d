/**
 * `@aintandem/sdk`: the AInTandem REST + WebSocket API for TypeScript and JavaScript.
 *
 * Returned objects keep the server's snake_case JSON field names (`workspace_id`, `created_at`),
 * exactly as the REST contract documents them; workspaces and sandboxes also carry `id`.
 */

export { AInTandemClient } from './client.js';
export {
  CLIENT_VERSION,
  DEFAULT_BASE_URL,
  HttpClient,
  TokenStore,
  type AnonymousOptions,
  type ApiKeyOptions,
  type ApiResponse,
  type ClientOptions,
  type PasswordOptions,
  type RequestOptions,
  type WebSocketConstructor,
  type WebSocketLike,
} from './http.js';
export * from './errors.js';
export { Paginator, type Page } from './pagination.js';
export {
  AuthApi,
  Collaboration,
  CollaborationsApi,
  MessagesApi,
  SandboxesApi,
  SystemApi,
  TERMINAL_COLLABORATION_STATUSES,
  WorkspacesApi,
  type WatchOptions,
} from './resources.js';
export { Sandbox, type WaitOptions } from './sandbox.js';
export { EventStream, type StreamOptions } from './stream.js';
export * from './types.js';
export { VERSION } from './version.js';
