// Lints the OpenAPI document with Redocly CLI (redocly.yaml: the recommended ruleset, stricter in
// places; .redocly.lint-ignore.yaml: the known exceptions, each with its reason). Exits non-zero on
// any error. Run by `npm run lint` and by test/openapi.test.ts.
import { execFile } from 'node:child_process'
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const cli = createRequire(import.meta.url).resolve('@redocly/cli/bin/cli.js')

export interface LintResult {
  readonly ok: boolean
  readonly output: string
}

/** Lints `document` in a temporary directory beside copies of the rule and ignore files. */
export async function lintOpenApi(document: unknown): Promise<LintResult> {
  const dir = await mkdtemp(join(tmpdir(), 'plinth-openapi-lint-'))
  try {
    await writeFile(join(dir, 'openapi.json'), JSON.stringify(document, null, 2))
    for (const file of ['redocly.yaml', '.redocly.lint-ignore.yaml'])
      await copyFile(join(root, file), join(dir, file))
    try {
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        [cli, 'lint', 'openapi.json', '--config', 'redocly.yaml', '--format', 'stylish'],
        {
          cwd: dir,
          env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
        },
      )
      return { ok: true, output: `${stdout}${stderr}` }
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string }
      return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? e.message}` }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  const { openApiDocument } = await import('./openapi-document.ts')
  const result = await lintOpenApi(await openApiDocument())
  if (!result.ok) {
    console.error(result.output)
    console.error('The OpenAPI document does not pass the linter (scripts/lint-openapi.ts, redocly.yaml).')
    process.exit(1)
  }
  console.error('OpenAPI document: Redocly lint passed')
}
