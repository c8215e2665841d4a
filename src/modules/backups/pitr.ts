import { execFileSync, spawn } from 'node:child_process'
import { chown, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import pg from 'pg'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { IN_MEMORY } from '../../infra/db/create-db.ts'
import { PlinthError } from '../../shared/errors.ts'

/**
 * Point-in-time recovery through pgBackRest (decision 0018). Plinth writes the stanza's
 * configuration, says (or applies) the `archive_*` settings, and drives `pgbackrest` for backups,
 * `check`, `verify`, `info` and `restore`; it reimplements none of them. pgBackRest runs on the
 * database host, as the server's operating-system user (`PLINTH_PITR_OS_USER` when Plinth is root),
 * and encrypts its repository itself (`repo1-cipher-type=aes-256-cbc`).
 */
export interface PitrSettings {
  readonly stanza: string
  readonly pgData: string
  readonly pgPort: number
  readonly pgSocket: string
  readonly repoPath: string
  readonly cipherPass: string
  readonly configPath: string
  readonly osUser?: string | undefined
  readonly archiveTimeoutSeconds: number
  /** The `pgbackrest` binary (PATH by default). */
  readonly binary?: string | undefined
  /** The repository in an S3-compatible bucket (`repo1-type=s3`) rather than `<repoPath>/repo`. */
  readonly s3?: PitrS3 | undefined
}

export interface PitrS3 {
  readonly bucket: string
  readonly prefix: string
  /** Host name of the endpoint (`repo1-s3-endpoint`). */
  readonly endpoint: string
  /** `repo1-storage-port` (443 unless the endpoint URL names another). */
  readonly port: number
  readonly region: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly pathStyle: boolean
  readonly caFile?: string | undefined
}

export type PitrConfig = Pick<
  PlinthConfig,
  | 'pitrStanza'
  | 'pitrPgData'
  | 'pitrPgPort'
  | 'pitrPgSocket'
  | 'pitrRepoPath'
  | 'pitrCipherPass'
  | 'pitrConfigPath'
  | 'pitrOsUser'
  | 'pitrArchiveTimeout'
  | 'pitrS3Bucket'
  | 'pitrS3Prefix'
  | 'pitrS3Endpoint'
  | 'pitrS3Region'
  | 'pitrS3AccessKeyId'
  | 'pitrS3SecretAccessKey'
  | 'pitrS3PathStyle'
  | 'pitrS3CaFile'
  | 'dataDir'
>

const STANZA = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/

function notConfigured(why: string): PlinthError {
  return new PlinthError('PLINTH_PITR_NOT_CONFIGURED', `Point-in-time recovery is not configured: ${why}.`)
}

/** The PITR settings of a configuration, or a PLINTH_PITR_NOT_CONFIGURED error naming what is missing. */
export function pitrSettingsOf(config: PitrConfig): PitrSettings {
  if (!config.pitrStanza) throw notConfigured('set PLINTH_PITR_STANZA')
  if (!STANZA.test(config.pitrStanza))
    throw notConfigured('PLINTH_PITR_STANZA is letters, digits, "-" and "_" (64 at most)')
  if (!config.pitrPgData) throw notConfigured("set PLINTH_PITR_PG_DATA (the server's data directory)")
  if (!config.pitrCipherPass || config.pitrCipherPass.length < 20)
    throw notConfigured('set PLINTH_PITR_CIPHER_PASS to a passphrase of at least 20 characters')
  let repoPath = config.pitrRepoPath
  if (!repoPath) {
    if (config.dataDir === IN_MEMORY) throw notConfigured('set PLINTH_PITR_REPO_PATH')
    repoPath = join(resolve(config.dataDir), 'pgbackrest')
  }
  repoPath = resolve(repoPath)
  let s3: PitrS3 | undefined
  if (config.pitrS3Bucket) {
    if (!config.pitrS3AccessKeyId || !config.pitrS3SecretAccessKey)
      throw notConfigured(
        'a repository in PLINTH_PITR_S3_BUCKET needs PLINTH_PITR_S3_ACCESS_KEY_ID and PLINTH_PITR_S3_SECRET_ACCESS_KEY',
      )
    const endpoint = new URL(config.pitrS3Endpoint ?? `https://s3.${config.pitrS3Region}.amazonaws.com`)
    s3 = {
      bucket: config.pitrS3Bucket,
      prefix: `/${config.pitrS3Prefix.replace(/^\/+|\/+$/g, '')}`,
      endpoint: endpoint.hostname,
      port: Number(endpoint.port || 443),
      region: config.pitrS3Region,
      accessKeyId: config.pitrS3AccessKeyId,
      secretAccessKey: config.pitrS3SecretAccessKey,
      pathStyle: config.pitrS3PathStyle,
      caFile: config.pitrS3CaFile ? resolve(config.pitrS3CaFile) : undefined,
    }
  }
  return {
    stanza: config.pitrStanza,
    pgData: resolve(config.pitrPgData),
    pgPort: config.pitrPgPort,
    pgSocket: config.pitrPgSocket,
    repoPath,
    cipherPass: config.pitrCipherPass,
    configPath: resolve(config.pitrConfigPath ?? join(repoPath, 'pgbackrest.conf')),
    osUser: config.pitrOsUser,
    archiveTimeoutSeconds: Math.max(1, Math.round(config.pitrArchiveTimeout / 1000)),
    s3,
  }
}

/** The pgBackRest configuration file of these settings (it holds the passphrase: mode 0600). */
export function renderPgbackrestConf(s: PitrSettings): string {
  return [
    '# Written by `plinth pitr setup` (docs/operations/backups.md); edits are overwritten by the next setup.',
    '[global]',
    ...(s.s3
      ? [
          'repo1-type=s3',
          `repo1-path=${s.s3.prefix}`,
          `repo1-s3-bucket=${s.s3.bucket}`,
          `repo1-s3-endpoint=${s.s3.endpoint}`,
          `repo1-storage-port=${s.s3.port}`,
          `repo1-s3-region=${s.s3.region}`,
          `repo1-s3-key=${s.s3.accessKeyId}`,
          `repo1-s3-key-secret=${s.s3.secretAccessKey}`,
          ...(s.s3.pathStyle ? ['repo1-s3-uri-style=path'] : []),
          ...(s.s3.caFile ? [`repo1-storage-ca-file=${s.s3.caFile}`] : []),
        ]
      : [`repo1-path=${s.repoPath}/repo`]),
    'repo1-cipher-type=aes-256-cbc',
    `repo1-cipher-pass=${s.cipherPass}`,
    'repo1-retention-full=2',
    'compress-type=zst',
    `log-path=${s.repoPath}/log`,
    `lock-path=${s.repoPath}/lock`,
    `spool-path=${s.repoPath}/spool`,
    'log-level-console=warn',
    'log-level-stderr=error',
    'log-level-file=info',
    'start-fast=y',
    '',
    `[${s.stanza}]`,
    `pg1-path=${s.pgData}`,
    `pg1-port=${s.pgPort}`,
    `pg1-socket-path=${s.pgSocket}`,
    '',
  ].join('\n')
}

/** The server settings continuous archiving needs (`plinth pitr setup` prints or applies them). */
export function archiveSettings(s: PitrSettings): Record<string, string> {
  return {
    wal_level: 'replica',
    archive_mode: 'on',
    archive_command: `pgbackrest --config=${s.configPath} --stanza=${s.stanza} archive-push %p`,
    archive_timeout: `${s.archiveTimeoutSeconds}s`,
  }
}

function idOf(user: string, flag: '-u' | '-g'): number {
  try {
    return Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim())
  } catch {
    throw notConfigured(`PLINTH_PITR_OS_USER names no user of this host ("${user}")`)
  }
}

