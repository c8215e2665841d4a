import { defaultModules } from '../app/create-plinth.ts'
import { assertModules } from '../app/module-checks.ts'
import { renderErrorDocs } from '../shared/error-docs.ts'
import { errorRegistry, moduleErrorCodes } from '../shared/errors.ts'
import { type CliIo, printJson } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

/**
 * `plinth errors [--json]`: the error-code reference of this application — Plinth's codes (what
 * docs/errors.md lists) and those its modules declare — as Markdown, or as JSON. The modules are
 * checked as the boot checks them, so a clash fails here too.
 */
export async function errorsCommand(input: CommandInput, io: CliIo): Promise<number> {
  const modules = defaultModules()
  assertModules(modules)
  const names = new Set(modules.map((m) => m.name))
  const declared = moduleErrorCodes().filter((e) => names.has(e.module))
  if (input.json)
    printJson(io, [
      ...Object.entries(errorRegistry).map(([code, e]) => ({
        code,
        status: e.status,
        title: e.title,
        detail: e.detail,
        module: null,
      })),
      ...declared.map(({ code, status, title, detail, module }) => ({ code, status, title, detail, module })),
    ])
  else io.out(renderErrorDocs(declared).trimEnd())
  return 0
}
