import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { ClusterOrigin, EmbeddedWorkerData, EmbeddedWorkerMessage } from './embedded-worker.ts'
import {
  buildTemplateDir,
  hasTemplateDir,
  migratedTemplateDirPath,
  migratedTemplatePath,
  pruneMigratedTemplates,
  writeTemplate,
} from './template.ts'

/** PostgreSQL's socket naming: a client given `host: <dir>, port: 5432` connects to this file. */
export const SOCKET_PORT = 5432
export const SOCKET_FILE = `.s.PGSQL.${SOCKET_PORT}`
/** Unix socket paths are limited to about 107 bytes; longer data directory paths use a temp dir. */
const MAX_SOCKET_PATH = 100

/**
 * The embedded database as a server: PGlite in a worker thread, listening on a Unix socket
 * (`<data dir>/.s.PGSQL.5432`, or a private temporary directory for `memory://`). The main thread
 * connects with `pg` as to any PostgreSQL server.
 *
 * When the worker dies (a crash, an out-of-memory abort, `terminate()`), `isUp()` turns false at
 * once, so `/ready` answers 503, and a file-backed database is restarted with backoff on the same
 * socket; pooled connections fail and are replaced. An in-memory database is not restarted: its
 * data died with the worker, so the instance stays not-ready until the process is restarted.
 */
export interface EmbeddedServer {
  /** The `pg` host (the socket's directory) and port. */
  readonly socketDir: string
  readonly socketPort: number
  /** How the cluster was opened at start (an existing one, a template, or initdb), once up. */
  origin(): ClusterOrigin | undefined
  /**
   * Gives a server started with `awaitMigrationSetKey` the migration set of this start (or none):
   * a new cluster, which waited for it, then starts from that set's migrated template. Once; a
   * later call is ignored.
   */
  setMigrationSetKey(key: string | undefined): void
  /**
   * After a start that made a new file-backed cluster from the migrated template's tar (or cached
   * that tar): builds the template as a ready cluster directory in a short-lived worker, in the
   * background, so the next new cluster copies it (template.ts). `close()` waits for it. Best effort.
   */
  cacheTemplateDir(): Promise<void>
  /**
   * Called after every migration of the set `key` was applied: when this cluster is new (started
   * from the plain template or initdb) and was started for that set, runs `prepare` (what else the
   * template holds: the job engine's schema and queues; its failure is the caller's) and stores the
   * cluster as the migrated template (best effort: a failure to store is logged and changes
   * nothing else).
   */
  cacheMigrated(key: string, prepare?: () => Promise<void>): Promise<void>
  isUp(): boolean
  /** Why the database is down, when it is. */
  downReason(): string | undefined
  /** Resolves once the worker is up again (or rejects when it will not restart). For tests. */
  whenUp(): Promise<void>
  /** The running worker thread, if any (tests terminate it to simulate a crash). */
  worker(): Worker | undefined
  /** PGlite's own copy of its data directory (an uncompressed tar), taken in the worker: for backups. */
  dumpDataDir(): Promise<Blob>
  close(): Promise<void>
}

export interface EmbeddedServerOptions {
  /** The data directory, or null for an in-memory database. */
  readonly dataDir: string | null
  readonly logger: Logger
  readonly maxConnections: number
  /** How long the worker may take to open the database and listen. */
  readonly startTimeoutMs: number
  readonly useTemplate?: boolean
  /** The key of the migration set a start applies (migrationSetKey): a new cluster starts migrated when cached. */
  readonly migrationSetKey?: string | undefined
  /**
   * Started before the application is loaded (`plinth start`): the key comes later through
   * `setMigrationSetKey`. An existing cluster opens at once; a new one waits for the key.
   */
  readonly awaitMigrationSetKey?: boolean | undefined
  /**
   * Open this data directory dump (PGlite's `dumpDataDir`) instead of a cluster: a backup's scratch
   * copy, loaded and queried in the worker so that the main thread stays free.
   */
  readonly loadDump?: readonly Uint8Array[] | undefined
}

// Beside this file: embedded-worker.ts when run from source, embedded-worker.js once compiled to dist/
// (the image), where no .ts file exists.
const workerUrl = new URL(
  `./embedded-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`,
  import.meta.url,
)

type Ready = Extract<EmbeddedWorkerMessage, { type: 'ready' }>

/** Starts a worker; `ready` settles when it listens, or fails (and the worker is gone). */
function spawn(data: EmbeddedWorkerData, timeoutMs: number): { worker: Worker; ready: Promise<Ready> } {
  const worker = new Worker(workerUrl, { workerData: data })
  const ready = new Promise<Ready>((resolve, reject) => {
    let error: Error | undefined
    const timer = setTimeout(() => {
      cleanup()
      void worker.terminate()
      reject(new Error(`the embedded database did not start within ${timeoutMs} ms`))
    }, timeoutMs)
    const onMessage = (message: EmbeddedWorkerMessage) => {
      if (message.type !== 'ready') return
      cleanup()
      resolve(message)
    }
    const onError = (err: Error) => {
      error = err
    }
    const onExit = (code: number) => {
      cleanup()
      reject(error ?? new Error(`the embedded database worker exited with code ${code} while starting`))
    }
    const cleanup = () => {
      clearTimeout(timer)
      worker.off('message', onMessage)
      worker.off('error', onError)
      worker.off('exit', onExit)
    }
    worker.on('message', onMessage)
    worker.on('error', onError)
    worker.on('exit', onExit)
  })
  return { worker, ready }
}

