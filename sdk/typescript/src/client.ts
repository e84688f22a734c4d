import { HttpClient, type ClientOptions } from './http.js';
import {
  AuthApi,
  CollaborationsApi,
  MessagesApi,
  SandboxesApi,
  SystemApi,
  WorkspacesApi,
} from './resources.js';

/**
 * The AInTandem API client.
 *
 * ```ts
 * const client = new AInTandemClient({ baseUrl: 'http://localhost:8000/api/v1', email, password });
 * const workspace = await client.workspaces.create({ name: 'My Workspace' });
 * ```
 *
 * Authenticate with `apiKey` (an access token, sent as `Authorization: Bearer`, never refreshed)
 * or `email` + `password` (logged in on first use; the access token is refreshed through
 * POST /auth/refresh before it expires and after a 401). Without either, only `auth.register`,
 * `auth.login` and `system.*` work until `auth.login()` is called.
 */
export class AInTandemClient {
  readonly auth: AuthApi;
  readonly workspaces: WorkspacesApi;
  readonly sandboxes: SandboxesApi;
  readonly messages: MessagesApi;
  readonly collaborations: CollaborationsApi;
  readonly system: SystemApi;
  /** The transport (base URL, tokens); exposed for advanced use. */
  readonly http: HttpClient;

  constructor(options: ClientOptions = {}) {
    this.http = new HttpClient(options);
    this.auth = new AuthApi(this.http);
    this.workspaces = new WorkspacesApi(this.http);
    this.sandboxes = new SandboxesApi(this.http);
    this.messages = new MessagesApi(this.http);
    this.collaborations = new CollaborationsApi(this.http);
    this.system = new SystemApi(this.http);
  }

  /** The API base URL in use, e.g. `http://localhost:8000/api/v1`. */
  get baseUrl(): string {
    return this.http.baseUrl;
  }
}
