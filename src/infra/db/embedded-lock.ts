import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PlinthError } from '../../shared/errors.ts'

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes the data directory for this process. PGlite is a single-process database: two processes
 * opening the same files would corrupt them, so a second one is refused with a clear error. A lock
 * left by a process that died (kill -9) is taken over.
 *
 * @returns a function that releases the lock.
 */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true })
  const path = join(dir, 'plinth.lock')
  for (let tries = 0; tries < 2; tries++) {
    try {
      const fd = openSync(path, 'wx')
      writeFileSync(fd, String(process.pid))
      closeSync(fd)
      return () => rmSync(path, { force: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number(readFileSync(path, 'utf8').trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new PlinthError(
          'PLINTH_DB_LOCKED',
          `The data directory ${dir} is in use by process ${pid}. The embedded database serves one process only: stop that process, use another PLINTH_DATA_DIR, or set DATABASE_URL to a PostgreSQL server to run several.`,
        )
      }
      rmSync(path, { force: true })
    }
  }
  throw new PlinthError('PLINTH_DB_LOCKED', `Could not lock the data directory ${dir}.`)
}
