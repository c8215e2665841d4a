import { deadLetterQueue, type JobFilter, type JobTypeView, type JobView } from '../../core/jobs.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { EngineState } from './engine-state.ts'

/** What the HTTP API and the CLI read: one job, a page of jobs, waiting counts, the job types. */
export function createJobReads(s: EngineState) {
  const { store } = s

  async function get(id: string): Promise<JobView> {
    const job = await store.get(id)
    if (!job) throw new PlinthError('PLINTH_JOB_NOT_FOUND')
    return job
  }

  return {
    get,

    waiting(name: string, cap: number): Promise<number> {
      return store.waiting(name, cap)
    },

    list(filter: JobFilter) {
      return store.list(filter)
    },

    async types(): Promise<JobTypeView[]> {
      const views: JobTypeView[] = []
      for (const [name, r] of s.registry) {
        views.push({
          name,
          description: r.definition.description ?? null,
          policy: r.policy,
          deadLetterQueue: r.policy.deadLetter ? deadLetterQueue(name) : null,
          waiting: await store.waiting(name, Number.MAX_SAFE_INTEGER - 1),
          deadLettered: r.policy.deadLetter
            ? await store.waiting(deadLetterQueue(name), Number.MAX_SAFE_INTEGER - 1)
            : 0,
        })
      }
      return views
    },
  }
}
