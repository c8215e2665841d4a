import { randomBytes } from 'node:crypto'
import { join, resolve } from 'node:path'
import { sql } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { type Audit, type AuditCaller, callerEntry } from '../../core/audit.ts'
import type { RegisteredBackupPath } from '../../core/module.ts'
import { PLINTH_VERSION } from '../../core/version.ts'
import type { Keyring } from '../../infra/crypto/keyring.ts'
import { type Database, IN_MEMORY } from '../../infra/db/create-db.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { Compression } from './archive-format.ts'
import {
  type ArchiveExpectation,
  type ArchiveKey,
  checkArchive,
  readArchive,
  writeArchive,
} from './archive-io.ts'
import { newContentKey, openContentKey, sealHolds, sealOf } from './backup-keys.ts'
import type { BackupMetrics } from './backup-metrics.ts'
import { auditChainOf, kyselyOnClient, listTables, readFacts } from './database-facts.ts'
import { embeddedEngine, openScratchPglite, restoreToDataDir } from './embedded-engine.ts'
import { filesArchiveName, filesPartId, filesSource, readFilesPart } from './files-part.ts'
import { type GfsPolicy, planRetention, type RetentionPlan } from './gfs-retention.ts'
import { type BackupTarget, createLocalTarget } from './local-target.ts'
import {
  archiveName,
  BACKUP_ID,
  type BackupManifest,
  manifestName,
  parseManifest,
  type SealedManifest,
  unsealed,
  verificationName,
} from './manifest.ts'
import { connectTo, createScratchDatabase, pgDump, pgRestore } from './pg-dump-engine.ts'
import type { S3TargetOptions } from './s3-target.ts'
import { compareFacts, type Verification, type VerificationCheck } from './verification.ts'

export type { Verification } from './verification.ts'

/** A backup as listed: its manifest (keys left out), and where its verification stands. */
export interface BackupSummary {
  readonly id: string
  /** `verified`: restored and checked, seals hold; `failed`: the last verification failed; `unverified`: never verified; `damaged`: the manifest fails its checks. */
  readonly status: 'verified' | 'failed' | 'unverified' | 'damaged'
  readonly manifest: Omit<BackupManifest, 'wrappedKey' | 'recoveryKey'> | null
  readonly verification: Verification | null
  readonly problem?: string | undefined
}

export interface RestoreOptions {
  /** A PostgreSQL server database (server backups). */
  readonly databaseUrl?: string | undefined
  /** A data directory whose `pglite` the backup becomes (embedded backups). */
  readonly dataDir?: string | undefined
  /** Replace a non-empty target (server: `pg_restore --clean`; embedded: the old directory is moved aside). */
  readonly force: boolean
  /** Every migration this code knows: a backup at another head is refused (PLINTH_BACKUP_TOO_NEW). */
  readonly knownMigrations: readonly string[]
  readonly caller?: AuditCaller | undefined
  /**
   * Where the files part goes back: `<module>/<name>` of each declared backup path → its directory
   * on this instance (`ctx.backupPaths`); roots without one are not written.
   */
  readonly filesDirs?: ReadonlyMap<string, string> | undefined
  /** Called as the archive is read: bytes read so far, of `total` (the archive's size). */
  readonly onProgress?: ((read: number, total: number) => void) | undefined
}

export interface RestoreResult {
  readonly id: string
  readonly kind: BackupManifest['kind']
  readonly target: string
  readonly rowCounts: Record<string, number>
  readonly matches: boolean
  readonly replaced?: string | undefined
  /** Files of the backup's files part written back (with `filesDirs`). */
  readonly filesRestored?: number | undefined
}