/** The uid/gid pgBackRest and the server's programs run as (undefined: this process's own). */
export function ownerOf(s: PitrSettings): { uid: number; gid: number } | undefined {
  if (!s.osUser) return undefined
  const uid = idOf(s.osUser, '-u')
  if (process.getuid?.() === uid) return undefined
  return { uid, gid: idOf(s.osUser, '-g') }
}

export interface PgbackrestResult {
  readonly stdout: string
  readonly stderr: string
}

/** Runs `pgbackrest --config=… --stanza=… <args>` as the configured user; a non-zero exit is PLINTH_PITR_FAILED. */
export async function pgbackrest(
  s: PitrSettings,
  args: readonly string[],
  options: { signal?: AbortSignal } = {},
): Promise<PgbackrestResult> {
  const owner = ownerOf(s)
  const child = spawn(
    s.binary ?? 'pgbackrest',
    [`--config=${s.configPath}`, `--stanza=${s.stanza}`, ...args],
    {
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
      ...(owner ?? {}),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  )
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString('utf8')
  })
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-8000)
  })
  const code = await new Promise<number | null>((done, fail) => {
    child.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        fail(
          new PlinthError(
            'PLINTH_PITR_FAILED',
            'pgbackrest is not installed on this host (Debian: apt-get install pgbackrest).',
          ),
        )
      else fail(err)
    })
    child.on('close', done)
  })
  if (code !== 0) {
    const message = `${stderr}\n${stdout}`
      .split('\n')
      .filter((l) => /ERROR|WARN/.test(l))
      .slice(-3)
      .join(' | ')
      .replaceAll(s.cipherPass, '***')
      .replaceAll(s.s3?.secretAccessKey ?? s.cipherPass, '***')
      .slice(0, 800)
    throw new PlinthError(
      'PLINTH_PITR_FAILED',
      `pgbackrest ${args[0]} failed (exit ${code ?? 'signal'}): ${message || stderr.trim().slice(-400) || 'no message'}`,
    )
  }
  return { stdout, stderr }
}

