/**
 * A short-lived worker thread that turns a migrated template (a tar, template.ts) into a ready
 * cluster directory: PGlite loads the tar into `workerData.dir` (a temporary directory the parent
 * renames into place) and closes it cleanly, then the mark is written. Run by `buildTemplateDir`,
 * after a start, so that it never holds the running server's database (that one is in its own
 * worker) and costs the start nothing but a spare core.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parentPort, workerData } from 'node:worker_threads'
import { PGlite } from '@electric-sql/pglite'
import { readTemplate, TEMPLATE_DIR_MARK } from './template.ts'

const { tar, dir } = workerData as { tar: string; dir: string }
const dump = readTemplate(tar)
if (!dump) throw new Error(`no template at ${tar}`)
const db = await PGlite.create(dir, { loadDataDir: dump })
await db.query('select 1')
await db.close()
writeFileSync(join(dir, TEMPLATE_DIR_MARK), `${new Date().toISOString()}\n`)
parentPort?.postMessage({ type: 'built' })
