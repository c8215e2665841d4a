import { sql } from 'kysely'
import { createFilesService } from '../modules/files/files.service.ts'
import { sweepFiles, verifyFiles } from '../modules/files/sweep.ts'
import { type CliIo, printJson } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

/** `plinth files usage | sweep | verify`. */
export async function filesCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'usage' | 'sweep' | 'verify'
  const print = (json: unknown, text: string) => (input.json ? printJson(io, json) : io.out(text))
  return withCliPlinth({ verbose: input.verbose }, async (plinth) => {
    const ctx = plinth.context
    try {
      if (action === 'usage') {
        const rows = await ctx.db.kysely
          .selectFrom('files')
          .select([
            'owner',
            sql<string>`count(*)`.as('files'),
            sql<string>`coalesce(sum(size), 0)`.as('bytes'),
          ])
          .groupBy('owner')
          .orderBy(sql`sum(size)`, 'desc')
          .execute()
        const owners = rows.map((r) => ({ owner: r.owner, files: Number(r.files), bytes: Number(r.bytes) }))
        const total = owners.reduce((a, o) => ({ files: a.files + o.files, bytes: a.bytes + o.bytes }), {
          files: 0,
          bytes: 0,
        })
        const storage = await createFilesService(ctx)
          .storage()
          .then((s) => s.location)
          .catch(() => null)
        print(
          { storage, ...total, owners },
          [
            `storage: ${storage ?? 'none configured'}`,
            `${total.files} file(s), ${total.bytes} byte(s)`,
            ...owners.map(
              (o) =>
                `  ${o.owner}  ${String(o.files).padStart(6)} file(s)  ${String(o.bytes).padStart(12)} byte(s)`,
            ),
          ].join('\n'),
        )
        return 0
      }
      if (action === 'sweep') {
        const report = await sweepFiles(ctx, { dryRun: Boolean(input.values['dry-run']) })
        print(
          report,
          [
            `${report.objects} object(s) in the storage`,
            `${report.orphanObjects.length} orphan object(s) ${report.dryRun ? 'would be removed' : 'removed'}${report.orphanObjects.map((k) => `\n  ${k}`).join('')}`,
            `${report.missingObjects.length} row(s) whose object is missing (restore them from a backup)${report.missingObjects.map((m) => `\n  ${m.id} (${m.owner}/${m.sha256})`).join('')}`,
            `${report.staleStaging} stale staged upload(s) ${report.dryRun ? 'found' : 'removed'}`,
          ].join('\n'),
        )
        return report.missingObjects.length > 0 ? 1 : 0
      }
      const report = await verifyFiles(ctx)
      print(
        report,
        [
          `${report.checked} file(s) read back and hashed`,
          ...report.missing.map((id) => `MISSING ${id}`),
          ...report.corrupt.map((id) => `CORRUPT ${id}: its bytes no longer match its SHA-256`),
        ].join('\n'),
      )
      return report.missing.length + report.corrupt.length > 0 ? 1 : 0
    } finally {
      await createFilesService(ctx).close()
    }
  })
}
