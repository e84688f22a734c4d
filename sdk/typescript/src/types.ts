/**
 * Wire types: every object the SDK sends or returns keeps the server's snake_case JSON field
 * names exactly (`workspace_id`, `created_at`, ...), so what you read here is what the REST
 * contract documents. SDK-only options (constructor options, timeouts, polling) are camelCase.
 *
 * An interface tagged `@schema X` mirrors component schema `X` of the server's OpenAPI document
 * (GET /api/v1/openapi.json); the drift test compares their field names. `@schema live:X` marks a
 * response the server declares only as a free-form object: the tests check it against a real
 * response instead.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

// -- envelope ----------------------------------------------------------------------------------

/** @schema Meta */
export interface Meta {
  request_id: string;
  timestamp: string;
  version: string;
}

/** @schema PageMeta */
export interface PageMeta extends Meta {
  total: number;
  page: number;
  per_page: number;
  total_pages: number;
  has_next: boolean;
  has_prev: boolean;
}

/** @schema ErrorBody */
export interface ErrorBody {
  code: string;
  message: string;
  details?: JsonObject;
}

// -- auth ----------------------------------------------------------------------------------------

export interface RegisterRequest {
  email: string;
  password: string;
  name: string;
  organization?: string | null;
}

/** @schema UserOut */
export interface User {
  user_id: string;
  email: string;
  name: string;
}

/** @schema RegisteredUser */
export interface RegisteredUser extends User {
  organization: string | null;
  created_at: string;
}

/** @schema LoginResult */
export interface LoginResult {
  access_token: string;
  refresh_token: string;
  token_type?: string;
  expires_in: number;
  user: User;
}

/** @schema RefreshResult */
export interface RefreshResult {
  access_token: string;
  refresh_token: string;
  token_type?: string;
  expires_in: number;
}

// -- workspaces ----------------------------------------------------------------------------------

export type LLMProviderName = 'qwen' | 'glm' | 'claude' | 'openai';
export type PolicyMode = 'allow_all' | 'allow_list' | 'deny_list';

/** @schema ResourceDefaults */
export interface ResourceDefaults {
  memory_mb?: number;
  cpu_cores?: number;
  timeout_seconds?: number;
}

/** @schema WorkspaceSettings */
export interface WorkspaceSettings {
  max_sandboxes?: number;
  default_llm_provider?: LLMProviderName;
  collaboration_policy?: PolicyMode;
  resource_defaults?: ResourceDefaults;
  /** What the workspace's sandboxes may reach besides each other (default 'none'). */
  egress?: Egress;
}

export type Egress = 'none' | 'internet';

export interface WorkspaceSettingsPatch {
  max_sandboxes?: number | null;
  default_llm_provider?: LLMProviderName | null;
  collaboration_policy?: PolicyMode | null;
  resource_defaults?: Partial<ResourceDefaults> | null;
  egress?: Egress | null;
}

export interface WorkspaceCreate {
  name: string;
  description?: string | null;
  settings?: WorkspaceSettingsPatch | null;
}

export interface WorkspaceUpdate {
  name?: string | null;
  description?: string | null;
  settings?: WorkspaceSettingsPatch | null;
}

/** SDK convenience on returned resources: `id` is the same value as the `*_id` field. */
export interface HasId {
  readonly id: string;
}

/** @schema WorkspaceOut */
export interface WorkspaceData {
  workspace_id: string;
  name: string;
  description: string | null;
  owner_id: string;
  settings: WorkspaceSettings;
  sandbox_count: number;
  created_at: string;
  updated_at: string;
}

/** @schema SandboxSummary */
export interface SandboxSummary {
  sandbox_id: string;
  name: string;
  status: SandboxStatusName;
}

/** @schema WorkspaceDetail */
export interface WorkspaceDetailData extends WorkspaceData {
  sandboxes: SandboxSummary[];
}

/** A workspace as listed or created, plus `id` (= `workspace_id`). */
export type Workspace = WorkspaceData & HasId;
/** A workspace with its sandboxes (GET/PUT /workspaces/{id}), plus `id`. */
export type WorkspaceDetail = WorkspaceDetailData & HasId;

export interface ListParams {
  /** First page to fetch (default 1); iteration continues from there. */
  page?: number;
  /** Page size, 1-100 (default 20). */
  per_page?: number;
  sort?: string;
  order?: 'asc' | 'desc';
  search?: string;
}

