import { configSchema } from './config.schema.ts'
import type { ConfigKey } from './config-types.ts'

function formatMs(ms: number): string {
  if (ms !== 0 && ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms !== 0 && ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}

function formatDefault(key: ConfigKey<unknown>): string {
  if (key.defaultDoc) return key.defaultDoc
  if (key.default === undefined) return '—'
  const value = key.default
  if (key.type.startsWith('duration') && typeof value === 'number') return `\`${formatMs(value)}\``
  if (key.type.startsWith('size') && typeof value === 'number') return `\`${value / 1024}kb\``
  if (Array.isArray(value)) return value.length === 0 ? '(empty)' : `\`${value.join(',')}\``
  return `\`${String(value)}\``
}

const cell = (text: string) => text.replaceAll('|', '\\|').replaceAll('\n', ' ')

/** docs/configuration.md, generated from the config schema so that it cannot drift. */
export function renderConfigDocs(): string {
  const rows = Object.values(configSchema as Record<string, ConfigKey<unknown>>).map((key) => {
    const name = key.secret ? `\`${key.env}\` (or \`${key.env}_FILE\`)` : `\`${key.env}\``
    return `| ${name} | ${cell(key.type)} | ${cell(formatDefault(key))} | ${key.secret ? 'yes' : ''} | ${cell(key.doc)} |`
  })
  return `# Configuration reference

<!-- Generated from src/config/config.schema.ts by \`npm run docs:generate\`; do not edit by hand. -->

Plinth reads its configuration from environment variables only (and from a \`.env\` file in the
working directory, whose values never override variables already set). Every secret can instead be
read from a file named by \`<NAME>_FILE\` (Docker and Kubernetes secrets); setting both is an error.

At start, and with \`plinth config check\`, every value is validated; if anything is missing or
invalid Plinth exits non-zero with one message that lists every problem and how to fix it. In
\`staging\` and \`production\` it also refuses unsafe settings: a missing or short
\`PLINTH_SECRET_KEY\`, request-body logging, pretty or trace logs (production), the embedded database
with more than one replica, and \`*\` CORS origins with credentials.

Durations accept \`500ms\`, \`5s\`, \`2m\`, \`1h\`, \`30d\` or a bare number of milliseconds; sizes accept
\`512kb\`, \`1mb\` or bytes; booleans accept \`true/false\`, \`1/0\`, \`yes/no\`, \`on/off\`.

| Variable | Type | Default | Secret | Description |
| --- | --- | --- | --- | --- |
${rows.join('\n')}
`
}
