/**
 * What the SDK declares, read from its source with the TypeScript compiler API: every interface
 * in src/types.ts tagged `@schema X` → its fields (inherited ones included), which are optional,
 * which may be null. The drift test compares these with the server's OpenAPI document; live tests
 * compare `@schema live:X` ones with real responses.
 */

import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export interface DeclaredField {
  optional: boolean;
  nullable: boolean;
}

export interface DeclaredSchema {
  tag: string;
  interfaceName: string;
  fields: Map<string, DeclaredField>;
}

const TYPES_FILE = fileURLToPath(new URL('../../src/types.ts', import.meta.url));
let cache: Map<string, DeclaredSchema> | null = null;

export function declaredSchemas(): Map<string, DeclaredSchema> {
  if (cache) return cache;
  const program = ts.createProgram([TYPES_FILE], {
    strict: true,
    target: ts.ScriptTarget.ES2022,
    noEmit: true,
    types: [],
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(TYPES_FILE);
  assert.ok(source, `cannot read ${TYPES_FILE}`);
  const out = new Map<string, DeclaredSchema>();
  for (const node of source.statements) {
    if (!ts.isInterfaceDeclaration(node)) continue;
    const tag = ts.getJSDocTags(node).find((t) => t.tagName.text === 'schema');
    if (!tag) continue;
    const name = ts.getTextOfJSDocComment(tag.comment)?.trim();
    assert.ok(name, `${node.name.text}: @schema without a name`);
    const type = checker.getTypeAtLocation(node.name);
    const fields = new Map<string, DeclaredField>();
    for (const prop of checker.getPropertiesOfType(type)) {
      const propType = checker.getTypeOfSymbolAtLocation(prop, node);
      const parts = propType.isUnion() ? propType.types : [propType];
      fields.set(prop.getName(), {
        optional: (prop.flags & ts.SymbolFlags.Optional) !== 0,
        nullable: parts.some((t) => (t.flags & ts.TypeFlags.Null) !== 0),
      });
    }
    assert.ok(!out.has(name), `@schema ${name} declared twice`);
    out.set(name, { tag: name, interfaceName: node.name.text, fields });
  }
  cache = out;
  return out;
}

/**
 * A response the server declares only as a free-form object: its top-level keys must be exactly
 * the fields the SDK declares for `live:<name>` (required ones present, nothing undeclared).
 */
export function assertDeclaredShape(name: string, value: unknown): void {
  const declared = declaredSchemas().get(`live:${name}`);
  assert.ok(declared, `no interface tagged @schema live:${name}`);
  assert.ok(value && typeof value === 'object', `${name}: not an object`);
  const keys = new Set(Object.keys(value as object));
  const missing = [...declared.fields].filter(([k, f]) => !f.optional && !keys.has(k)).map(([k]) => k);
  const undeclared = [...keys].filter((k) => !declared.fields.has(k));
  assert.deepEqual(
    { missing, undeclared },
    { missing: [], undeclared: [] },
    `${declared.interfaceName} (live:${name}) does not match the server's response: ${JSON.stringify(value).slice(0, 400)}`,
  );
}

type OpenApiSchema = {
  properties?: Record<string, { anyOf?: { type?: string }[]; type?: string | string[] }>;
  required?: string[];
};
export type OpenApi = {
  paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }> }>>;
  components: { schemas: Record<string, OpenApiSchema> };
};

/** Every disagreement between the SDK's declared response types and an OpenAPI document. */
export function drift(openapi: OpenApi, declared = declaredSchemas()): string[] {
  const problems: string[] = [];
  const schemas = openapi.components.schemas;
  for (const [tag, sdk] of declared) {
    if (tag.startsWith('live:')) continue;
    const server = schemas[tag];
    if (!server) {
      problems.push(`${sdk.interfaceName}: the server has no schema ${tag}`);
      continue;
    }
    const props = server.properties ?? {};
    const required = new Set(server.required ?? []);
    for (const field of Object.keys(props)) {
      if (!sdk.fields.has(field)) problems.push(`${tag}.${field}: sent by the server, not declared by ${sdk.interfaceName}`);
    }
    for (const [field, info] of sdk.fields) {
      const prop = props[field];
      if (!prop) {
        problems.push(`${sdk.interfaceName}.${field}: not in the server's ${tag} (renamed or removed?)`);
        continue;
      }
      if (required.has(field) && info.optional) {
        problems.push(`${sdk.interfaceName}.${field}: always sent by the server, declared optional`);
      }
      const serverNullable =
        (prop.anyOf ?? []).some((a) => a.type === 'null') ||
        (Array.isArray(prop.type) && prop.type.includes('null'));
      if (serverNullable && !info.nullable) {
        problems.push(`${sdk.interfaceName}.${field}: may be null on the server, not in the SDK`);
      }
    }
  }
  // Every response body the server declares has an SDK type.
  for (const [path, methods] of Object.entries(openapi.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      for (const [status, response] of Object.entries(op.responses ?? {})) {
        if (!status.startsWith('2')) continue;
        const ref = response.content?.['application/json']?.schema?.$ref;
        const match = ref && /\/(?:List)?Envelope_(.+)_$/.exec(ref);
        if (!match) continue;
        const inner = match[1]!;
        if (inner.startsWith('dict_')) continue; // free-form: checked against live responses
        if (!declared.has(inner)) problems.push(`${method.toUpperCase()} ${path} returns ${inner}: no SDK interface tagged @schema ${inner}`);
      }
    }
  }
  return problems;
}