// -- configuration -------------------------------------------------------------------------------

export interface LLMParameters {
  temperature?: number | null;
  max_tokens?: number | null;
  top_p?: number | null;
}

export interface LLMProviderIn {
  name: LLMProviderName;
  /** Write-only: a key, or a `${ENV_VAR}` reference resolved by the worker. */
  api_key?: string | null;
  base_url?: string | null;
  models?: string[];
  default_model?: string | null;
  parameters?: LLMParameters | null;
}

/** @schema LLMProviderOut */
export interface LLMProviderOut {
  name: string;
  /** Masked, or the `${ENV_VAR}` reference as written. */
  api_key?: string | null;
  api_key_set?: boolean;
  base_url?: string | null;
  models?: string[];
  default_model?: string | null;
  parameters?: JsonObject | null;
}

export interface McpServerIn {
  name: string;
  transport?: 'stdio' | 'sse';
  command?: string | null;
  args?: string[];
  url?: string | null;
  env?: Record<string, string>;
  enabled?: boolean;
}

/** @schema McpServerOut */
export interface McpServerOut {
  name: string;
  status: string;
  transport: string;
  command?: string | null;
  args?: string[];
  url?: string | null;
  env?: Record<string, string>;
  enabled?: boolean;
}

/** @schema PolicyRule */
export interface PolicyRule {
  from: string;
  to: string | string[];
  message_types?: string[];
  approval_required?: boolean;
}

/** @schema CollaborationPolicy */
export interface CollaborationPolicy {
  mode?: PolicyMode;
  rules?: PolicyRule[];
}

/**
 * The provider and model an agent that names none really gets: `offline` is the embedded model,
 * used when the workspace configures no usable provider.
 * @schema EffectiveLLM
 */
export interface EffectiveLLM {
  provider: string;
  model: string;
  source: 'default_llm_provider' | 'only_provider' | 'offline';
  reason: string;
}

/** @schema WorkspaceConfigOut */
export interface WorkspaceConfig {
  workspace_id: string;
  settings: WorkspaceSettings;
  llm_providers: LLMProviderOut[];
  mcp_servers: McpServerOut[];
  collaboration_policy: CollaborationPolicy;
  effective_llm: EffectiveLLM;
}

export interface WorkspaceConfigUpdate {
  settings?: WorkspaceSettingsPatch | null;
  llm_providers?: LLMProviderIn[] | null;
  mcp_servers?: McpServerIn[] | null;
  collaboration_policy?: CollaborationPolicy | null;
}

// -- sandboxes -----------------------------------------------------------------------------------

export type SandboxStatusName =
  | 'provisioning'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'restarting'
  | 'error'
  | (string & {});

/** @schema AgentSpec */
export interface AgentSpec {
  name: string;
  role: string;
  description?: string | null;
  system_prompt?: string | null;
  capabilities?: string[];
  llm_provider?: LLMProviderName | null;
  llm_model?: string | null;
  llm_parameters?: LLMParameters | null;
}

/** @schema AgentConfig */
export interface AgentConfig {
  primary_agent: AgentSpec;
  sub_agents?: AgentSpec[];
  llm_provider?: LLMProviderName | null;
  llm_model?: string | null;
  llm_parameters?: LLMParameters | null;
}

/** @schema ResourcesIn */
export interface Resources {
  memory_mb?: number | null;
  cpu_cores?: number | null;
  timeout_seconds?: number | null;
  max_processes?: number | null;
  /** Size of /workspace in MiB (default 1024, at most the operator's cap). */
  disk_mb?: number | null;
}

/** Body of POST /workspaces/{id}/sandboxes. */
export interface SandboxConfig {
  name: string;
  agent_config: AgentConfig;
  resources?: Resources | null;
  mcp_servers?: string[];
  environment_variables?: Record<string, string>;
}

/** @schema ConnectionDetails */
export interface ConnectionDetails {
  collaboration_bus_url: string;
  api_endpoint: string;
}

/** @schema Health */
export interface Health {
  status: 'healthy' | 'unhealthy' | 'unknown' | (string & {});
  last_heartbeat: string | null;
}

/** @schema SandboxCreated */
export interface SandboxCreated {
  sandbox_id: string;
  name: string;
  workspace_id: string;
  status: SandboxStatusName;
  connection_details: ConnectionDetails;
  created_at: string;
}

