import { BASE_URL } from './helpers.js';

export const COLLABORATION_ROUTES = [
  'POST /api/v1/workspaces/{workspace_id}/collaboration/orchestrate',
  'GET /api/v1/collaborations/{collaboration_id}',
  'POST /api/v1/collaborations/{collaboration_id}/cancel',
];

/** Which collaboration routes the running server lacks (from its OpenAPI document). */
export async function collaborationRoutes(): Promise<{ missing: string[] }> {
  const doc = (await (await fetch(`${BASE_URL}/openapi.json`)).json()) as {
    paths: Record<string, Record<string, unknown>>;
  };
  const missing = COLLABORATION_ROUTES.filter((route) => {
    const [method, path] = route.split(' ') as [string, string];
    return !doc.paths[path]?.[method.toLowerCase()];
  });
  return { missing };
}