/** A step of `setup`: what was checked or done, and how it went. */
export interface SetupStep {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

export interface SetupResult {
  readonly configPath: string
  readonly settings: Record<string, string>
  /** `ALTER SYSTEM` lines to run on the server (when not applied by `--apply`). */
  readonly sql: readonly string[]
  readonly steps: readonly SetupStep[]
  /** The server must restart before archiving works (archive_mode or wal_level changed). */
  readonly restartNeeded: boolean
  /** Archiving works and `pgbackrest check` passed: PITR is ready. */
  readonly ready: boolean
}

export interface PitrBackup {
  readonly label: string
  readonly type: string
  readonly startedAt: string
  readonly finishedAt: string
  readonly sizeBytes: number
  readonly repoBytes: number
  readonly walStart: string | null
  readonly walStop: string | null
  readonly lsnStart: string | null
  readonly lsnStop: string | null
  readonly error: boolean
}

export interface PitrStatus {
  readonly stanza: string
  readonly repository: { readonly ok: boolean; readonly message: string }
  readonly backups: readonly PitrBackup[]
  readonly lastBackup: PitrBackup | null
  readonly lastBackupAgeSeconds: number | null
  readonly archive: {
    readonly min: string | null
    readonly max: string | null
    readonly lastArchivedWal: string | null
    readonly lastArchivedAt: string | null
    readonly lastFailedWal: string | null
    readonly lastFailedAt: string | null
    /** WAL written since the end of the last archived segment (not yet in the repository). */
    readonly pendingBytes: number | null
    /** How old the oldest write not yet archived may be: 0 when nothing is pending. */
    readonly lagSeconds: number | null
  }
}

export interface PitrRestoreOptions {
  /** ISO 8601 time (with zone) to recover to, inclusive. */
  readonly toTime?: string | undefined
  /** LSN (`0/3000028`) to recover to, inclusive. */
  readonly toLsn?: string | undefined
  /** The data directory to restore into (default: the configured one, which must then be stopped and emptied or --force). */
  readonly pgData?: string | undefined
  /** Restore over a non-empty directory (pgBackRest `--delta`). */
  readonly force?: boolean | undefined
}

export interface PitrRestoreResult {
  readonly pgData: string
  readonly type: 'time' | 'lsn'
  readonly target: string
  readonly durationMs: number
}

export interface Pitr {
  readonly settings: PitrSettings
  setup(options: { apply: boolean; databaseUrl?: string | undefined }): Promise<SetupResult>
  backup(type: 'full' | 'diff' | 'incr'): Promise<PitrBackup>
  status(options?: { databaseUrl?: string | undefined }): Promise<PitrStatus>
  verify(): Promise<{ ok: boolean; detail: string }>
  restore(options: PitrRestoreOptions): Promise<PitrRestoreResult>
}

const LSN = /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/

/** Parses `--to-time`: ISO 8601 with a zone, returned in the form PostgreSQL reads. */
export function parseTargetTime(text: string): string {
  const t = text.trim()
  if (!/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$/.test(t))
    throw new PlinthError(
      'PLINTH_PITR_TARGET_INVALID',
      `--to-time "${text}" is not an ISO 8601 time with a zone (e.g. 2026-12-06T03:55:10.55Z).`,
    )
  return t.replace('T', ' ').replace(/Z$/, '+00')
}

/** The first LSN after a WAL segment (`000000010000000000000003` → 0x4000000 with 16 MiB segments). */
function segmentEnd(walFile: string, segmentBytes = 16 * 1024 * 1024): bigint | null {
  if (!/^[0-9A-F]{24}$/.test(walFile)) return null
  const log = BigInt(`0x${walFile.slice(8, 16)}`)
  const seg = BigInt(`0x${walFile.slice(16, 24)}`)
  return (log << 32n) + (seg + 1n) * BigInt(segmentBytes)
}

function lsnValue(lsn: string): bigint {
  const [hi = '0', lo = '0'] = lsn.split('/')
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`)
}

interface InfoBackup {
  label: string
  type: string
  error?: boolean
  timestamp: { start: number; stop: number }
  info: { size: number; repository: { delta?: number; size: number } }
  archive?: { start?: string; stop?: string }
  lsn?: { start?: string; stop?: string }
}

interface InfoStanza {
  name: string
  status: { code: number; message: string }
  archive?: { min?: string; max?: string }[]
  backup?: InfoBackup[]
}

function toBackup(b: InfoBackup): PitrBackup {
  return {
    label: b.label,
    type: b.type,
    startedAt: new Date(b.timestamp.start * 1000).toISOString(),
    finishedAt: new Date(b.timestamp.stop * 1000).toISOString(),
    sizeBytes: b.info.size,
    repoBytes: b.info.repository.size,
    walStart: b.archive?.start ?? null,
    walStop: b.archive?.stop ?? null,
    lsnStart: b.lsn?.start ?? null,
    lsnStop: b.lsn?.stop ?? null,
    error: Boolean(b.error),
  }
}

async function withClient<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'plinth-pitr' })
  client.on('error', () => {})
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end().catch(() => {})
  }
}

export function createPitr(deps: { settings: PitrSettings; logger: Logger; now?: () => Date }): Pitr {
  const s = deps.settings
  const log = deps.logger.child({ component: 'pitr' })
  const now = deps.now ?? (() => new Date())
  const run = (args: readonly string[]) => pgbackrest(s, args)

  async function writeConfig(): Promise<void> {
    const owner = ownerOf(s)
    const local = s.s3 ? ['log', 'lock', 'spool'] : ['repo', 'log', 'lock', 'spool']
    for (const dir of [s.repoPath, ...local.map((d) => join(s.repoPath, d))]) {
      await mkdir(dir, { recursive: true, mode: 0o750 })
      if (owner) await chown(dir, owner.uid, owner.gid)
    }
    await mkdir(dirname(s.configPath), { recursive: true })
    const tmp = `${s.configPath}.tmp-${process.pid}`
    await writeFile(tmp, renderPgbackrestConf(s), { mode: 0o600 })
    if (owner) await chown(tmp, owner.uid, owner.gid)
    await rename(tmp, s.configPath)
  }

  async function info(): Promise<InfoStanza | undefined> {
    const { stdout } = await run(['info', '--output=json'])
    const parsed = JSON.parse(stdout) as InfoStanza[]
    return parsed.find((x) => x.name === s.stanza)
  }

  async function setup(options: { apply: boolean; databaseUrl?: string | undefined }): Promise<SetupResult> {
    const steps: SetupStep[] = []
    const wanted = archiveSettings(s)
    const sql = Object.entries(wanted).map(
      ([k, v]) => `ALTER SYSTEM SET ${k} = '${v.replaceAll("'", "''")}';`,
    )
    await writeConfig()
    steps.push({ name: 'config', ok: true, detail: `wrote ${s.configPath} (mode 0600)` })
    let restartNeeded = false
    let archiving = false
    if (options.databaseUrl) {
      await withClient(options.databaseUrl, async (c) => {
        if (options.apply) {
          for (const line of sql) await c.query(line)
          await c.query('select pg_reload_conf()')
          // The reload is asynchronous: wait (briefly) until this backend sees it.
          for (let i = 0; i < 50; i++) {
            const { rows } = await c.query<{ v: string }>("select current_setting('archive_command') as v")
            if (rows[0]?.v === wanted.archive_command) break
            await new Promise((r) => setTimeout(r, 100))
          }
          steps.push({
            name: 'apply',
            ok: true,
            detail: 'applied the archive settings (ALTER SYSTEM, reloaded)',
          })
        }
        const { rows } = await c.query<{
          name: string
          setting: string
          pending_restart: boolean
          unit: string | null
        }>(
          "select name, setting, pending_restart, unit from pg_settings where name in ('wal_level','archive_mode','archive_command','archive_timeout')",
        )
        const by = new Map(rows.map((r) => [r.name, r]))
        restartNeeded = rows.some((r) => r.pending_restart)
        const live = {
          wal_level: by.get('wal_level')?.setting,
          archive_mode: by.get('archive_mode')?.setting,
          archive_command: by.get('archive_command')?.setting,
          archive_timeout: `${by.get('archive_timeout')?.setting}s`,
        }
        const off = Object.entries(wanted).filter(
          ([k, v]) =>
            !(k === 'wal_level'
              ? ['replica', 'logical'].includes(String(live.wal_level))
              : live[k as keyof typeof live] === v),
        )
        archiving = off.length === 0
        steps.push({
          name: 'server',
          ok: archiving,
          detail: archiving
            ? 'the server archives WAL through pgBackRest'
            : `the server still needs: ${off.map(([k, v]) => `${k}=${v}`).join(', ')}${restartNeeded ? ' (restart the server: archive_mode/wal_level change only at start)' : options.apply ? '' : ' (run with --apply, or the SQL below, as a superuser)'}`,
        })
      })
    }
    if (archiving || !options.databaseUrl) {
      try {
        await run(['stanza-create'])
        steps.push({
          name: 'stanza',
          ok: true,
          detail: `stanza ${s.stanza} exists in ${s.s3 ? `s3://${s.s3.bucket}${s.s3.prefix}` : `${s.repoPath}/repo`}`,
        })
        await run(['check'])
        steps.push({
          name: 'check',
          ok: true,
          detail: 'pgbackrest check: a WAL segment was archived and found in the repository',
        })
      } catch (err) {
        steps.push({ name: 'check', ok: false, detail: (err as Error).message })
      }
    }
    const ready = steps.every((x) => x.ok) && steps.some((x) => x.name === 'check')
    log.info({ stanza: s.stanza, ready, restartNeeded }, 'pitr setup')
    return { configPath: s.configPath, settings: wanted, sql, steps, restartNeeded, ready }
  }

  async function backup(type: 'full' | 'diff' | 'incr'): Promise<PitrBackup> {
    const started = now()
    await run(['backup', `--type=${type}`])
    const stanza = await info()
    const newest = stanza?.backup?.at(-1)
    if (!newest)
      throw new PlinthError(
        'PLINTH_PITR_FAILED',
        'pgbackrest backup reported success but info lists no backup.',
      )
    log.info(
      { stanza: s.stanza, label: newest.label, type, ms: now().getTime() - started.getTime() },
      'pitr backup done',
    )
    return toBackup(newest)
  }

  async function status(options: { databaseUrl?: string | undefined } = {}): Promise<PitrStatus> {
    const stanza = await info()
    const backups = (stanza?.backup ?? []).map(toBackup)
    const lastBackup = backups.filter((b) => !b.error).at(-1) ?? null
    const archive = stanza?.archive?.at(-1)
    let server: Omit<PitrStatus['archive'], 'min' | 'max'> = {
      lastArchivedWal: null,
      lastArchivedAt: null,
      lastFailedWal: null,
      lastFailedAt: null,
      pendingBytes: null,
      lagSeconds: null,
    }
    if (options.databaseUrl) server = await archiverState(options.databaseUrl, now())
    return {
      stanza: s.stanza,
      repository: {
        ok: stanza?.status.code === 0,
        message: stanza?.status.message ?? 'no such stanza (run plinth pitr setup)',
      },
      backups,
      lastBackup,
      lastBackupAgeSeconds: lastBackup
        ? Math.round((now().getTime() - Date.parse(lastBackup.finishedAt)) / 1000)
        : null,
      archive: { min: archive?.min ?? null, max: archive?.max ?? null, ...server },
    }
  }

  async function verify(): Promise<{ ok: boolean; detail: string }> {
    try {
      const { stdout, stderr } = await run(['verify'])
      return {
        ok: true,
        detail: (stdout + stderr).trim().slice(-400) || 'pgbackrest verify: no problem found',
      }
    } catch (err) {
      return { ok: false, detail: (err as Error).message }
    }
  }

  async function restore(options: PitrRestoreOptions): Promise<PitrRestoreResult> {
    if (Boolean(options.toTime) === Boolean(options.toLsn))
      throw new PlinthError(
        'PLINTH_PITR_TARGET_INVALID',
        'A point-in-time restore needs exactly one of --to-time or --to-lsn.',
      )
    let type: 'time' | 'lsn'
    let target: string
    if (options.toTime) {
      type = 'time'
      target = parseTargetTime(options.toTime)
    } else {
      if (!LSN.test(options.toLsn!))
        throw new PlinthError(
          'PLINTH_PITR_TARGET_INVALID',
          `--to-lsn "${options.toLsn}" is not an LSN such as 0/3000028.`,
        )
      type = 'lsn'
      target = options.toLsn!
    }
    const pgData = resolve(options.pgData ?? s.pgData)
    const entries = await readdir(pgData).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[]
      throw err
    })
    if (entries.includes('postmaster.pid'))
      throw new PlinthError(
        'PLINTH_BACKUP_TARGET_NOT_EMPTY',
        `A PostgreSQL server runs on ${pgData}: stop it first.`,
      )
    if (entries.length > 0 && !options.force)
      throw new PlinthError(
        'PLINTH_BACKUP_TARGET_NOT_EMPTY',
        `${pgData} is not empty: restore into an empty directory, or pass --force --yes to overwrite it (pgBackRest --delta).`,
      )
    const owner = ownerOf(s)
    await mkdir(pgData, { recursive: true, mode: 0o700 })
    if (owner) await chown(pgData, owner.uid, owner.gid)
    const started = now()
    await run([
      'restore',
      `--pg1-path=${pgData}`,
      `--type=${type}`,
      `--target=${target}`,
      '--target-action=promote',
      // The restored server must not push its WAL into the repository of the server it came from.
      '--archive-mode=off',
      ...(options.force && entries.length > 0 ? ['--delta'] : []),
    ])
    const durationMs = now().getTime() - started.getTime()
    log.info({ stanza: s.stanza, pgData, type, target, durationMs }, 'pitr restore done')
    return { pgData, type, target, durationMs }
  }

  return Object.freeze({ settings: s, setup, backup, status, verify, restore })
}