export interface BackupService {
  readonly target: BackupTarget
  create(options?: { caller?: AuditCaller | undefined }): Promise<BackupSummary>
  list(): Promise<BackupSummary[]>
  /** @throws PlinthError `PLINTH_BACKUP_NOT_FOUND` */
  show(id: string): Promise<BackupSummary>
  /** Restores to a scratch target and checks it; the result is stored beside the backup and audited. */
  verify(id: string, options?: { caller?: AuditCaller | undefined }): Promise<Verification>
  restore(id: string, options: RestoreOptions): Promise<RestoreResult>
  /**
   * Applies grandfather-father-son retention (`PLINTH_BACKUP_KEEP_*`, see `planRetention`); with
   * `dryRun`, only says what would go. Damaged backups are left alone (listed in `damaged`).
   */
  prune(options?: { dryRun?: boolean; caller?: AuditCaller | undefined }): Promise<PruneResult>
  /** Closes the target it built from the configuration (not one it was given). */
  close(): Promise<void>
}

export interface PruneResult extends RetentionPlan {
  readonly dryRun: boolean
  /** Backups whose manifest fails its checks: never removed automatically, look at them. */
  readonly damaged: readonly string[]
}

export interface BackupServiceDeps {
  readonly config: PlinthConfig
  readonly logger: Logger
  readonly db: Database
  readonly keyring: Keyring
  readonly audit: Pick<Audit, 'record' | 'verifyChain' | 'seal'>
  readonly target?: BackupTarget | undefined
  /** Plaintext bytes per encrypted record (tests use small ones to get many records). */
  readonly chunkSize?: number | undefined
  readonly compression?: Compression | undefined
  readonly now?: () => Date
  readonly metrics?: BackupMetrics | undefined
  /** The directories modules declare (`ctx.backupPaths`): their files become the backup's files part. */
  readonly backupPaths?: (() => readonly RegisteredBackupPath[]) | undefined
}

/** `PLINTH_BACKUP_DIR`, else `<PLINTH_DATA_DIR>/backups`. */
export function backupDirOf(config: Pick<PlinthConfig, 'backupDir' | 'dataDir'>): string {
  if (config.backupDir) return resolve(config.backupDir)
  if (config.dataDir === IN_MEMORY)
    throw new PlinthError(
      'PLINTH_BACKUP_NOT_CONFIGURED',
      'PLINTH_DATA_DIR is memory://, so backups have no default directory: set PLINTH_BACKUP_DIR (or PLINTH_BACKUP_S3_BUCKET).',
    )
  return join(resolve(config.dataDir), 'backups')
}

/** The S3 bucket when `PLINTH_BACKUP_S3_BUCKET` is set, else the local directory (`backupDirOf`). */
export function targetFromConfig(config: PlinthConfig): BackupTarget {
  if (config.backupS3Bucket)
    return lazyS3Target({
      bucket: config.backupS3Bucket,
      prefix: config.backupS3Prefix,
      endpoint: config.backupS3Endpoint,
      region: config.backupS3Region,
      accessKeyId: config.backupS3AccessKeyId,
      secretAccessKey: config.backupS3SecretAccessKey,
      forcePathStyle: config.backupS3ForcePathStyle,
      connectTimeoutMs: config.s3ConnectTimeout,
      socketTimeoutMs: config.s3SocketTimeout,
    })
  return createLocalTarget(backupDirOf(config))
}

/**
 * The S3 target, its module (and the AWS SDK, ~0.4 s of a start's imports) loaded at its first
 * use rather than at start (decision 0034).
 */
function lazyS3Target(options: S3TargetOptions): BackupTarget {
  let target: Promise<BackupTarget> | undefined
  const load = () => (target ??= import('./s3-target.ts').then((m) => m.createS3Target(options)))
  const prefix = options.prefix === '' || options.prefix.endsWith('/') ? options.prefix : `${options.prefix}/`
  return {
    description: `s3://${options.bucket}/${prefix}`,
    create: async (name) => (await load()).create(name),
    open: async (name) => (await load()).open(name),
    size: async (name) => (await load()).size(name),
    readText: async (name) => (await load()).readText(name),
    writeText: async (name, text) => (await load()).writeText(name, text),
    list: async () => (await load()).list(),
    remove: async (name) => (await load()).remove(name),
    // Only a target that was loaded has clients to destroy.
    close: async () => {
      if (target) await (await target).close?.()
    },
  }
}

/** Server-side advisory lock key: one backup at a time across replicas. */
const BACKUP_LOCK = 7_265_724_541_029_181_212n

