import { createPlinth, type Plinth } from '../app/create-plinth.ts'
import { loadConfig } from '../config/load-config.ts'
import { cliCaller } from '../core/audit.ts'
import { JOB_STATES, type JobState, type JobView } from '../modules/jobs/job-store.ts'
import type { ScheduleView } from '../modules/jobs/schedules.ts'
import { PlinthError } from '../shared/errors.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const jobsUsage = `Usage: plinth jobs <action> [options]

  list [--name N] [--state S] [--limit N]   newest jobs first (states: ${JOB_STATES.join(', ')})
  show <id>                                 one job: payload, attempts, last error, timings
  enqueue <name> [--payload JSON] [--delay MS] [--key K]
                                            enqueue a job (the payload is checked against its schema)
  retry <id>                                run a failed or cancelled job again
  cancel <id>                               cancel a job that has not started
  types                                     job types, their policies and queue depths
  purge-dead <name>                         delete every job in a type's dead-letter queue
  redrive-dead <name>                       move a type's dead-lettered jobs back into its queue

Options: --json prints JSON instead of text.
Connects with the server's configuration (DATABASE_URL…) and runs no workers. On the embedded
database, stop the server first: only one process may open its data directory.`

export const schedulesUsage = `Usage: plinth schedules <action> [options]

  list [--job N]                                      every schedule, with its next runs
  show <id>
  create --job N --cron EXPR [--tz ZONE] [--payload JSON] [--missed skip|once] [--description TEXT]
  update <id> [--cron EXPR] [--tz ZONE] [--payload JSON] [--missed skip|once] [--description TEXT]
  pause <id> | resume <id> | delete <id>