/** `pg_stat_archiver` and the current WAL position: what is archived, and how far behind it is. */
export async function archiverState(
  database: string | Pick<pg.Pool, 'query'>,
  at: Date,
): Promise<Omit<PitrStatus['archive'], 'min' | 'max'>> {
  // A URL opens a connection of its own (the CLI); a pool (the metrics scrape) uses one of its own.
  const on = <T>(work: (c: Pick<pg.Pool, 'query'>) => Promise<T>) =>
    typeof database === 'string' ? withClient(database, work) : work(database)
  return on(async (c) => {
    const { rows } = await c.query<{
      last_archived_wal: string | null
      last_archived_time: Date | null
      last_failed_wal: string | null
      last_failed_time: Date | null
      current: string
      segment: string
    }>(
      "select last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, pg_current_wal_lsn()::text as current, current_setting('wal_segment_size') as segment from pg_stat_archiver",
    )
    const r = rows[0]!
    const segBytes = parseSize(r.segment)
    const end = r.last_archived_wal ? segmentEnd(r.last_archived_wal.slice(0, 24), segBytes) : null
    const pending = end === null ? null : lsnValue(r.current) - end
    const pendingBytes = pending === null ? null : Number(pending > 0n ? pending : 0n)
    const lagSeconds =
      pendingBytes === null || !r.last_archived_time
        ? null
        : pendingBytes === 0
          ? 0
          : Math.max(0, (at.getTime() - r.last_archived_time.getTime()) / 1000)
    return {
      lastArchivedWal: r.last_archived_wal,
      lastArchivedAt: r.last_archived_time?.toISOString() ?? null,
      lastFailedWal: r.last_failed_wal,
      lastFailedAt: r.last_failed_time?.toISOString() ?? null,
      pendingBytes,
      lagSeconds,
    }
  })
}

function parseSize(text: string): number {
  const m = /^(\d+)\s*(kB|MB|GB)?$/.exec(text.trim())
  if (!m) return 16 * 1024 * 1024
  const n = Number(m[1])
  return m[2] === 'GB' ? n * 1024 ** 3 : m[2] === 'MB' ? n * 1024 ** 2 : m[2] === 'kB' ? n * 1024 : n
}

/** Reads a written configuration back (tests and `status` show where it is). */
export async function readPgbackrestConf(s: PitrSettings): Promise<string | undefined> {
  return readFile(s.configPath, 'utf8').catch(() => undefined)
}
