/**
 * The production-line module, written only through Plinth's public API (`plinth`): machines;
 * readings their gateways post in batches; thresholds per machine and metric; an alert — a row,
 * and a `production.alert` event that webhooks deliver — for each reading beyond a threshold; an
 * hourly roll-up job on a schedule; the machines each person watches. Personal data (who ingested,
 * acknowledged, configured, watches) is declared, so export and erasure cover these tables.
 */
import {
  auditCallerOf,
  callerEntry,
  defineJob,
  defineModule,
  deleteInBatches,
  type FieldError,
  type Kysely,
  PlinthError,
  sql,
  Type,
} from 'plinth'
import { migrations, type Tables } from './tables.ts'

/** Readings older than this are deleted by Plinth's retention job (the roll-ups stay). */
export const READINGS_KEPT_DAYS = 90
/** The most readings one request may carry. */
export const MAX_BATCH = 1000

const MachineId = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,63}$', description: 'e.g. press-01' })
const Metric = Type.String({ pattern: '^[a-z][a-z0-9_]{0,39}$', description: 'e.g. temperature_c' })
const Machine = Type.Object({ id: MachineId, name: Type.String(), line: Type.String() })
const MachineParams = Type.Object({ id: MachineId })
const Reading = Type.Object(
  { machineId: MachineId, metric: Metric, value: Type.Number(), at: Type.String({ format: 'date-time' }) },
  { additionalProperties: false },
)
const Alert = Type.Object({
  id: Type.String(),
  machineId: Type.String(),
  metric: Type.String(),
  value: Type.Number(),
  bound: Type.Union([Type.Literal('min'), Type.Literal('max')]),
  limit: Type.Number(),
  recordedAt: Type.String(),
  acknowledgedAt: Type.Union([Type.String(), Type.Null()]),
})
const Rollup = Type.Object({
  metric: Type.String(),
  hour: Type.String(),
  readings: Type.Integer(),
  min: Type.Number(),
  max: Type.Number(),
  avg: Type.Number(),
})

const iso = (d: Date | string) => new Date(d).toISOString()
const alertView = (a: {
  id: string
  machine_id: string
  metric: string
  value: number
  bound: 'min' | 'max'
  limit_value: number
  recorded_at: Date | string
  acknowledged_at: Date | null
}) => ({
  id: a.id,
  machineId: a.machine_id,
  metric: a.metric,
  value: a.value,
  bound: a.bound,
  limit: a.limit_value,
  recordedAt: iso(a.recorded_at),
  acknowledgedAt: a.acknowledged_at ? iso(a.acknowledged_at) : null,
})

/**
 * Rolls up the readings of the hour that starts at `hour` into `production_rollups` (count, min,
 * max, average per machine and metric). Running it again for the same hour gives the same rows.
 */
export async function rollUpHour(db: Kysely<Tables>, hour: Date): Promise<number> {
  const from = new Date(Math.floor(hour.getTime() / 3_600_000) * 3_600_000)
  const to = new Date(from.getTime() + 3_600_000)
  const result = await sql`
    insert into production_rollups (machine_id, metric, hour, readings, min_value, max_value, avg_value)
    select machine_id, metric, ${from}::timestamptz, count(*), min(value), max(value), avg(value)
    from production_readings
    where recorded_at >= ${from} and recorded_at < ${to}
    group by machine_id, metric
    on conflict (machine_id, metric, hour) do update set
      readings = excluded.readings, min_value = excluded.min_value,
      max_value = excluded.max_value, avg_value = excluded.avg_value`.execute(db)
  return Number(result.numAffectedRows ?? 0)
}

