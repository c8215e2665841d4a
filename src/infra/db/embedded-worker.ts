/**
 * The embedded database's worker thread: PGlite (PostgreSQL in WebAssembly) runs here, behind
 * a socket server of our own (embedded-socket.ts) that speaks the PostgreSQL wire protocol on a Unix socket. The
 * main thread reaches it through an ordinary `pg.Pool`, so a long query never blocks the HTTP
 * event loop. Started by `embedded-server.ts`; not imported by anything else.
 *
 * Messages to the parent: `{ type: 'ready', origin, ms }` once the socket accepts connections,
 * `{ type: 'stopped' }` after a `{ type: 'stop' }` request, `{ type: 'dumped', id, data }` (or
 * `dump-failed`) after a `{ type: 'dump', id }` request — PGlite's own copy of its data directory,
 * for backups; `{ type: 'queue-stats', stats }` after a `{ type: 'queue-stats' }` request (the
 * session queue's counters, for benchmarks). Any other failure ends the thread, which the parent
 * sees as an `exit`.
 */
import { chmodSync, existsSync, renameSync, rmSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parentPort, workerData } from 'node:worker_threads'
import { PGlite, type PGliteOptions } from '@electric-sql/pglite'
import { startSessionServer } from './embedded-socket.ts'
import { SessionQueue, type SessionQueueStats } from './session-queue.ts'
import {
  copyTemplateDir,
  discardTemplate,
  discardTemplateDir,
  latestTemplateDir,
  readTemplate,
  stageTemplateDir,
  touchTemplateDir,
  writeTemplate,
} from './template.ts'

export interface EmbeddedWorkerData {
  /** The PGlite cluster directory, or null for an in-memory database. */
  readonly clusterDir: string | null
  /** The Unix socket to listen on. */
  readonly socketPath: string
  readonly maxConnections: number
  /** Start a new cluster from the cached template (and build it when missing). */
  readonly useTemplate: boolean
  /** The migrated template to start a new cluster from, when it exists (template.ts); null: none. */
  readonly migratedTemplate: string | null
  /** The same as a ready cluster directory, copied for a new file-backed cluster when it exists; null: none. */
  readonly migratedTemplateDir?: string | null | undefined
  /**
   * Started before the application was loaded (`plinth start`): an existing cluster opens at once,
   * a new one waits for a `{ type: 'template', migratedTemplate, migratedTemplateDir }` message
   * (the migration set is known only once every module is loaded).
   */
  readonly awaitTemplate?: boolean | undefined
  /** A data directory dump (PGlite's `dumpDataDir`) to open instead: a backup's scratch copy. */
  readonly loadDump?: readonly Uint8Array[] | null | undefined
}

/** How a cluster was opened: an existing one, a copy of the migrated template directory, the migrated or plain template tar, initdb, or a dump. */
export type ClusterOrigin = 'existing' | 'copied' | 'migrated' | 'template' | 'initdb' | 'loaded'

export type EmbeddedWorkerMessage =
  | { type: 'ready'; origin: ClusterOrigin; ms: number }
  | { type: 'stopped' }
  | { type: 'dumped'; id: number; data: ArrayBuffer }
  | { type: 'dump-failed'; id: number; message: string }
  | { type: 'queue-stats'; stats: SessionQueueStats }

const data = workerData as EmbeddedWorkerData
const port = parentPort
if (!port) throw new Error('embedded-worker.ts runs only as a worker thread')

/** The template paths a new cluster may start from: given at spawn, or awaited (awaitTemplate). */
function templates(): Promise<{ migratedTemplate: string | null; migratedTemplateDir: string | null }> {
  if (!data.awaitTemplate)
    return Promise.resolve({
      migratedTemplate: data.migratedTemplate,
      migratedTemplateDir: data.migratedTemplateDir ?? null,
    })
  return new Promise((resolve) => {
    const onMessage = (m: {
      type?: string
      migratedTemplate?: string | null
      migratedTemplateDir?: string | null
    }) => {
      if (m?.type !== 'template') return
      port?.off('message', onMessage)
      resolve({
        migratedTemplate: m.migratedTemplate ?? null,
        migratedTemplateDir: m.migratedTemplateDir ?? null,
      })
    }
    port?.on('message', onMessage)
  })
}

/**
 * PGlite as this thread uses it: only through the wire protocol (session-queue.ts), whose answers
 * go to `pg` on the main thread as bytes. PGlite's own result parsing is never used here, so the
 * catalog query it runs at every open to learn the array types (`_initArrayTypes`, for parsing
 * array columns in `query()` results) is skipped: ~100 ms of a restart's worker on a 2-core machine,
 * of which the first statements pay back ~30 ms (the catalog caches it warmed). Should PGlite rename
 * the method, the override is never called and PGlite runs its query as before.
 */
class ProtocolPGlite extends PGlite {
  override async _initArrayTypes(): Promise<void> {}
}

async function create(where: string, options: PGliteOptions = {}): Promise<PGlite> {
  const db = new ProtocolPGlite({ ...options, dataDir: where })
  await db.waitReady
  return db
}