EXPR has 5 fields (minute hour day month weekday) or 6 (seconds first); ZONE is an IANA name
(default UTC). --missed says what happens to ticks missed while no worker ran: skip them (default)
or run once for the latest. Options: --json prints JSON instead of text.`

/** A Plinth that connects, migrates nothing, serves nothing and runs no workers. */
async function withClient<T>(run: (plinth: Plinth) => Promise<T>): Promise<T> {
  const config = { ...loadConfig(), role: 'api' as const, migrateOnStart: false, shutdownDelay: 0 }
  const plinth = await createPlinth({ config, attachToRunning: true })
  try {
    await plinth.prepare()
    if (!plinth.jobs.running)
      throw new PlinthError(
        'PLINTH_JOBS_UNAVAILABLE',
        'Migrations are pending: run "plinth migrate up" first.',
      )
    return await run(plinth)
  } finally {
    await plinth.shutdown()
  }
}

function parseJson(text: string | undefined, usage: string): unknown {
  if (text === undefined) return {}
  try {
    return JSON.parse(text)
  } catch {
    throw new UsageError(`--payload is not valid JSON: ${text}`, usage)
  }
}

function jobLine(j: JobView): string {
  const error = j.lastError ? `  error: ${j.lastError}` : ''
  return `${j.id}  ${j.state.padEnd(9)}  ${j.name}  attempts ${j.attempts}/${j.retryLimit + 1}  created ${j.createdAt}${error}`
}

function jobDetail(j: JobView): string {
  return [
    `id:          ${j.id}`,
    `name:        ${j.name}`,
    `state:       ${j.state}`,
    `attempts:    ${j.attempts} (retry limit ${j.retryLimit})`,
    `priority:    ${j.priority}`,
    `request id:  ${j.requestId ?? '-'}`,
    `schedule:    ${j.scheduleId ?? '-'}`,
    `created:     ${j.createdAt}`,
    `run after:   ${j.runAfter}`,
    `started:     ${j.startedAt ?? '-'}`,
    `completed:   ${j.completedAt ?? '-'}`,
    `last error:  ${j.lastError ?? '-'}`,
    `payload:     ${JSON.stringify(j.payload)}`,
    ...(j.output !== null ? [`output:      ${JSON.stringify(j.output)}`] : []),
  ].join('\n')
}

function scheduleLine(s: ScheduleView): string {
  const state = s.paused ? 'paused' : `next ${s.nextRuns[0] ?? '-'}`
  return `${s.id}  ${s.jobName}  "${s.cron}" ${s.timezone}  missed=${s.missed}  ${state}${s.builtin ? '  (built-in)' : ''}`
}

function one(positionals: readonly string[], what: string, usage: string): string {
  const [, value, ...extra] = positionals
  if (!value || extra.length > 0) throw new UsageError(`expected exactly one ${what}`, usage)
  return value
}

export async function jobsCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    args,
    {
      name: { type: 'string' },
      state: { type: 'string' },
      limit: { type: 'string' },
      payload: { type: 'string' },
      delay: { type: 'string' },
      key: { type: 'string' },
      json: { type: 'boolean' },
    },
    jobsUsage,
    true,
  )
  const action = positionals[0]
  const print = (value: unknown, text: () => string) =>
    io.out(values.json ? JSON.stringify(value, null, 2) : text())
  switch (action) {
    case 'list': {
      if (values.state !== undefined && !JOB_STATES.includes(values.state as JobState))
        throw new UsageError(`--state must be one of ${JOB_STATES.join(', ')}`, jobsUsage)
      if (values.limit !== undefined && !/^\d+$/.test(values.limit))
        throw new UsageError('--limit takes a number', jobsUsage)
      const page = await withClient((p) =>
        p.jobs.list({
          name: values.name,
          state: values.state as JobState | undefined,
          limit: values.limit === undefined ? 50 : Number(values.limit),
        }),
      )
      print(page.items, () => (page.items.length ? page.items.map(jobLine).join('\n') : 'No jobs.'))
      return 0
    }
    case 'show': {
      const id = one(positionals, 'job id', jobsUsage)
      const job = await withClient((p) => p.jobs.get(id))
      print(job, () => jobDetail(job))
      return 0
    }
    case 'retry':
    case 'cancel': {
      const id = one(positionals, 'job id', jobsUsage)
      const job = await withClient((p) =>
        action === 'retry' ? p.jobs.retry(id, cliCaller()) : p.jobs.cancel(id, cliCaller()),
      )
      print(job, () => jobLine(job))
      return 0
    }
    case 'enqueue': {
      const name = one(positionals, 'job name', jobsUsage)
      if (values.delay !== undefined && !/^\d+$/.test(values.delay))
        throw new UsageError('--delay takes milliseconds', jobsUsage)
      const payload = parseJson(values.payload, jobsUsage)
      const result = await withClient((p) =>
        p.jobs.enqueue(name, payload, {
          delay: values.delay === undefined ? undefined : Number(values.delay),
          idempotencyKey: values.key,
          audit: cliCaller(),
        }),
      )
      print(result, () => `${result.created ? 'enqueued' : 'exists  '}  ${result.id}`)
      return 0
    }
    case 'types': {
      const types = await withClient((p) => p.jobs.types())
      print(types, () =>
        types
          .map(
            (t) =>
              `${t.name}  waiting ${t.waiting}  dead ${t.deadLettered}  concurrency ${t.policy.concurrency}  retries ${t.policy.retryLimit}  timeout ${t.policy.timeout}s`,
          )
          .join('\n'),
      )
      return 0
    }
    case 'purge-dead':
    case 'redrive-dead': {
      const name = one(positionals, 'job name', jobsUsage)
      const count = await withClient((p) =>
        action === 'purge-dead'
          ? p.jobs.purgeDeadLetter(name, cliCaller())
          : p.jobs.redriveDeadLetter(name, cliCaller()),
      )
      print({ count }, () => `${action === 'purge-dead' ? 'purged' : 'moved'} ${count}`)
      return 0
    }
    default:
      throw new UsageError(action ? `unknown action "${action}"` : 'missing action', jobsUsage)
  }
}

export async function schedulesCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    args,
    {
      job: { type: 'string' },
      cron: { type: 'string' },
      tz: { type: 'string' },
      payload: { type: 'string' },
      missed: { type: 'string' },
      description: { type: 'string' },
      json: { type: 'boolean' },
    },
    schedulesUsage,
    true,
  )
  const action = positionals[0]
  const print = (value: unknown, text: () => string) =>
    io.out(values.json ? JSON.stringify(value, null, 2) : text())
  if (values.missed !== undefined && values.missed !== 'skip' && values.missed !== 'once')
    throw new UsageError('--missed is skip or once', schedulesUsage)
  const missed = values.missed as 'skip' | 'once' | undefined
  switch (action) {
    case 'list': {
      const list = await withClient((p) => p.context.schedules.list({ jobName: values.job }))
      print(list, () => (list.length ? list.map(scheduleLine).join('\n') : 'No schedules.'))
      return 0
    }
    case 'show': {
      const id = one(positionals, 'schedule id', schedulesUsage)
      const s = await withClient((p) => p.context.schedules.get(id))
      print(
        s,
        () =>
          `${scheduleLine(s)}\npayload: ${JSON.stringify(s.payload)}\nnext: ${s.nextRuns.join(', ') || '-'}`,
      )
      return 0
    }
    case 'create': {
      if (!values.job || !values.cron) throw new UsageError('create needs --job and --cron', schedulesUsage)
      const input = {
        jobName: values.job,
        cron: values.cron,
        timezone: values.tz,
        payload: parseJson(values.payload, schedulesUsage),
        missed,
        description: values.description,
      }
      const s = await withClient((p) => p.context.schedules.create(input, cliCaller()))
      print(s, () => `created  ${scheduleLine(s)}`)
      return 0
    }
    case 'update': {
      const id = one(positionals, 'schedule id', schedulesUsage)
      const patch = {
        ...(values.cron !== undefined ? { cron: values.cron } : {}),
        ...(values.tz !== undefined ? { timezone: values.tz } : {}),
        ...(values.payload !== undefined ? { payload: parseJson(values.payload, schedulesUsage) } : {}),
        ...(missed !== undefined ? { missed } : {}),
        ...(values.description !== undefined ? { description: values.description } : {}),
      }
      if (Object.keys(patch).length === 0)
        throw new UsageError('update needs something to change', schedulesUsage)
      const s = await withClient((p) => p.context.schedules.update(id, patch, cliCaller()))
      print(s, () => `updated  ${scheduleLine(s)}`)
      return 0
    }
    case 'pause':
    case 'resume': {
      const id = one(positionals, 'schedule id', schedulesUsage)
      const s = await withClient((p) => p.context.schedules.setPaused(id, action === 'pause', cliCaller()))
      print(s, () => `${action === 'pause' ? 'paused ' : 'resumed'}  ${scheduleLine(s)}`)
      return 0
    }
    case 'delete': {
      const id = one(positionals, 'schedule id', schedulesUsage)
      await withClient((p) => p.context.schedules.remove(id, cliCaller()))
      print({ deleted: id }, () => `deleted  ${id}`)
      return 0
    }
    default:
      throw new UsageError(action ? `unknown action "${action}"` : 'missing action', schedulesUsage)
  }
}
