/**
 * A Plinth worker process for the job fault tests (test/jobs-fault.test.ts), never run on its own:
 * `node test/helpers/job-worker.ts` with Plinth's configuration in the environment (PLINTH_ROLE=worker,
 * DATABASE_URL of the test database …). It builds Plinth with the built-in modules plus the fault job
 * types, runs `prepare()` (which starts the job engine's workers), prints one JSON line
 * `{"ready":true,"pid":…}` on stdout, and on SIGTERM or SIGINT shuts down gracefully (exit 0, or 1
 * when the shutdown failed). The driver kills it with SIGKILL whenever it likes.
 */
import type { Kysely } from 'kysely'
import { createPlinth, type Plinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { faultModule } from './fault-jobs.ts'

let plinth: Plinth | undefined
const config = loadConfig({ envFile: false })
plinth = await createPlinth({
  config,
  modules: [...builtinModules, faultModule(() => plinth?.db.kysely as unknown as Kysely<unknown>)],
})

let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  plinth?.shutdown().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err)
      process.exit(1)
    },
  )
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

await plinth.prepare()
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`)