/**
 * Socket directories in the system's temporary folder not yet removed by a close: an exit that
 * skips the close (a second signal's forced exit, an uncaught error) removes them on its way out,
 * with one `exit` listener for the process however many servers it starts.
 */
const socketDirsLeft = new Set<string>()
function leaveNoSocketDir(dir: string): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const left of socketDirsLeft) rmSync(left, { recursive: true, force: true })
    })
  }
  socketDirsLeft.add(dir)
}
let exitHookInstalled = false

/**
 * Starts the worker and returns at once: the main thread goes on building the application while
 * the worker opens the database on the other core. `whenUp()` waits for it (`connect()` does).
 */
export function startEmbeddedServer(options: EmbeddedServerOptions): EmbeddedServer {
  const log = options.logger.child({ component: 'embedded-database' })
  const clusterDir = options.dataDir === null ? null : join(options.dataDir, 'pglite')
  const inDataDir = options.dataDir !== null && join(options.dataDir, SOCKET_FILE).length <= MAX_SOCKET_PATH
  const socketDir = inDataDir ? (options.dataDir as string) : mkdtempSync(join(tmpdir(), 'plinth-db-'))
  const useTemplate = (options.useTemplate ?? true) && !options.loadDump
  let key = options.migrationSetKey
  let keyGiven = !options.awaitMigrationSetKey
  const templatesOf = (k: string | undefined) => ({
    migratedTemplate: useTemplate && k ? migratedTemplatePath(k) : null,
    // The directory only serves a file-backed cluster (a memory one loads the tar).
    migratedTemplateDir: useTemplate && k && clusterDir !== null ? migratedTemplateDirPath(k) : null,
  })
  // Mutable: a restart after the key was given spawns with it.
  let data: EmbeddedWorkerData = {
    clusterDir,
    socketPath: join(socketDir, SOCKET_FILE),
    maxConnections: options.maxConnections,
    useTemplate,
    ...templatesOf(key),
    awaitTemplate: !keyGiven && !options.loadDump,
    loadDump: options.loadDump ?? null,
  }
  /** Workers spawned and not yet ready: they may be waiting for the template message. */
  const spawning = new Set<Worker>()
  const spawnTracked = (d: EmbeddedWorkerData) => {
    const spawned = spawn(d, options.startTimeoutMs)
    spawning.add(spawned.worker)
    const forget = () => spawning.delete(spawned.worker)
    spawned.ready.then(forget, forget)
    return spawned
  }
  let building: { done: Promise<void>; abort: AbortController } | undefined
  const removeSocketDir = () => {
    if (inDataDir) return
    rmSync(socketDir, { recursive: true, force: true })
    socketDirsLeft.delete(socketDir)
  }
  if (!inDataDir) leaveNoSocketDir(socketDir)

  let current: Worker | undefined
  let up = false
  let reason: string | undefined
  let closing = false
  let restartTimer: NodeJS.Timeout | undefined
  /** Set when the database will not come back (in-memory data lost, or closed). */
  let gone: Error | undefined
  let waiters: { resolve: () => void; reject: (err: Error) => void }[] = []
  const settleWaiters = (err?: Error) => {
    const list = waiters
    waiters = []
    for (const w of list) err ? w.reject(err) : w.resolve()
  }

  const adopt = (worker: Worker) => {
    current = worker
    up = true
    reason = undefined
    worker.on('error', (err) => {
      reason = `the embedded database worker failed: ${err.message}`
      log.error({ err: { message: err.message } }, 'embedded database worker failed')
    })
    worker.on('exit', (code) => {
      if (current !== worker) return
      current = undefined
      up = false
      if (closing) return
      reason ??= `the embedded database worker exited (code ${code})`
      if (clusterDir === null) {
        reason = `${reason}; the in-memory database is lost, restart the process`
        log.fatal({ code }, 'embedded in-memory database worker exited; the instance stays not ready')
        gone = new Error(reason)
        settleWaiters(gone)
        return
      }
      log.error({ code }, 'embedded database worker exited; restarting it')
      scheduleRestart(200)
    })
  }

  const scheduleRestart = (delayMs: number) => {
    restartTimer = setTimeout(async () => {
      restartTimer = undefined
      if (closing) return
      try {
        const { worker, ready: starting } = spawnTracked(data)
        const ready = await starting
        if (closing) {
          await worker.terminate()
          return
        }
        adopt(worker)
        log.warn({ ms: ready.ms }, 'embedded database worker restarted')
        settleWaiters()
      } catch (err) {
        reason = `the embedded database could not restart: ${(err as Error).message}`
        log.error({ err: { message: (err as Error).message } }, 'embedded database restart failed')
        scheduleRestart(Math.min(delayMs * 2, 5000))
      }
    }, delayMs)
    restartTimer.unref()
  }

  let origin: Ready['origin'] | undefined
  let dumps = 0
  const first = spawnTracked(data)
  let starting: Worker | undefined = first.worker
  first.ready.then(
    (ready) => {
      starting = undefined
      if (closing) return
      adopt(first.worker)
      origin = ready.origin
      log.info({ origin, ms: ready.ms, socket: data.socketPath }, 'embedded database ready')
      settleWaiters()
    },
    (err: Error) => {
      starting = undefined
      gone = err
      reason = err.message
      removeSocketDir()
      settleWaiters(err)
    },
  )

  return {
    socketDir,
    socketPort: SOCKET_PORT,
    origin: () => origin,
    setMigrationSetKey(given: string | undefined) {
      if (keyGiven) return
      keyGiven = true
      key = given
      const templates = templatesOf(key)
      data = { ...data, ...templates, awaitTemplate: false }
      for (const worker of spawning) worker.postMessage({ type: 'template', ...templates })
    },
    async cacheTemplateDir() {
      const { migratedTemplate: tar, migratedTemplateDir: dir } = data
      if (building || closing || !tar || !dir) return
      if (origin !== 'migrated' && origin !== 'template' && origin !== 'initdb') return
      if (!existsSync(tar) || hasTemplateDir(dir)) return
      const abort = new AbortController()
      const started = performance.now()
      const done = buildTemplateDir(tar, dir, abort.signal).then(
        (built) => {
          if (built) {
            pruneMigratedTemplates()
            log.info(
              { ms: Math.round(performance.now() - started) },
              'migrated cluster template directory cached',
            )
          }
        },
        (err: unknown) =>
          log.warn(
            { err: { message: (err as Error).message } },
            'could not cache the migrated cluster directory',
          ),
      )
      building = { done, abort }
    },
    async cacheMigrated(given: string, prepare?: () => Promise<void>) {
      if (origin !== 'template' && origin !== 'initdb') return
      if (given !== key || !data.migratedTemplate || existsSync(data.migratedTemplate)) return
      await prepare?.()
      // Once per cluster: a second migrator.up() in this process finds it cached.
      const path = data.migratedTemplate
      const started = performance.now()
      try {
        await writeTemplate(await this.dumpDataDir(), path)
        pruneMigratedTemplates()
        log.info({ ms: Math.round(performance.now() - started) }, 'migrated cluster template cached')
      } catch (err) {
        log.warn(
          { err: { message: (err as Error).message } },
          'could not cache the migrated cluster template',
        )
      }
    },
    isUp: () => up,
    downReason: () => (up ? undefined : (reason ?? 'the embedded database is not running')),
    whenUp: () => {
      if (up) return Promise.resolve()
      if (gone) return Promise.reject(gone)
      return new Promise<void>((resolve, reject) => waiters.push({ resolve, reject }))
    },
    worker: () => current,
    async dumpDataDir() {
      const worker = current
      if (!worker) throw new Error(reason ?? 'the embedded database is not running')
      const id = ++dumps
      return await new Promise<Blob>((resolve, reject) => {
        const onExit = () => {
          cleanup()
          reject(new Error('the embedded database worker exited during the dump'))
        }
        const onMessage = (m: EmbeddedWorkerMessage) => {
          if ((m.type !== 'dumped' && m.type !== 'dump-failed') || m.id !== id) return
          cleanup()
          if (m.type === 'dumped') resolve(new Blob([m.data]))
          else reject(new Error(m.message))
        }
        const cleanup = () => {
          worker.off('message', onMessage)
          worker.off('exit', onExit)
        }
        worker.on('message', onMessage)
        worker.once('exit', onExit)
        worker.postMessage({ type: 'dump', id })
      })
    },
    async close() {
      if (closing) return
      closing = true
      clearTimeout(restartTimer)
      if (building) {
        // A template directory being built is finished (a few seconds, once per migration set and
        // machine), not thrown away; one that takes too long is stopped.
        const cap = setTimeout(() => building?.abort.abort(), 10_000)
        await building.done
        clearTimeout(cap)
      }
      gone ??= new Error('the embedded database was closed')
      settleWaiters(gone)
      if (starting) await starting.terminate()
      const worker = current
      if (worker) {
        const stopped = new Promise<void>((resolve) => {
          worker.once('exit', () => resolve())
          worker.on('message', (m: EmbeddedWorkerMessage) => {
            if (m.type === 'stopped') resolve()
          })
        })
        worker.postMessage({ type: 'stop' })
        // A clean stop closes PGlite (its files are consistent); a stuck worker is terminated.
        const timer = setTimeout(() => void worker.terminate(), 10_000)
        await stopped
        clearTimeout(timer)
        await worker.terminate()
      }
      up = false
      removeSocketDir()
    },
  }
}
