import type { Kysely, Selectable } from 'kysely'
import { type Audit, type AuditCaller, callerEntry } from '../../core/audit.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { ErrorGroupSource, ErrorGroupStatus, ErrorGroupsTable } from './errors.tables.ts'

/** One error group as the API shows it. */
export interface ErrorGroupView {
  readonly id: string
  readonly fingerprint: string
  readonly source: ErrorGroupSource
  readonly location: string
  readonly name: string
  readonly message: string
  readonly frames: string[]
  readonly count: number
  readonly firstSeen: string
  readonly lastSeen: string
  readonly sampleRequestId: string | null
  readonly sampleTraceId: string | null
  readonly firstVersion: string
  readonly lastVersion: string
  readonly status: ErrorGroupStatus
  readonly statusChangedAt: string | null
  /** First seen after the running version first started (on any replica). */
  readonly newSinceDeploy: boolean
}

export interface ErrorListFilter {
  readonly status?: ErrorGroupStatus | undefined
  readonly newSinceDeploy?: boolean | undefined
  readonly limit?: number | undefined
}

const iso = (d: Date) => d.toISOString()

/** Reads error groups and changes their status (resolve, mute, reopen), with an audit row for each change. */
export function createErrorService(deps: {
  db: Kysely<PlinthTables>
  audit: Audit
  version: string
  now: () => number
}) {
  const { db } = deps

  /** When the running version first started; recorded on first use (the module's start). */
  async function deployedAt(): Promise<Date> {
    await db
      .insertInto('error_deploys')
      .values({ version: deps.version, started_at: new Date(deps.now()) })
      .onConflict((oc) => oc.column('version').doNothing())
      .execute()
    const row = await db
      .selectFrom('error_deploys')
      .select('started_at')
      .where('version', '=', deps.version)
      .executeTakeFirstOrThrow()
    return row.started_at
  }

  function view(row: Selectable<ErrorGroupsTable>, since: Date): ErrorGroupView {
    return {
      id: row.id,
      fingerprint: row.fingerprint,
      source: row.source,
      location: row.location,
      name: row.error_name,
      message: row.message,
      frames: row.frames === '' ? [] : row.frames.split('\n'),
      count: Number(row.count),
      firstSeen: iso(row.first_seen),
      lastSeen: iso(row.last_seen),
      sampleRequestId: row.sample_request_id,
      sampleTraceId: row.sample_trace_id,
      firstVersion: row.first_version,
      lastVersion: row.last_version,
      status: row.status,
      statusChangedAt: row.status_changed_at ? iso(row.status_changed_at) : null,
      newSinceDeploy: row.first_seen.getTime() >= since.getTime(),
    }
  }

  async function get(id: string): Promise<ErrorGroupView> {
    const since = await deployedAt()
    const row = await db.selectFrom('error_groups').selectAll().where('id', '=', id).executeTakeFirst()
    if (!row) throw new PlinthError('PLINTH_ERROR_GROUP_NOT_FOUND')
    return view(row, since)
  }

  return {
    deployedAt,
    get,

    /** Groups, most recently seen first. */
    async list(filter: ErrorListFilter = {}) {
      const since = await deployedAt()
      let query = db
        .selectFrom('error_groups')
        .selectAll()
        .orderBy('last_seen', 'desc')
        .orderBy('id')
        .limit(filter.limit ?? 100)
      if (filter.status) query = query.where('status', '=', filter.status)
      if (filter.newSinceDeploy) query = query.where('first_seen', '>=', since)
      const rows = await query.execute()
      return {
        deploy: { version: deps.version, startedAt: iso(since) },
        items: rows.map((r) => view(r, since)),
      }
    },

    /** Resolves, mutes or reopens a group; a resolved group opens again by itself when it recurs. */
    async setStatus(id: string, status: ErrorGroupStatus, caller: AuditCaller): Promise<ErrorGroupView> {
      await db.transaction().execute(async (trx) => {
        const before = await trx
          .selectFrom('error_groups')
          .select(['status', 'fingerprint'])
          .where('id', '=', id)
          .forUpdate()
          .executeTakeFirst()
        if (!before) throw new PlinthError('PLINTH_ERROR_GROUP_NOT_FOUND')
        if (before.status === status) return
        await trx
          .updateTable('error_groups')
          .set({ status, status_changed_at: new Date(deps.now()) })
          .where('id', '=', id)
          .execute()
        await deps.audit.record(
          trx,
          callerEntry(
            caller,
            `error-group:${status === 'open' ? 'reopened' : status}`,
            { type: 'error-group', id },
            {
              changes: { before: { status: before.status }, after: { status } },
              details: { fingerprint: before.fingerprint },
            },
          ),
        )
      })
      return get(id)
    },
  }
}

export type ErrorService = ReturnType<typeof createErrorService>