/** @schema SandboxOut */
export interface SandboxData {
  sandbox_id: string;
  name: string;
  workspace_id: string;
  status: SandboxStatusName;
  status_reason: string | null;
  agent_config: AgentConfig;
  resources: Resources;
  mcp_servers: string[];
  health: Health;
  restart_count: number;
  created_at: string;
  updated_at: string;
  started_at: string | null;
}

/** @schema SandboxMetricsSummary */
export interface SandboxMetricsSummary {
  cpu_usage_percent: number | null;
  memory_usage_mb: number | null;
  message_count: number;
  uptime_seconds: number;
}

/** @schema SandboxDetail */
export interface SandboxDetail extends SandboxData {
  metrics: SandboxMetricsSummary;
  connection_details: ConnectionDetails;
}

/** @schema LifecycleAccepted */
export interface LifecycleAccepted {
  sandbox_id: string;
  status: SandboxStatusName;
  estimated_ready_seconds?: number | null;
}

export interface Allocation {
  allocated: number | null;
  used: number | null;
  percentage?: number;
}

/** @schema live:SandboxStatus */
export interface SandboxStatus {
  sandbox_id: string;
  status: SandboxStatusName;
  status_reason: string | null;
  health: Health & { uptime_seconds: number };
  resources: {
    memory_mb: Allocation;
    cpu_cores: Allocation;
    max_processes: Allocation;
    /** /workspace: its size (resources.disk_mb) and what is used of it. */
    disk_mb?: Allocation;
  };
  connections: {
    collaboration_bus: string;
    mcp_servers: Record<string, string>;
  };
}

/** @schema LogEntry */
export interface LogEntry {
  timestamp: string;
  level: 'debug' | 'info' | 'warn' | 'error' | (string & {});
  message: string;
}

/** @schema LogsOut */
export interface SandboxLogs {
  sandbox_id: string;
  logs: LogEntry[];
  meta: { total: number; since: string | null } & JsonObject;
}

export interface LogsParams {
  limit?: number;
  since?: string | Date;
  level?: 'debug' | 'info' | 'warn' | 'error';
}

/** @schema live:SandboxMetrics */
export interface SandboxMetrics {
  sandbox_id: string;
  timestamp: string | null;
  resources: {
    cpu_usage_percent: number | null;
    memory_usage_mb: number | null;
    memory_usage_percent: number | null;
    disk_usage_mb: number | null;
    disk_limit_mb?: number | null;
    disk_usage_percent?: number | null;
    network_in_bytes: number | null;
    network_out_bytes: number | null;
    processes: number;
  } | null;
  messaging: {
    messages_sent: number;
    messages_received: number;
    messages_failed: number;
    avg_response_time_ms: number | null;
  } & JsonObject;
  health: { status: string; uptime_seconds: number; restart_count: number };
}

/** @schema SandboxConfigOut */
export interface SandboxConfigData {
  sandbox_id: string;
  agent_config: AgentConfig;
  resources: Resources;
  mcp_servers: string[];
  /** Values are masked by the server. */
  environment_variables: Record<string, string>;
  /** Which changes applied at once and which at the next start. */
  applied?: Record<string, string>;
}

export interface SandboxConfigUpdate {
  agent_config?: AgentConfig | null;
  resources?: Resources | null;
  mcp_servers?: string[] | null;
  environment_variables?: Record<string, string> | null;
}

export interface SandboxListParams extends ListParams {
  status?: 'running' | 'stopped' | 'error';
}

// -- messages ------------------------------------------------------------------------------------

export type MessageType = 'request' | 'response' | 'notification' | 'command';
export type MessageStatus =
  | 'queued'
  | 'delivered'
  | 'responded'
  | 'failed'
  | 'timeout'
  | 'pending_approval'
  | (string & {});

/** Everything of POST /sandboxes/{id}/messages besides `to_sandbox` and `content`. */
export interface SendMessageOptions {
  to_agent?: string | null;
  from_agent?: string | null;
  message_type?: MessageType;
  priority?: number;
  requires_response?: boolean;
  timeout?: number;
  correlation_id?: string | null;
}

/** @schema MessageAccepted */
export interface MessageAccepted {
  message_id: string;
  status: MessageStatus;
  timestamp: string;
}

