import { errorRegistry, type RegisteredModuleError } from './errors.ts'

/**
 * docs/errors.md, generated from the error registry; with `moduleErrors` (an application's, what
 * `plinth errors` prints), a section per module lists its own codes after Plinth's.
 */
export function renderErrorDocs(moduleErrors: readonly RegisteredModuleError[] = []): string {
  const rows = Object.entries(errorRegistry).map(
    ([code, e]) => `| \`${code}\` | ${e.status} | ${e.title} | ${e.detail.replaceAll('|', '\\|')} |`,
  )
  return `# Error codes

<!-- Generated from src/shared/errors.ts by \`npm run docs:generate\`; do not edit by hand. -->

Every error response is \`application/problem+json\` (RFC 9457):

\`\`\`json
{
  "type": "urn:plinth:error:PLINTH_HTTP_NOT_FOUND",
  "title": "Not Found",
  "status": 404,
  "detail": "No route matches this path. The routes are listed in /api/openapi.json.",
  "code": "PLINTH_HTTP_NOT_FOUND",
  "requestId": "5f0c8a3e-…",
  "instance": "/api/v1/nope"
}
\`\`\`

Validation failures add \`errors: [{ in, field, message }]\`. Codes are stable: clients may rely on
them. 5xx responses never carry internals (stack traces, SQL) outside development. An
application's modules may declare codes of their own (\`errors\` of \`defineModule\`, never
\`PLINTH_…\`): \`node main.ts errors\` prints this reference with them.

| Code | Status | Title | Meaning and fix |
| --- | --- | --- | --- |
${rows.join('\n')}
${renderModuleErrors(moduleErrors)}`
}

function renderModuleErrors(moduleErrors: readonly RegisteredModuleError[]): string {
  const modules = [...new Set(moduleErrors.map((e) => e.module))]
  return modules
    .map((module) => {
      const rows = moduleErrors
        .filter((e) => e.module === module)
        .map((e) => `| \`${e.code}\` | ${e.status} | ${e.title} | ${e.detail.replaceAll('|', '\\|')} |`)
      return `
## Module \`${module}\`

| Code | Status | Title | Meaning and fix |
| --- | --- | --- | --- |
${rows.join('\n')}
`
    })
    .join('')
}