async function open(): Promise<{ db: PGlite; origin: ClusterOrigin }> {
  const where = data.clusterDir ?? 'memory://'
  if (data.loadDump)
    return {
      db: await create(where, { loadDataDir: new Blob(data.loadDump as Uint8Array<ArrayBuffer>[]) }),
      origin: 'loaded',
    }
  const isNew = data.clusterDir === null || !existsSync(join(data.clusterDir, 'PG_VERSION'))
  if (!isNew) {
    // A copy aside left by a start that stopped before using it (below).
    if (data.clusterDir) rmSync(`${data.clusterDir}.staged`, { recursive: true, force: true })
    return { db: await create(where), origin: 'existing' }
  }
  // Before waiting for the migration set (the application still loading on the main thread), the
  // template directory used last is copied aside: it is nearly always the one the set names, and
  // the copy (~1 s for 40 MB in ~1,200 files here) is then off the start's path (decision 0039).
  // Synchronous: Node's asynchronous `cp` took ~1.6x as long; the set's message waits meanwhile.
  const guess = data.awaitTemplate && data.clusterDir ? latestTemplateDir() : undefined
  const staging = guess ? `${data.clusterDir}.staged` : undefined
  if (staging) rmSync(staging, { recursive: true, force: true })
  const staged = guess !== undefined && staging !== undefined && stageTemplateDir(guess, staging)
  const { migratedTemplate, migratedTemplateDir } = await templates()
  // Another set (or none): the copy aside is not the one; removed in the background.
  if (staged && staging && guess !== migratedTemplateDir)
    void rm(staging, { recursive: true, force: true }).catch(() => {})
  if (data.clusterDir && migratedTemplateDir) {
    // A copy of a ready cluster opens as an existing one: no tar to load and write out.
    try {
      rmSync(data.clusterDir, { recursive: true, force: true })
      if (staged && staging && guess === migratedTemplateDir) {
        renameSync(staging, data.clusterDir)
        touchTemplateDir(migratedTemplateDir)
        return { db: await create(where), origin: 'copied' }
      }
      if (copyTemplateDir(migratedTemplateDir, data.clusterDir)) {
        touchTemplateDir(migratedTemplateDir)
        return { db: await create(where), origin: 'copied' }
      }
    } catch {
      // A damaged (or vanished) directory: forget it and use the tar; a later start rebuilds it.
      discardTemplateDir(migratedTemplateDir)
    }
    rmSync(data.clusterDir, { recursive: true, force: true })
  }
  if (migratedTemplate) {
    const migrated = readTemplate(migratedTemplate)
    if (migrated) {
      try {
        return { db: await create(where, { loadDataDir: migrated }), origin: 'migrated' }
      } catch {
        discardTemplate(migratedTemplate)
        if (data.clusterDir) rmSync(data.clusterDir, { recursive: true, force: true })
      }
    }
  }
  if (data.useTemplate) {
    const template = readTemplate()
    if (template) {
      try {
        return { db: await create(where, { loadDataDir: template }), origin: 'template' }
      } catch {
        // A damaged template: forget it, clear what it half wrote, and fall back to initdb.
        discardTemplate()
        if (data.clusterDir) rmSync(data.clusterDir, { recursive: true, force: true })
      }
    }
  }
  const db = await create(where)
  if (data.useTemplate) {
    // Best effort: a read-only cache directory only means the next start runs initdb again.
    await db
      .dumpDataDir('none')
      .then((dump) => writeTemplate(dump))
      .catch(() => {})
  }
  return { db, origin: 'initdb' }
}

const started = performance.now()
const { db, origin } = await open()
// A socket left by a crashed worker would make listen() fail with EADDRINUSE.
rmSync(data.socketPath, { force: true })
// One connection owns the session for a whole protocol unit (or transaction), not for one message:
// see session-queue.ts; the socket server is embedded-socket.ts (decision 0036).
const queue = new SessionQueue(db)
const server = await startSessionServer({ path: data.socketPath, queue, maxConnections: data.maxConnections })
// Only this user may connect: the socket has no password (PGlite trusts every client).
chmodSync(data.socketPath, 0o600)
port.postMessage({
  type: 'ready',
  origin,
  ms: Math.round(performance.now() - started),
} satisfies EmbeddedWorkerMessage)
// A session's first statement costs 20-50 ms more than the next ones on a 2-core machine (its first
// run through the query path; no array-type query warmed it, above). The main thread is often still
// building the server when this thread is ready, so that cost is paid now, while nobody waits; a
// client statement that arrives meanwhile waits for it, which is what it would have cost itself.
// Harmless inside a client's transaction too, and a failure changes nothing.
void db.exec('select 1').catch(() => {})

port.on('message', (message: { type?: string; id?: number }) => {
  if (message?.type === 'queue-stats') {
    port.postMessage({ type: 'queue-stats', stats: queue.stats() } satisfies EmbeddedWorkerMessage)
    return
  }
  if (message?.type === 'dump') {
    const id = message.id ?? 0
    db.dumpDataDir('none')
      .then((blob) => blob.arrayBuffer())
      .then(
        (data) => port.postMessage({ type: 'dumped', id, data } satisfies EmbeddedWorkerMessage, [data]),
        (err: Error) =>
          port.postMessage({ type: 'dump-failed', id, message: err.message } satisfies EmbeddedWorkerMessage),
      )
    return
  }
  if (message?.type !== 'stop') return
  void (async () => {
    try {
      await server.stop()
      await db.close()
    } finally {
      rmSync(data.socketPath, { force: true })
      port.postMessage({ type: 'stopped' } satisfies EmbeddedWorkerMessage)
      port.close()
    }
  })()
})