/** @schema MessageOut */
export interface Message {
  message_id: string;
  from_sandbox: string | null;
  from_agent: string | null;
  to_sandbox: string;
  to_agent: string | null;
  message_type: MessageType | (string & {});
  content: JsonObject;
  priority: number;
  requires_response: boolean;
  status: MessageStatus;
  status_reason: string | null;
  correlation_id: string | null;
  broadcast_id: string | null;
  attempts: number;
  timestamp: string;
  delivered_at: string | null;
  responded_at: string | null;
}

/** @schema MessageDetail */
export interface MessageDetail extends Message {
  /** The linked reply, once there is one. */
  response: (JsonObject & { message_id: string; content: JsonObject }) | null;
}

/** What a message list holds and the filters that made it. @schema MessageListMeta */
export interface MessageListMeta {
  /** Messages matching the filters (may exceed `returned`). */
  total: number;
  returned: number;
  since: string | null;
  direction?: 'sent' | 'received' | 'both' | null;
  status?: MessageStatus[] | null;
  sandbox_id?: string | null;
}

/** @schema MessageList */
export interface MessageList {
  messages: Message[];
  meta: MessageListMeta;
}

export interface MessagesParams {
  direction?: 'sent' | 'received' | 'both';
  limit?: number;
  since?: string | Date;
  /** Only messages in this delivery status. */
  status?: MessageStatus;
}

/** Query of GET /workspaces/{id}/messages (newest first). */
export interface WorkspaceMessagesParams {
  /** Only messages in this delivery status (e.g. `failed`). */
  status?: MessageStatus;
  /** Only messages this sandbox sent or received. */
  sandbox_id?: string;
  since?: string | Date;
  /** 1-1000 (default 50). */
  limit?: number;
}

/** @schema live:MessageRetried */
export interface MessageRetried {
  message_id: string;
  status: MessageStatus;
  attempts: number;
  timestamp: string;
}

/** @schema live:MessageDecision */
export interface MessageDecision {
  message_id: string;
  status: MessageStatus;
  timestamp: string;
}

export interface BroadcastRequest {
  from_sandbox: string;
  message_type?: 'notification' | 'command';
  content: JsonObject;
  priority?: number;
  exclude_self?: boolean;
}

/** @schema BroadcastAccepted */
export interface BroadcastAccepted {
  broadcast_id: string;
  recipients: string[];
  denied?: JsonObject[];
  message_ids: string[];
  timestamp: string;
}

// -- discovery and monitoring --------------------------------------------------------------------

export interface DiscoverParams {
  capability?: string;
  role?: string;
  sandbox_id?: string;
}

/** @schema AgentMetrics */
export interface AgentMetrics {
  messages_processed: number;
  avg_response_time_ms: number | null;
}

/** @schema DiscoveredAgent */
export interface DiscoveredAgent {
  sandbox_id: string;
  sandbox_name: string;
  agent_name: string;
  role: string;
  capabilities: string[];
  capabilities_source: 'declared' | 'derived';
  status: 'available' | 'busy' | 'offline';
  metrics: AgentMetrics;
  /** Only present when a capability was queried. */
  match_score?: number | null;
}

/** @schema DiscoveredAgents */
export interface DiscoveredAgents {
  agents: DiscoveredAgent[];
}

export interface AggregateParams {
  since?: string | Date;
  granularity?: 'minute' | 'hour' | 'day';
}

/** @schema live:MetricsAggregate */
export interface MetricsAggregate {
  workspace_id: string;
  period: { start: string; end: string; granularity: string };
  summary: {
    total_sandboxes: number;
    active_sandboxes: number;
    total_messages: number;
    avg_cpu_usage: number | null;
    avg_memory_usage: number | null;
  } & JsonObject;
  by_sandbox: JsonObject[];
}

// -- collaboration -------------------------------------------------------------------------------

export type CollaborationMode = 'orchestrated' | 'peer_to_peer' | 'swarm';
export type CollaborationStatus =
  | 'initializing'
  | 'in_progress'
  | 'completed'
  | 'failed'
  | 'cancelled';

export interface OrchestrateRequest {
  task: string;
  /** Sandbox names or ids (at least two). */
  participants: string[];
  collaboration_mode: CollaborationMode;
  orchestrator?: string | null;
  /** Seconds, 30-3600. */
  timeout?: number;
  deliverables?: string[];
  /** peer_to_peer only: the turn limit (server default: two rounds). */
  max_turns?: number | null;
}