export function newBackupId(now: Date): string {
  return `${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '')}-${randomBytes(4).toString('hex')}`
}

function notFound(id: string): PlinthError {
  return new PlinthError('PLINTH_BACKUP_NOT_FOUND', `No backup ${id} in the backup target.`)
}

export function createBackupService(deps: BackupServiceDeps): BackupService {
  const { config, db, keyring, audit } = deps
  const log = deps.logger.child({ component: 'backups' })
  const now = deps.now ?? (() => new Date())
  let target: BackupTarget | undefined = deps.target
  let built: BackupTarget | undefined
  const targetOf = () => {
    if (!target) {
      built = targetFromConfig(config)
      target = built
    }
    return target
  }
  const compression = deps.compression ?? 'zstd'
  let running = false

  async function record(
    caller: AuditCaller | undefined,
    action: string,
    id: string,
    outcome: 'success' | 'failure',
    details: Record<string, unknown>,
  ) {
    await audit.record(
      db.kysely,
      callerEntry(
        caller ?? { actor: { type: 'system', id: 'backups' } },
        action,
        { type: 'backup', id },
        { outcome, details },
      ),
    )
  }

  /** The manifest, its content key and whether its seal holds. */
  async function load(id: string): Promise<{ manifest: SealedManifest; key: Buffer }> {
    if (!BACKUP_ID.test(id)) throw notFound(id)
    const text = await targetOf().readText(manifestName(id))
    if (text === undefined) throw notFound(id)
    const manifest = parseManifest(id, text)
    const key = await openContentKey(id, manifest, keyring, config, log)
    if (!sealHolds(key, 'manifest', unsealed(manifest), manifest.seal))
      throw new PlinthError(
        'PLINTH_BACKUP_CORRUPT',
        `The manifest of backup ${id} was altered: its seal does not hold.`,
      )
    return { manifest, key }
  }

  const expectation = (m: SealedManifest): ArchiveExpectation => {
    const part = m.parts[0]!
    return {
      name: part.name,
      bytes: part.bytes,
      sha256: part.sha256,
      dumpBytes: part.dumpBytes,
      compression: m.compression,
    }
  }

  const filesExpectation = (m: SealedManifest): ArchiveExpectation => {
    const f = m.files!
    return {
      name: f.name,
      bytes: f.bytes,
      sha256: f.sha256,
      dumpBytes: f.dumpBytes,
      compression: m.compression,
    }
  }

  async function readVerification(id: string, key: Buffer | undefined): Promise<Verification | null> {
    const text = await targetOf().readText(verificationName(id))
    if (text === undefined) return null
    try {
      const v = JSON.parse(text) as Verification & { seal?: string }
      const { seal, ...body } = v
      // Only a sealed result can say "good": a file edited to say so fails here.
      if (v.ok && (!key || !sealHolds(key, 'verification', body, seal)))
        return {
          ...body,
          ok: false,
          checks: [{ name: 'seal', ok: false, detail: 'the stored verification result was altered' }],
        }
      return body
    } catch {
      return null
    }
  }

  async function summary(id: string): Promise<BackupSummary> {
    try {
      const { manifest, key } = await load(id)
      const { wrappedKey: _w, recoveryKey: _r, seal: _s, ...shown } = manifest
      const verification = await readVerification(id, key)
      const status = verification === null ? 'unverified' : verification.ok ? 'verified' : 'failed'
      return { id, status, manifest: shown, verification }
    } catch (err) {
      if ((err as PlinthError).code === 'PLINTH_BACKUP_NOT_FOUND') throw err
      return {
        id,
        status: 'damaged',
        manifest: null,
        verification: await readVerification(id, undefined),
        problem: (err as Error).message,
      }
    }
  }

  async function snapshotAndDump(id: string, key: ArchiveKey) {
    if (db.kind === 'embedded') {
      // PGlite has one session, shared by the pool's connections one protocol unit at a time — and
      // by one connection for the whole of an open transaction (infra/db/session-queue.ts). So the
      // facts are read inside a transaction and the dump is taken before it ends: no other
      // connection's statement runs between the counts and the dump, however large the pool.
      const client = await db.pool.connect()
      let facts: Awaited<ReturnType<typeof readFacts>>
      let chain: Awaited<ReturnType<typeof auditChainOf>>
      let dump: AsyncIterable<Uint8Array>
      try {
        await client.query('begin isolation level repeatable read read only')
        try {
          const k = kyselyOnClient(client)
          facts = await readFacts(k)
          chain = await auditChainOf(k, audit)
          dump = await embeddedEngine(db).dump()
          await client.query('commit')
        } catch (err) {
          await client.query('rollback').catch(() => {})
          throw err
        }
      } finally {
        client.release()
      }
      const written = await writeArchive(targetOf(), archiveName(id), dump, {
        ...key,
        compression,
        chunkSize: deps.chunkSize,
      })
      return { facts, chain, written, engine: 'pglite-datadir' as const }
    }
    const url = config.databaseUrl
    if (!url) throw new TypeError('backups: a server database needs DATABASE_URL')
    const client = await db.pool.connect()
    try {
      const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_lock($1) as locked', [
        BACKUP_LOCK.toString(),
      ])
      if (!rows[0]?.locked)
        throw new PlinthError(
          'PLINTH_BACKUP_IN_PROGRESS',
          'Another backup runs now on this database: retry when it has finished.',
        )
      try {
        // pg_dump reads the snapshot this transaction exports: the counts below are the dump's.
        await client.query('begin isolation level repeatable read read only')
        const snap = await client.query<{ s: string }>('select pg_export_snapshot() as s')
        const k = kyselyOnClient(client)
        const facts = await readFacts(k)
        const chain = await auditChainOf(k, audit)
        const written = await writeArchive(
          targetOf(),
          archiveName(id),
          pgDump(url, { snapshot: snap.rows[0]!.s }),
          {
            ...key,
            compression,
            chunkSize: deps.chunkSize,
          },
        )
        await client.query('commit')
        return { facts, chain, written, engine: 'pg_dump' as const }
      } catch (err) {
        await client.query('rollback').catch(() => {})
        throw err
      } finally {
        await client.query('select pg_advisory_unlock($1)', [BACKUP_LOCK.toString()]).catch(() => {})
      }
    } finally {
      client.release()
    }
  }

  async function create(options: { caller?: AuditCaller | undefined } = {}): Promise<BackupSummary> {
    if (running)
      throw new PlinthError(
        'PLINTH_BACKUP_IN_PROGRESS',
        'A backup runs now in this process: retry when it has finished.',
      )
    running = true
    const startedAt = now()
    const id = newBackupId(startedAt)
    try {
      // Rows committed but not yet chained join the chain first, so the manifest's head covers them.
      await audit
        .seal()
        .catch((err: unknown) => log.warn({ err }, 'could not seal the audit log before the backup'))
      const wrapped = newContentKey(id, keyring, config, log)
      const { facts, chain, written, engine } = await snapshotAndDump(id, { key: wrapped.key, backupId: id })
      // The files part: every file under the directories modules declare (after the database, so
      // that no file a row of the dump names is missing: content-addressed objects are only added).
      let files:
        | (NonNullable<BackupManifest['files']> & {
            pending: { publish(): Promise<void>; discard(): Promise<void> }
          })
        | undefined
      const paths = deps.backupPaths?.() ?? []
      if (paths.length > 0) {
        try {
          const source = await filesSource(paths)
          const part = await writeArchive(targetOf(), filesArchiveName(id), source.stream(), {
            key: wrapped.key,
            backupId: filesPartId(id),
            compression,
            chunkSize: deps.chunkSize,
          })
          files = {
            name: filesArchiveName(id),
            dumpBytes: part.dumpBytes,
            bytes: part.bytes,
            sha256: part.sha256,
            roots: source.done(),
            pending: part.pending,
          }
        } catch (err) {
          await written.pending.discard().catch(() => {})
          throw err
        }
      }
      const body: BackupManifest = {
        format: 1,
        id,
        kind: db.kind,
        engine,
        startedAt: startedAt.toISOString(),
        finishedAt: now().toISOString(),
        plinthVersion: PLINTH_VERSION,
        postgresVersion: facts.postgresVersion,
        migrationHead: facts.migrationHead,
        rowCounts: facts.rowCounts,
        auditHead: chain?.head ?? null,
        compression,
        chunkSize: deps.chunkSize ?? 1024 * 1024,
        parts: [
          {
            name: archiveName(id),
            dumpBytes: written.dumpBytes,
            bytes: written.bytes,
            sha256: written.sha256,
          },
        ],
        ...(files
          ? {
              files: {
                name: files.name,
                dumpBytes: files.dumpBytes,
                bytes: files.bytes,
                sha256: files.sha256,
                roots: files.roots,
              },
            }
          : {}),
        wrappedKey: wrapped.wrappedKey,
        recoveryKey: wrapped.recoveryKey,
      }
      const sealed: SealedManifest = { ...body, seal: sealOf(wrapped.key, 'manifest', body) }
      try {
        await written.pending.publish()
        await files?.pending.publish()
        // The manifest is written last: a backup exists (is listed) only once it is complete.
        await targetOf().writeText(manifestName(id), `${JSON.stringify(sealed, null, 2)}\n`)
      } catch (err) {
        await targetOf()
          .remove(archiveName(id))
          .catch(() => {})
        if (files)
          await targetOf()
            .remove(files.name)
            .catch(() => {})
        await written.pending.discard().catch(() => {})
        await files?.pending.discard().catch(() => {})
        throw err
      }
      log.info(
        { backupId: id, kind: db.kind, bytes: written.bytes, dumpBytes: written.dumpBytes },
        'backup written',
      )
      deps.metrics?.created(db.kind, (now().getTime() - startedAt.getTime()) / 1000, written.bytes)
      await record(options.caller, 'backup:created', id, 'success', {
        kind: db.kind,
        bytes: written.bytes,
        sha256: written.sha256,
      })
      return summary(id)
    } catch (caught) {
      const errno = (caught as NodeJS.ErrnoException).code
      const err =
        errno === 'ENOSPC' || errno === 'EDQUOT'
          ? new PlinthError(
              'PLINTH_BACKUP_TARGET_FULL',
              `The backup target ${targetOf().description} is full (${errno}): backup ${id} was not published.`,
              { cause: caught },
            )
          : caught
      // A refusal (4xx: not configured, run it in the server…) is the caller's to fix, not a fault.
      if (err instanceof PlinthError && err.status < 500)
        log.warn({ backupId: id, code: err.code }, 'backup refused')
      else log.error({ backupId: id, err }, 'backup failed')
      deps.metrics?.failed('create')
      await record(options.caller, 'backup:created', id, 'failure', {
        reason: (err as PlinthError).code ?? 'error',
      }).catch(() => {})
      throw err
    } finally {
      running = false
    }
  }

  /** Restores into a scratch target and reads its facts and audit chain there. */
  async function restoreToScratch(m: SealedManifest, key: ArchiveKey) {
    if (m.kind === 'embedded') {
      const parts: Uint8Array[] = []
      for await (const c of readArchive(targetOf(), expectation(m), key)) parts.push(c)
      const scratch = await openScratchPglite(parts, log)
      try {
        return { facts: await readFacts(scratch.kysely), chain: await auditChainOf(scratch.kysely, audit) }
      } finally {
        await scratch.close()
      }
    }
    const url = config.databaseUrl
    if (!url)
      throw new PlinthError(
        'PLINTH_BACKUP_ENGINE_FAILED',
        'Verifying a server backup needs DATABASE_URL (the scratch database is made beside it).',
      )
    await checkArchive(targetOf(), expectation(m), key)
    const scratch = await createScratchDatabase(url)
    try {
      await pgRestore(scratch.url, readArchive(targetOf(), expectation(m), key))
      const conn = connectTo(scratch.url)
      try {
        return { facts: await readFacts(conn.kysely), chain: await auditChainOf(conn.kysely, audit) }
      } finally {
        await conn.close()
      }
    } finally {
      await scratch.drop().catch((err: unknown) => log.warn({ err }, 'could not drop a scratch database'))
    }
  }

  async function verify(
    id: string,
    options: { caller?: AuditCaller | undefined } = {},
  ): Promise<Verification> {
    const started = now()
    const checks: VerificationCheck[] = []
    let key: Buffer | undefined
    try {
      const loaded = await load(id)
      key = loaded.key
      checks.push({ name: 'manifest', ok: true, detail: 'the manifest parses and its seal holds' })
      const restored = await restoreToScratch(loaded.manifest, { key, backupId: id })
      checks.push({ name: 'archive', ok: true, detail: 'size, SHA-256 and every encrypted record check out' })
      checks.push(...compareFacts(loaded.manifest, restored.facts, restored.chain))
      if (loaded.manifest.files) {
        const read = await readFilesPart(
          readArchive(targetOf(), filesExpectation(loaded.manifest), { key, backupId: filesPartId(id) }),
          loaded.manifest.files.roots,
        )
        checks.push({
          name: 'files',
          ok: true,
          detail: `${read.files} file(s), ${read.bytes} bytes: every SHA-256 matches the manifest`,
        })
      }
    } catch (err) {
      if ((err as PlinthError).code === 'PLINTH_BACKUP_NOT_FOUND') throw err
      checks.push({
        name: 'integrity',
        ok: false,
        detail: (err as Error).message,
        code: (err as PlinthError).code,
      })
    }
    const body = {
      id,
      ok: checks.every((c) => c.ok),
      at: started.toISOString(),
      durationMs: now().getTime() - started.getTime(),
      checks,
    }
    const stored = key ? { ...body, seal: sealOf(key, 'verification', body) } : body
    await targetOf().writeText(verificationName(id), `${JSON.stringify(stored, null, 2)}\n`)
    await record(options.caller, 'backup:verified', id, body.ok ? 'success' : 'failure', {
      failed: checks.filter((c) => !c.ok).map((c) => c.name),
    })
    log.info({ backupId: id, ok: body.ok }, 'backup verified')
    deps.metrics?.verified(db.kind, body.ok)
    return body
  }

  async function restore(id: string, options: RestoreOptions): Promise<RestoreResult> {
    const { manifest, key } = await load(id)
    if (manifest.migrationHead !== null && !options.knownMigrations.includes(manifest.migrationHead))
      throw new PlinthError(
        'PLINTH_BACKUP_TOO_NEW',
        `Backup ${id} was taken at migration ${manifest.migrationHead} (Plinth ${manifest.plinthVersion}), which this Plinth ${PLINTH_VERSION} does not know: restore it with that version or newer.`,
      )
    const archiveKey = { key, backupId: id }
    const total = expectation(manifest).bytes
    const onRead = options.onProgress ? (read: number) => options.onProgress?.(read, total) : undefined
    let result: RestoreResult
    if (manifest.kind === 'embedded') {
      if (!options.dataDir) throw new TypeError('an embedded backup restores into a data directory (dataDir)')
      const parts: Uint8Array[] = []
      // Read and checked to the end before anything is written.
      for await (const c of readArchive(targetOf(), expectation(manifest), archiveKey, onRead)) parts.push(c)
      const done = await restoreToDataDir(parts, options.dataDir, { force: options.force, now: now() })
      const scratch = await openScratchPglite(parts, log)
      const facts = await readFacts(scratch.kysely).finally(() => scratch.close())
      result = {
        id,
        kind: 'embedded',
        target: resolve(options.dataDir),
        rowCounts: facts.rowCounts,
        matches: sameCounts(manifest.rowCounts, facts.rowCounts),
        replaced: done.replaced,
      }
    } else {
      if (!options.databaseUrl) throw new TypeError('a server backup restores into a database (databaseUrl)')
      const conn = connectTo(options.databaseUrl)
      try {
        const tables = await listTables(conn.kysely)
        if (tables.length > 0 && !options.force)
          throw new PlinthError(
            'PLINTH_BACKUP_TARGET_NOT_EMPTY',
            `The target database holds ${tables.length} table(s): restore into an empty database, or pass --force --yes to replace what the backup holds.`,
          )
        // One pass: pg_restore runs in one transaction, and the last piece of the dump is held
        // back until the archive's end checks (size, SHA-256, final record) pass, so a damaged
        // archive is never restored completely and its transaction never commits.
        await pgRestore(
          options.databaseUrl,
          holdLast(readArchive(targetOf(), expectation(manifest), archiveKey, onRead)),
          { clean: options.force },
        )
        const facts = await readFacts(conn.kysely)
        await sql`select 1`.execute(conn.kysely)
        result = {
          id,
          kind: 'postgres',
          target: new URL(options.databaseUrl).host + new URL(options.databaseUrl).pathname,
          rowCounts: facts.rowCounts,
          matches: sameCounts(manifest.rowCounts, facts.rowCounts),
        }
      } finally {
        await conn.close()
      }
    }
    if (manifest.files && options.filesDirs && options.filesDirs.size > 0) {
      const read = await readFilesPart(
        readArchive(targetOf(), filesExpectation(manifest), { key, backupId: filesPartId(id) }),
        manifest.files.roots,
        options.filesDirs,
      )
      result = { ...result, filesRestored: read.restored }
    }
    await record(options.caller, 'backup:restored', id, 'success', {
      kind: result.kind,
      target: result.target,
      matches: result.matches,
    })
    return result
  }

  async function prune(
    options: { dryRun?: boolean; caller?: AuditCaller | undefined } = {},
  ): Promise<PruneResult> {
    const all = await list()
    const damaged = all.filter((b) => b.status === 'damaged').map((b) => b.id)
    const policy: GfsPolicy = {
      hourly: config.backupKeepHourly,
      daily: config.backupKeepDaily,
      weekly: config.backupKeepWeekly,
      monthly: config.backupKeepMonthly,
    }
    const plan = planRetention(
      all
        .filter((b) => b.manifest !== null)
        .map((b) => ({ id: b.id, at: new Date(b.manifest!.startedAt), verified: b.status === 'verified' })),
      policy,
    )
    const dryRun = Boolean(options.dryRun)
    if (!dryRun) {
      for (const r of plan.remove) {
        // The manifest goes first: the backup stops being listed before its archive disappears.
        await targetOf().remove(manifestName(r.id))
        await targetOf().remove(archiveName(r.id))
        await targetOf().remove(filesArchiveName(r.id))
        await targetOf().remove(verificationName(r.id))
      }
      if (plan.remove.length > 0)
        await audit.record(
          db.kysely,
          callerEntry(
            options.caller ?? { actor: { type: 'system', id: 'backups' } },
            'backup:pruned',
            undefined,
            {
              details: { removed: plan.remove.map((r) => r.id), kept: plan.keep.length },
            },
          ),
        )
      log.info({ removed: plan.remove.length, kept: plan.keep.length }, 'backups pruned')
    }
    return { ...plan, dryRun, damaged }
  }

  async function list(): Promise<BackupSummary[]> {
    const ids = (await targetOf().list())
      .filter((n) => n.endsWith('.manifest.json'))
      .map((n) => n.slice(0, -'.manifest.json'.length))
      .filter((id) => BACKUP_ID.test(id))
      .sort()
      .reverse()
    return Promise.all(ids.map(summary))
  }

  return Object.freeze({
    get target() {
      return targetOf()
    },
    create,
    list,
    prune,
    show: summary,
    verify,
    restore,
    async close() {
      await built?.close?.()
    },
  })
}

function sameCounts(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  return [...keys].every((k) => a[k] === b[k])
}

/**
 * Passes a stream on one piece late: the last piece comes out only once the source has finished
 * without throwing (for `readArchive`, once every end check passed).
 */
export async function* holdLast<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  let held: { value: T } | undefined
  for await (const piece of source) {
    if (held) yield held.value
    held = { value: piece }
  }
  if (held) yield held.value
}