export const production = defineModule<Tables>({
  name: 'production',
  migrations,
  permissions: {
    'production:read': {
      roles: ['admin', 'operator', 'member', 'viewer'],
      description: 'See machines, roll-ups and alerts; watch machines',
    },
    'production:ingest': {
      roles: ['admin', 'operator', 'member'],
      description: 'Send readings (what a line gateway signs in as)',
    },
    'production:manage': {
      roles: ['admin', 'operator'],
      description: 'Add machines, set thresholds, acknowledge alerts',
    },
  },

  personalData: [
    {
      table: 'production_readings',
      description: 'Readings sent with your account (they stay, without your name)',
      match: { column: 'ingested_by', holds: 'user-id' },
      columns: [{ name: 'ingested_by', export: 'value' }],
      context: ['id', 'machine_id', 'metric', 'value', 'recorded_at'],
      erase: { action: 'set-null' },
    },
    {
      table: 'production_alerts',
      description: 'Alerts you acknowledged (they stay, without your name)',
      match: { column: 'acknowledged_by', holds: 'user-id' },
      columns: [{ name: 'acknowledged_by', export: 'value' }],
      context: ['id', 'machine_id', 'metric', 'acknowledged_at'],
      erase: { action: 'set-null' },
    },
    {
      table: 'production_machines',
      description: 'Machines you added (they stay, without your name)',
      match: { column: 'created_by', holds: 'user-id' },
      columns: [{ name: 'created_by', export: 'value' }],
      context: ['id', 'name', 'created_at'],
      erase: { action: 'set-null' },
    },
    {
      table: 'production_thresholds',
      description: 'Thresholds you set last (they stay, without your name)',
      match: { column: 'updated_by', holds: 'user-id' },
      columns: [{ name: 'updated_by', export: 'value' }],
      context: ['machine_id', 'metric', 'updated_at'],
      erase: { action: 'set-null' },
    },
    {
      table: 'production_watches',
      description: 'Machines you watch',
      match: { column: 'user_id', holds: 'user-id' },
      columns: [{ name: 'user_id', export: 'value' }],
      context: ['machine_id', 'created_at'],
      erase: { action: 'delete' },
    },
  ],

  jobs: (ctx) => [
    defineJob({
      name: 'production.rollup',
      description: 'Rolls up one hour of readings (the previous hour when none is given)',
      payload: Type.Object({ hour: Type.Optional(Type.String({ format: 'date-time' })) }),
      policy: { timeout: 600 },
      async handler(job) {
        const hour = job.payload.hour ? new Date(job.payload.hour) : new Date(ctx.now() - 3_600_000)
        const rows = await rollUpHour(ctx.db, hour)
        job.logger.info({ hour: hour.toISOString(), rows }, 'readings rolled up')
        return { rows }
      },
    }),
  ],

  // Five minutes past each hour, the hour before is rolled up (late readings: run the job again).
  schedules: () => [
    {
      id: 'production.rollup-hourly',
      input: {
        jobName: 'production.rollup',
        cron: '5 * * * *',
        description: 'Roll up the previous hour of readings',
        missed: 'once',
      },
    },
  ],

  retention: (ctx) => [
    {
      name: 'production.readings',
      describe: `readings recorded more than ${READINGS_KEPT_DAYS} days ago (their hourly roll-ups stay)`,
      run: (run) =>
        deleteInBatches(run, async (limit) => {
          const cutoff = new Date(run.now.getTime() - READINGS_KEPT_DAYS * 86_400_000)
          const res = await sql`
            delete from production_readings where id in (
              select id from production_readings where recorded_at < ${cutoff} limit ${limit})`.execute(
            ctx.db,
          )
          return Number(res.numAffectedRows ?? 0)
        }),
    },
  ],

  healthChecks: (ctx) => [
    {
      name: 'production',
      critical: false,
      async check() {
        const row = await ctx.db
          .selectFrom('production_machines')
          .select((eb) => eb.fn.countAll<string>().as('machines'))
          .executeTakeFirstOrThrow()
        return { status: 'up', details: { machines: Number(row.machines) } }
      },
    },
  ],

  routes(app, ctx) {
    const ingested = ctx.metrics.counter('production_readings_ingested_total', 'Readings accepted.')
    const raised = ctx.metrics.counter('production_alerts_raised_total', 'Alerts raised by readings.', [
      'bound',
    ])
    const tags = ['production']

    app.post(
      '/machines',
      {
        config: { permission: 'production:manage' },
        schema: { tags, summary: 'Add a machine', body: Machine, response: { 201: Machine } },
      },
      async (request, reply) => {
        const caller = auditCallerOf(request)
        await ctx.db.transaction().execute(async (trx) => {
          await trx
            .insertInto('production_machines')
            .values({ ...request.body, created_by: request.principal!.userId })
            .execute()
          await ctx.audit.record(
            trx,
            callerEntry(caller, 'machine:created', { type: 'machine', id: request.body.id }),
          )
        })
        return reply.code(201).send(request.body)
      },
    )

    app.get(
      '/machines',
      {
        config: { permission: 'production:read' },
        schema: {
          tags,
          summary: 'Every machine',
          response: { 200: Type.Object({ machines: Type.Array(Machine) }) },
        },
      },
      async () => ({
        machines: await ctx.db
          .selectFrom('production_machines')
          .select(['id', 'name', 'line'])
          .orderBy('id')
          .execute(),
      }),
    )

    app.put(
      '/machines/:id/thresholds/:metric',
      {
        config: { permission: 'production:manage' },
        schema: {
          tags,
          summary: 'Set the bounds a metric of a machine should stay within',
          params: Type.Object({ id: MachineId, metric: Metric }),
          body: Type.Object(
            { min: Type.Union([Type.Number(), Type.Null()]), max: Type.Union([Type.Number(), Type.Null()]) },
            { additionalProperties: false },
          ),
        },
      },
      async (request) => {
        const { id, metric } = request.params
        const { min, max } = request.body
        if (min !== null && max !== null && min > max)
          throw new PlinthError('PLINTH_HTTP_VALIDATION_FAILED', 'min must not exceed max.', {
            errors: [{ in: 'body', field: 'min', message: 'must not exceed max' }],
          })
        await ctx.db.transaction().execute(async (trx) => {
          const machine = await trx
            .selectFrom('production_machines')
            .select('id')
            .where('id', '=', id)
            .executeTakeFirst()
          if (!machine) throw new PlinthError('PLINTH_RESOURCE_NOT_FOUND', `No machine ${id}.`)
          const before = await trx
            .selectFrom('production_thresholds')
            .select(['min_value', 'max_value'])
            .where('machine_id', '=', id)
            .where('metric', '=', metric)
            .executeTakeFirst()
          await trx
            .insertInto('production_thresholds')
            .values({
              machine_id: id,
              metric,
              min_value: min,
              max_value: max,
              updated_by: request.principal!.userId,
              updated_at: new Date(),
            })
            .onConflict((oc) =>
              oc.columns(['machine_id', 'metric']).doUpdateSet({
                min_value: min,
                max_value: max,
                updated_by: request.principal!.userId,
                updated_at: new Date(),
              }),
            )
            .execute()
          await ctx.audit.record(
            trx,
            callerEntry(
              auditCallerOf(request),
              'threshold:set',
              { type: 'machine', id },
              {
                details: { metric },
                changes: {
                  before: { min: before?.min_value ?? null, max: before?.max_value ?? null },
                  after: { min, max },
                },
              },
            ),
          )
        })
        return { machineId: id, metric, min, max }
      },
    )

    app.post(
      '/readings',
      {
        config: { permission: 'production:ingest', errors: ['PLINTH_HTTP_VALIDATION_FAILED'] },
        schema: {
          tags,
          summary: `Ingest a batch of readings (up to ${MAX_BATCH}); those beyond a threshold raise alerts`,
          body: Type.Object(
            { readings: Type.Array(Reading, { minItems: 1, maxItems: MAX_BATCH }) },
            { additionalProperties: false },
          ),
          response: { 201: Type.Object({ accepted: Type.Integer(), alerts: Type.Array(Alert) }) },
        },
      },
      async (request, reply) => {
        const { readings } = request.body
        const ids = [...new Set(readings.map((r) => r.machineId))]
        const known = new Set(
          (await ctx.db.selectFrom('production_machines').select('id').where('id', 'in', ids).execute()).map(
            (m) => m.id,
          ),
        )
        // The whole batch or nothing: a gateway resends it once the mistake is fixed.
        const unknown: FieldError[] = readings.flatMap((r, i) =>
          known.has(r.machineId)
            ? []
            : [{ in: 'body', field: `readings.${i}.machineId`, message: `no machine ${r.machineId}` }],
        )
        if (unknown.length > 0)
          throw new PlinthError('PLINTH_HTTP_VALIDATION_FAILED', 'Some readings name unknown machines.', {
            errors: unknown.slice(0, 20),
          })
        const userId = request.principal!.userId
        const alerts = await ctx.db.transaction().execute(async (trx) => {
          await trx
            .insertInto('production_readings')
            .values(
              readings.map((r) => ({
                machine_id: r.machineId,
                metric: r.metric,
                value: r.value,
                recorded_at: r.at,
                ingested_by: userId,
              })),
            )
            .execute()
          const thresholds = await trx
            .selectFrom('production_thresholds')
            .selectAll()
            .where('machine_id', 'in', ids)
            .execute()
          const limits = new Map(thresholds.map((t) => [`${t.machine_id}/${t.metric}`, t]))
          const breaches = readings.flatMap((r): { r: typeof r; bound: 'min' | 'max'; limit: number }[] => {
            const t = limits.get(`${r.machineId}/${r.metric}`)
            if (t?.max_value != null && r.value > t.max_value)
              return [{ r, bound: 'max', limit: t.max_value }]
            if (t?.min_value != null && r.value < t.min_value)
              return [{ r, bound: 'min', limit: t.min_value }]
            return []
          })
          if (breaches.length === 0) return []
          const rows = await trx
            .insertInto('production_alerts')
            .values(
              breaches.map((b) => ({
                machine_id: b.r.machineId,
                metric: b.r.metric,
                value: b.r.value,
                bound: b.bound,
                limit_value: b.limit,
                recorded_at: b.r.at,
              })),
            )
            .returningAll()
            .execute()
          // One webhook event per alert, queued only if the readings commit.
          for (const a of rows)
            await ctx.events.emit('production.alert', alertView(a), {
              id: a.id,
              db: trx,
              requestId: request.id,
            })
          return rows
        })
        ingested.inc(readings.length)
        for (const a of alerts) raised.inc({ bound: a.bound })
        return reply.code(201).send({ accepted: readings.length, alerts: alerts.map(alertView) })
      },
    )

    app.get(
      '/machines/:id/rollups',
      {
        config: { permission: 'production:read' },
        schema: {
          tags,
          summary: 'Hourly roll-ups of a machine, newest first',
          params: MachineParams,
          querystring: Type.Object(
            { metric: Type.Optional(Metric), limit: Type.Integer({ minimum: 1, maximum: 500, default: 48 }) },
            { additionalProperties: false },
          ),
          response: { 200: Type.Object({ rollups: Type.Array(Rollup) }) },
        },
      },
      async (request) => {
        let q = ctx.db
          .selectFrom('production_rollups')
          .selectAll()
          .where('machine_id', '=', request.params.id)
          .orderBy('hour', 'desc')
          .orderBy('metric')
          .limit(request.query.limit)
        if (request.query.metric) q = q.where('metric', '=', request.query.metric)
        const rows = await q.execute()
        return {
          rollups: rows.map((r) => ({
            metric: r.metric,
            hour: iso(r.hour),
            readings: r.readings,
            min: r.min_value,
            max: r.max_value,
            avg: r.avg_value,
          })),
        }
      },
    )

    app.get(
      '/alerts',
      {
        config: { permission: 'production:read' },
        schema: {
          tags,
          summary: 'Alerts, newest first (open ones only with ?open=true)',
          querystring: Type.Object({ open: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
          response: { 200: Type.Object({ alerts: Type.Array(Alert) }) },
        },
      },
      async (request) => {
        let q = ctx.db.selectFrom('production_alerts').selectAll().orderBy('recorded_at', 'desc').limit(200)
        if (request.query.open) q = q.where('acknowledged_at', 'is', null)
        return { alerts: (await q.execute()).map(alertView) }
      },
    )

    app.post(
      '/alerts/:id/acknowledge',
      {
        config: { permission: 'production:manage' },
        schema: {
          tags,
          summary: 'Acknowledge an alert',
          params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
          response: { 200: Alert },
        },
      },
      async (request) => {
        const row = await ctx.db.transaction().execute(async (trx) => {
          const row = await trx
            .updateTable('production_alerts')
            .set({ acknowledged_by: request.principal!.userId, acknowledged_at: new Date() })
            .where('id', '=', request.params.id)
            .where('acknowledged_at', 'is', null)
            .returningAll()
            .executeTakeFirst()
          if (!row) throw new PlinthError('PLINTH_RESOURCE_NOT_FOUND', 'No open alert with this id.')
          await ctx.audit.record(
            trx,
            callerEntry(auditCallerOf(request), 'alert:acknowledged', { type: 'alert', id: row.id }),
          )
          return row
        })
        return alertView(row)
      },
    )

    app.put(
      '/machines/:id/watch',
      {
        config: { permission: 'production:read' },
        schema: { tags, summary: 'Watch a machine', params: MachineParams },
      },
      async (request, reply) => {
        const machine = await ctx.db
          .selectFrom('production_machines')
          .select('id')
          .where('id', '=', request.params.id)
          .executeTakeFirst()
        if (!machine) throw new PlinthError('PLINTH_RESOURCE_NOT_FOUND', `No machine ${request.params.id}.`)
        await ctx.db
          .insertInto('production_watches')
          .values({ user_id: request.principal!.userId, machine_id: machine.id })
          .onConflict((oc) => oc.doNothing())
          .execute()
        return reply.code(204).send()
      },
    )

    app.get(
      '/watches',
      {
        config: { permission: 'production:read' },
        schema: {
          tags,
          summary: 'The machines I watch, with their open alerts',
          response: {
            200: Type.Object({
              machines: Type.Array(Type.Object({ id: Type.String(), openAlerts: Type.Integer() })),
            }),
          },
        },
      },
      async (request) => {
        const rows = await ctx.db
          .selectFrom('production_watches as w')
          .leftJoin('production_alerts as a', (j) =>
            j.onRef('a.machine_id', '=', 'w.machine_id').on('a.acknowledged_at', 'is', null),
          )
          .select(['w.machine_id', (eb) => eb.fn.count<string>('a.id').as('open')])
          .where('w.user_id', '=', request.principal!.userId)
          .groupBy('w.machine_id')
          .orderBy('w.machine_id')
          .execute()
        return { machines: rows.map((r) => ({ id: r.machine_id, openAlerts: Number(r.open) })) }
      },
    )
  },
})