/** @schema CollaborationAccepted */
export interface CollaborationAccepted {
  collaboration_id: string;
  status: CollaborationStatus;
  collaboration_mode: CollaborationMode;
  /** Sandbox ids. */
  participants: string[];
  /** The orchestrating agent (`sandbox_id`, `agent`, ...). */
  orchestrator: Record<string, string>;
  estimated_duration_seconds: number;
}

/** @schema ProgressOut */
export interface CollaborationProgress {
  percentage: number;
  current_step: string | null;
  completed_steps: string[];
  remaining_steps: string[];
}

/** @schema ParticipantOut */
export interface CollaborationParticipant {
  sandbox_id: string;
  name: string;
  agent: string;
  status: 'idle' | 'active' | 'failed' | (string & {});
  messages_exchanged: number;
}

/** @schema CollaborationMessage */
export interface CollaborationMessage {
  message_id: string;
  from: string | null;
  to: string;
  from_agent: string | null;
  to_agent: string | null;
  message_type: string;
  status: string;
  step: string | null;
  content: JsonObject;
  timestamp: string;
}

/** @schema StepOut */
export interface CollaborationStep {
  step: string;
  assignee: string;
  agent: string;
  status: 'running' | 'completed' | 'failed' | 'cancelled' | (string & {});
  attempts: number;
  message_ids: string[];
  output: string | null;
  error: string | null;
}

/** @schema ErrorOut */
export interface CollaborationError {
  code: string | null;
  message: string;
}

/** @schema CollaborationDetail */
export interface CollaborationData {
  collaboration_id: string;
  workspace_id: string;
  task: string;
  collaboration_mode: CollaborationMode;
  orchestrator: Record<string, string>;
  status: CollaborationStatus;
  progress: CollaborationProgress;
  participants: CollaborationParticipant[];
  steps: CollaborationStep[];
  messages: CollaborationMessage[];
  /** Deliverable name → its text. */
  deliverables: Record<string, string>;
  result: JsonObject | null;
  error: CollaborationError | null;
  /** Seconds. */
  timeout: number;
  created_at: string;
  started_at: string | null;
  estimated_completion: string | null;
  completed_at: string | null;
}

/** One item of GET /workspaces/{id}/collaborations. @schema CollaborationSummary */
export interface CollaborationSummary {
  collaboration_id: string;
  workspace_id: string;
  task: string;
  collaboration_mode: CollaborationMode;
  orchestrator: Record<string, string>;
  status: CollaborationStatus;
  percentage: number;
  /** Sandbox ids. */
  participants: string[];
  /** From `result`: the model's own plan or the fallback. */
  plan_source?: string | null;
  warnings?: string[];
  error: CollaborationError | null;
  timeout: number;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
}

/** Query of GET /workspaces/{id}/collaborations (page/per_page, search in the task). */
export interface CollaborationListParams extends ListParams {
  status?: CollaborationStatus;
}

/** @schema CollaborationCancelled */
export interface CollaborationCancelled {
  collaboration_id: string;
  /** `cancelled`, or still `in_progress` when its steps take a while to stop (watch it). */
  status: CollaborationStatus;
  cancel_requested: boolean;
}

// -- system --------------------------------------------------------------------------------------

/** @schema live:SystemHealth */
export interface SystemHealth {
  status: 'healthy' | 'degraded' | 'unhealthy';
  version: string;
  services: Record<string, 'healthy' | 'degraded' | 'unhealthy' | (string & {})>;
  timestamp: string;
}

/** @schema live:SystemInfo */
export interface SystemInfo {
  version: string;
  edition: 'community' | 'enterprise' | (string & {});
  features: {
    max_workspaces: number;
    max_sandboxes_per_workspace: number;
    cross_machine_deployment: boolean;
  } & JsonObject;
  supported_llm_providers: string[];
  supported_mcp_servers: string[];
  /** The model the worker serves when a workspace configures no LLM provider. */
  offline_llm?: JsonObject;
}

// -- streams -------------------------------------------------------------------------------------

export type SandboxChannel = 'messages' | 'events' | 'logs' | 'metrics';

/** One WebSocket frame: `id` is the durable event id (null on `system` frames). */
export interface StreamFrame<D = JsonObject> {
  channel: string;
  event: string;
  data: D;
  timestamp: string;
  id: number | null;
}
