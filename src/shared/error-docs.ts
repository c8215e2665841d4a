import { errorRegistry } from './errors.ts'

/** docs/errors.md, generated from the error registry. */
export function renderErrorDocs(): string {
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
them. 5xx responses never carry internals (stack traces, SQL) outside development.

| Code | Status | Title | Meaning and fix |
| --- | --- | --- | --- |
${rows.join('\n')}
`
}
