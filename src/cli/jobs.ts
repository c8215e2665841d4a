import type { Plinth } from '../app/create-plinth.ts'
import { cliCaller } from '../core/audit.ts'
import type { JobState, JobView } from '../modules/jobs/job-store.ts'
import type { ScheduleView } from '../modules/jobs/schedules.ts'
import { type CliIo, UsageError } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

/** A Plinth that connects, migrates nothing, serves nothing and runs no workers. */
function withClient<T>(verbose: boolean, run: (plinth: Plinth) => Promise<T>): Promise<T> {
  return withCliPlinth({ verbose }, run)
}

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return {}
  try {
    return JSON.parse(text)
  } catch {
    throw new UsageError(`--payload is not valid JSON: ${text}`)
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

export async function jobsCommand(input: CommandInput, io: CliIo): Promise<number> {
  const values = input.values as Partial<
    Record<'name' | 'state' | 'limit' | 'payload' | 'delay' | 'key', string>
  >
  const { action, verbose } = input
  const id = input.args[0] ?? ''
  const print = (value: unknown, text: () => string) =>
    io.out(input.json ? JSON.stringify(value, null, 2) : text())
  switch (action) {
    case 'list': {
      if (values.limit !== undefined && !/^\d+$/.test(values.limit))
        throw new UsageError('--limit takes a number')
      const page = await withClient(verbose, (p) =>
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
      const job = await withClient(verbose, (p) => p.jobs.get(id))
      print(job, () => jobDetail(job))
      return 0
    }
    case 'retry':
    case 'cancel': {
      const job = await withClient(verbose, (p) =>
        action === 'retry' ? p.jobs.retry(id, cliCaller()) : p.jobs.cancel(id, cliCaller()),
      )
      print(job, () => jobLine(job))
      return 0
    }
    case 'enqueue': {
      const name = id
      if (values.delay !== undefined && !/^\d+$/.test(values.delay))
        throw new UsageError('--delay takes milliseconds')
      const payload = parseJson(values.payload)
      const result = await withClient(verbose, (p) =>
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
      const types = await withClient(verbose, (p) => p.jobs.types())
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
      const name = id
      const count = await withClient(verbose, (p) =>
        action === 'purge-dead'
          ? p.jobs.purgeDeadLetter(name, cliCaller())
          : p.jobs.redriveDeadLetter(name, cliCaller()),
      )
      print({ count }, () => `${action === 'purge-dead' ? 'purged' : 'moved'} ${count}`)
      return 0
    }
    default:
      throw new UsageError(`unknown action "${action}"`)
  }
}

export async function schedulesCommand(input: CommandInput, io: CliIo): Promise<number> {
  const values = input.values as Partial<
    Record<'job' | 'cron' | 'tz' | 'payload' | 'missed' | 'description', string>
  >
  const { action, verbose } = input
  const id = input.args[0] ?? ''
  const print = (value: unknown, text: () => string) =>
    io.out(input.json ? JSON.stringify(value, null, 2) : text())
  const missed = values.missed as 'skip' | 'once' | undefined
  switch (action) {
    case 'list': {
      const list = await withClient(verbose, (p) => p.context.schedules.list({ jobName: values.job }))
      print(list, () => (list.length ? list.map(scheduleLine).join('\n') : 'No schedules.'))
      return 0
    }
    case 'show': {
      const s = await withClient(verbose, (p) => p.context.schedules.get(id))
      print(
        s,
        () =>
          `${scheduleLine(s)}\npayload: ${JSON.stringify(s.payload)}\nnext: ${s.nextRuns.join(', ') || '-'}`,
      )
      return 0
    }
    case 'create': {
      if (!values.job || !values.cron) throw new UsageError('create needs --job and --cron')
      const input = {
        jobName: values.job,
        cron: values.cron,
        timezone: values.tz,
        payload: parseJson(values.payload),
        missed,
        description: values.description,
      }
      const s = await withClient(verbose, (p) => p.context.schedules.create(input, cliCaller()))
      print(s, () => `created  ${scheduleLine(s)}`)
      return 0
    }
    case 'update': {
      const patch = {
        ...(values.cron !== undefined ? { cron: values.cron } : {}),
        ...(values.tz !== undefined ? { timezone: values.tz } : {}),
        ...(values.payload !== undefined ? { payload: parseJson(values.payload) } : {}),
        ...(missed !== undefined ? { missed } : {}),
        ...(values.description !== undefined ? { description: values.description } : {}),
      }
      if (Object.keys(patch).length === 0) throw new UsageError('update needs something to change')
      const s = await withClient(verbose, (p) => p.context.schedules.update(id, patch, cliCaller()))
      print(s, () => `updated  ${scheduleLine(s)}`)
      return 0
    }
    case 'pause':
    case 'resume': {
      const s = await withClient(verbose, (p) =>
        p.context.schedules.setPaused(id, action === 'pause', cliCaller()),
      )
      print(s, () => `${action === 'pause' ? 'paused ' : 'resumed'}  ${scheduleLine(s)}`)
      return 0
    }
    case 'delete': {
      await withClient(verbose, (p) => p.context.schedules.remove(id, cliCaller()))
      print({ deleted: id }, () => `deleted  ${id}`)
      return 0
    }
    default:
      throw new UsageError(`unknown action "${action}"`)
  }
}
