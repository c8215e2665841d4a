import { defaultModules } from '../app/create-plinth.ts'
import { cliCaller } from '../core/audit.ts'
import type { ImportReport } from '../core/import.ts'
import type { ImportProgress } from '../modules/imports/import-engine.ts'
import { importServicesOf } from '../modules/imports/imports.module.ts'
import type { MigrationReport } from '../modules/imports/migration-service.ts'
import { PlinthError } from '../shared/errors.ts'
import { type CliIo, printJson, UsageError } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

/** A progress line on a terminal's standard error, redrawn at most every 200 ms. */
function progressBar(enabled: boolean) {
  let last = 0
  const started = Date.now()
  return {
    update(p: ImportProgress) {
      if (!enabled) return
      const now = Date.now()
      if (now - last < 200) return
      last = now
      const share = p.bytesTotal > 0 ? p.bytesRead / p.bytesTotal : 1
      const width = 30
      const filled = Math.round(share * width)
      const rate = Math.round(p.rows / Math.max((now - started) / 1000, 0.001))
      process.stderr.write(
        `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(share * 100).toFixed(1)}% ${p.rows} rows ${rate} rows/s`,
      )
    },
    done() {
      if (enabled && last > 0) process.stderr.write('\n')
    },
  }
}

function formatFiles(report: ImportReport): string {
  const lines: string[] = []
  for (const f of report.files) {
    lines.push(
      `${f.file}: ${f.status}${f.resumedAtLine > 0 ? ` (resumed after line ${f.resumedAtLine})` : ''} — ${f.rows} rows: ${f.inserted} ${report.dryRun ? 'would be inserted' : 'inserted'}, ${f.updated} ${report.dryRun ? 'would be updated' : 'updated'}, ${f.unchanged} unchanged, ${f.rejected} rejected`,
    )
    if (f.error) lines.push(`  error: ${f.error}`)
    for (const r of f.rejections.slice(0, 50)) lines.push(`  line ${r.line}: ${r.reason}`)
    if (f.rejected > 50)
      lines.push(
        `  … ${f.rejected - 50} more rejected rows (--json lists up to 1000; all are in import_rejections)`,
      )
  }
  if (report.dryRun) lines.push('dry run: nothing was changed')
  return lines.join('\n')
}

function formatMigration(report: MigrationReport): string {
  const verb = report.dryRun ? 'would be created' : 'created'
  const lines = [
    `${report.source}: ${report.users.created} accounts ${verb}, ${report.users.unchanged} already brought over, ${report.users.exists} already had an account, ${report.users.skipped} cannot come over`,
  ]
  for (const u of report.users.list)
    if (u.outcome === 'skipped' || u.outcome === 'exists')
      lines.push(
        `  ${u.outcome === 'skipped' ? 'cannot' : 'exists'} ${u.collection}/${u.externalId} ${u.email ?? '(no e-mail)'}: ${u.reason}`,
      )
  const oauth = report.users.list.filter((u) => u.oauthProviders && u.outcome !== 'skipped')
  if (oauth.length > 0)
    lines.push(
      `  ${oauth.length} of them also signed in with OAuth2 (${[...new Set(oauth.flatMap((u) => u.oauthProviders ?? []))].join(', ')}): that link does not come over; they sign in with their password, or reset it`,
    )
  for (const [name, c] of Object.entries(report.records))
    lines.push(`  records of ${name}: ${c.inserted} inserted, ${c.updated} updated, ${c.unchanged} unchanged`)
  if (report.dryRun) lines.push('dry run: nothing was changed')
  return lines.join('\n')
}

/** `plinth import <module> <dataset> <file|dir>…`, `plinth import pocketbase <dir>`, `plinth import supabase <url>`. */
export async function importCommand(input: CommandInput, io: CliIo): Promise<number> {
  const [source, second, third] = input.args
  const dryRun = Boolean(input.values['dry-run'])
  const batchSize = input.values['batch-size'] === undefined ? undefined : Number(input.values['batch-size'])
  if (batchSize !== undefined && !(Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= 50_000))
    throw new UsageError('--batch-size is a whole number from 1 to 50000')
  const collections =
    typeof input.values.collections === 'string'
      ? input.values.collections
          .split(',')
          .map((c) => c.trim())
          .filter(Boolean)
      : []
  const modules = defaultModules()
  if (source === 'pocketbase' || source === 'supabase') {
    if (third !== undefined) throw new UsageError(`plinth import ${source} takes one argument`)
    if (source === 'supabase' && collections.length > 0)
      throw new UsageError('--collections is for PocketBase')
  } else if (third === undefined) throw new UsageError('give the module, the dataset and a file or directory')
  return withCliPlinth({ verbose: input.verbose, migrate: true, modules }, async (plinth) => {
    const services = importServicesOf(plinth.context)
    const caller = cliCaller()
    if (source === 'pocketbase' || source === 'supabase') {
      let url = second!
      if (source === 'supabase' && url.startsWith('env:')) {
        url = process.env[url.slice(4)] ?? ''
        if (!url) throw new UsageError(`${second} is not set`)
      }
      const report =
        source === 'pocketbase'
          ? await services.migrations.pocketbase({ dir: second!, collections, dryRun, caller })
          : await services.migrations.supabase({ url, dryRun, caller })
      if (input.json) printJson(io, report)
      else io.out(formatMigration(report))
      return report.ok ? 0 : 1
    }
    const module = modules.find((m) => m.name === source)
    const dataset = module?.importables?.find((d) => d.name === second)
    if (!module || !dataset) {
      const known = modules.flatMap((m) => (m.importables ?? []).map((d) => `${m.name} ${d.name}`))
      throw new PlinthError(
        'PLINTH_IMPORT_UNKNOWN_DATASET',
        `No module "${source}" with an importable dataset "${second}"; known: ${known.length > 0 ? known.join(', ') : 'none'}`,
      )
    }
    const bar = progressBar(Boolean(process.stderr.isTTY) && !input.json)
    const report = await services.files.run({
      module: module.name,
      dataset,
      paths: [third!],
      dryRun,
      ...(batchSize ? { batchSize } : {}),
      caller,
      onProgress: (p) => bar.update(p),
    })
    bar.done()
    if (input.json) printJson(io, report)
    else io.out(formatFiles(report))
    return report.ok ? 0 : 1
  })
}
