import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { sql } from 'kysely'
import type { Logger } from 'pino'
import { MIGRATION_TABLE } from '../../infra/db/migrator.ts'
import { sparePort } from '../../infra/net/spare-port.ts'
import { type ErrorCode, PlinthError } from '../../shared/errors.ts'
import { canariesOf, hasCanaries, writeCanary } from './canaries.ts'
import { connectTo } from './pg-dump-engine.ts'
import { archiverState, ownerOf, type PitrSettings, pgbackrest } from './pitr.ts'
import type { VerificationCheck } from './verification.ts'

/**
 * A scratch PostgreSQL cluster restored from the pgBackRest repository: `pgbackrest restore` into a
 * new directory under `<repository>/scratch`, then the server started on it with `pg_ctl` (as the
 * server's user) on 127.0.0.1 at a spare port, its socket in that directory, archiving off (it must
 * never push into the repository it came from). What the repository holds is proven by starting a
 * server on it and reading it back, not only by `pgbackrest verify`'s checksums.
 *
 * Authentication: `local` trust over the socket (its directory is 0700, the server's user's), `md5`
 * (which accepts SCRAM too) over 127.0.0.1, so the restored roles' own passwords — DATABASE_URL's —
 * log in, as on the server the copy came from.
 */
export interface ScratchCluster {
  readonly dataDir: string
  readonly port: number
  /** The PostgreSQL major version of the copy (`PG_VERSION`). */
  readonly version: string
  /** `databaseUrl` (a URL of the server it came from: its user, password and database) pointed at this copy. */
  urlFor(databaseUrl: string): string
  /** Stops the server (fast) and removes its directory; safe to call twice. */
  drop(): Promise<void>
}

export interface ScratchRestoreTarget {
  /** A pgBackRest backup label (`--set`); default the newest. */
  readonly set?: string | undefined
  /** Recover to this time (PostgreSQL form, see `parseTargetTime`) or LSN; default to the end of the archived WAL. */
  readonly type?: 'time' | 'lsn' | undefined
  readonly target?: string | undefined
  /**
   * Replay no WAL segment after this one (`000000010000000000000009`): the repository as it was when
   * that was the last segment archived — a disaster simulated while the source keeps archiving.
   */
  readonly walUpTo?: string | undefined
}

/** No quote, space or backslash: the path goes into `pg_ctl -o`, which a shell reads. */
const SAFE_PATH = /^[A-Za-z0-9_./@+-]+$/

/** Runs a PostgreSQL server program as the server's user; a non-zero exit is PLINTH_PITR_FAILED. */
async function runAsOwner(s: PitrSettings, command: string, args: readonly string[]): Promise<string> {
  const owner = ownerOf(s)
  const child = spawn(command, [...args], {
    cwd: '/',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
    ...(owner ?? {}),
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-4000)
  })
  child.stderr.on('data', (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-4000)
  })
  const code = await new Promise<number | null>((done, fail) => {
    child.on('error', fail)
    child.on('close', done)
  })
  if (code !== 0)
    throw new PlinthError(
      'PLINTH_PITR_FAILED',
      `${command.split('/').at(-1)} ${args.at(-1)} failed (exit ${code ?? 'signal'}): ${out.trim().split('\n').slice(-3).join(' | ').slice(0, 600)}`,
    )
  return out
}

/** `pg_ctl` of a major version: `PLINTH_PITR_PG_BIN`, else Debian's `/usr/lib/postgresql/<v>/bin`, else PATH. */
export function pgCtlOf(version: string, binDir?: string | undefined): string {
  if (binDir) return join(binDir, 'pg_ctl')
  const debian = `/usr/lib/postgresql/${version}/bin/pg_ctl`
  return existsSync(debian) ? debian : 'pg_ctl'
}

/**
 * Restores the repository (the newest backup, or `target.set`) into a scratch directory and starts
 * a server on it, waiting until it has recovered and promoted (at most `timeoutMs`).
 */
export async function restoreScratchCluster(
  s: PitrSettings,
  target: ScratchRestoreTarget,
  options: { logger: Logger; timeoutMs?: number; pgBin?: string | undefined },
): Promise<ScratchCluster> {
  const log = options.logger.child({ component: 'pitr-scratch' })
  const owner = ownerOf(s)
  const parent = join(s.repoPath, 'scratch')
  const dataDir = join(parent, `restore-${randomBytes(6).toString('hex')}`)
  if (target.walUpTo !== undefined && !/^[0-9A-F]{24}$/.test(target.walUpTo))
    throw new TypeError(`not a WAL segment name: ${target.walUpTo}`)
  if (!SAFE_PATH.test(dataDir) || !SAFE_PATH.test(s.configPath))
    throw new PlinthError(
      'PLINTH_PITR_NOT_CONFIGURED',
      `The scratch directory ${dataDir} has characters pg_ctl cannot take: use a PLINTH_PITR_REPO_PATH of letters, digits and ./_-@+ only.`,
    )
  await mkdir(parent, { recursive: true, mode: 0o750 })
  await mkdir(dataDir, { mode: 0o700 })
  if (owner) {
    await chown(parent, owner.uid, owner.gid)
    await chown(dataDir, owner.uid, owner.gid)
  }
  let started = false
  let version = ''
  const port = await sparePort()
  const drop = async () => {
    if (started) {
      started = false
      await runAsOwner(s, pgCtlOf(version, options.pgBin), ['-D', dataDir, '-m', 'fast', '-w', 'stop']).catch(
        (err: unknown) => log.warn({ err }, 'could not stop the scratch cluster'),
      )
    }
    await rm(dataDir, { recursive: true, force: true })
  }
  try {
    await pgbackrest(s, [
      'restore',
      `--pg1-path=${dataDir}`,
      ...(target.set ? [`--set=${target.set}`] : []),
      ...(target.type && target.target
        ? [`--type=${target.type}`, `--target=${target.target}`, '--target-action=promote']
        : []),
      '--archive-mode=off',
      ...(target.walUpTo
        ? [
            // pgBackRest's own archive-get, refused (end of recovery) past the given segment; the
            // names compare as text (a later timeline's history file sorts before its segments).
            `--recovery-option=restore_command=expr "%f" "<=" "${target.walUpTo}" >/dev/null && pgbackrest --config=${s.configPath} --stanza=${s.stanza} --pg1-path=${dataDir} archive-get %f "%p"`,
          ]
        : []),
    ])
    version = (await readFile(join(dataDir, 'PG_VERSION'), 'utf8')).trim()
    const conf = join(dataDir, 'plinth-scratch.conf')
    const hba = join(dataDir, 'plinth-scratch-hba.conf')
    await writeFile(
      conf,
      [
        '# A scratch copy restored by Plinth (src/modules/backups/pitr-scratch.ts); removed after use.',
        `include_if_exists = '${join(dataDir, 'postgresql.conf')}'`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    )
    await writeFile(hba, 'local all all trust\nhost all all 127.0.0.1/32 md5\n', { mode: 0o600 })
    if (owner) {
      await chown(conf, owner.uid, owner.gid)
      await chown(hba, owner.uid, owner.gid)
    }
    const settings = [
      `config_file=${conf}`,
      `hba_file=${hba}`,
      `port=${port}`,
      'listen_addresses=127.0.0.1',
      `unix_socket_directories=${dataDir}`,
      'archive_mode=off',
      'logging_collector=off',
      // No connections before the end of recovery: then the source's max_connections & co. need not be matched.
      'hot_standby=off',
      'wal_level=replica',
      'external_pid_file=',
    ]
    started = true
    await runAsOwner(s, pgCtlOf(version, options.pgBin), [
      '-D',
      dataDir,
      '-l',
      join(dataDir, 'plinth-scratch.log'),
      '-w',
      '-t',
      String(Math.ceil((options.timeoutMs ?? 300_000) / 1000)),
      '-o',
      settings.map((x) => `-c ${x}`).join(' '),
      'start',
    ])
    // Recovery replays the archived WAL, then promotes: wait until the copy takes writes.
    const local = `postgresql://${s.osUser ?? 'postgres'}@localhost:${port}/postgres?host=${encodeURIComponent(dataDir)}`
    const deadline = Date.now() + (options.timeoutMs ?? 300_000)
    for (;;) {
      const conn = connectTo(local)
      try {
        const { rows } = await sql<{ r: boolean }>`select pg_is_in_recovery() as r`.execute(conn.kysely)
        if (rows[0]?.r === false) break
      } catch (err) {
        if (Date.now() >= deadline) throw err
      } finally {
        await conn.close()
      }
      if (Date.now() >= deadline)
        throw new PlinthError(
          'PLINTH_PITR_FAILED',
          'The scratch cluster did not finish its recovery in time.',
        )
      await new Promise((r) => setTimeout(r, 200))
    }
    log.info({ dataDir, port, version }, 'scratch cluster restored and started')
  } catch (err) {
    const tail = await readFile(join(dataDir, 'plinth-scratch.log'), 'utf8').catch(() => '')
    await drop()
    if (tail && err instanceof PlinthError)
      throw new PlinthError(
        // Raised above by this module: always a built-in code.
        err.code as ErrorCode,
        `${err.message} (server log: ${(
          tail
            .trim()
            .split('\n')
            .filter((l) => /FATAL|PANIC|ERROR/.test(l))
            .slice(-3)
            .join(' | ') || tail.trim().split('\n').slice(-2).join(' | ')
        ).slice(0, 600)})`,
      )
    throw err
  }
  return {
    dataDir,
    port,
    version,
    urlFor(databaseUrl: string) {
      const u = new URL(databaseUrl)
      u.hostname = '127.0.0.1'
      u.port = String(port)
      u.searchParams.delete('host')
      u.searchParams.delete('port')
      return u.toString()
    },
    drop,
  }
}

class SkipCanary extends Error {}

/** Which WAL segment holds `lsn` has reached the repository (pg_stat_archiver, segment names compare as text). */
async function archivedPast(databaseUrl: string, walFile: string): Promise<boolean> {
  const state = await archiverState(databaseUrl, new Date())
  return state.lastArchivedWal !== null && state.lastArchivedWal.slice(0, 24) >= walFile
}

/**
 * Proves the newest pgBackRest backup and the WAL after it by restoring them: with `databaseUrl`
 * (Plinth's database on the archived server), a canary row is written first and its WAL segment
 * switched out and awaited in the archive; then the repository is restored into a scratch cluster
 * to the end of the archived WAL, and the copy must hold that canary, Plinth's migration table and
 * every canary the source had. The scratch cluster is dropped at the end, whatever happened.
 */
export async function verifyByRestore(
  s: PitrSettings,
  options: {
    logger: Logger
    databaseUrl?: string | undefined
    timeoutMs?: number | undefined
    pgBin?: string | undefined
  },
): Promise<{ ok: boolean; checks: VerificationCheck[]; restoreMs: number }> {
  const checks: VerificationCheck[] = []
  let canary: { id: string; at: Date } | undefined
  const url = options.databaseUrl
  if (url) {
    const live = connectTo(url)
    try {
      // Without Plinth's tables (a database not migrated yet) there is no canary, only the restore.
      const id = `pitr-verify-${randomBytes(4).toString('hex')}`
      if (!(await hasCanaries(live.kysely))) throw new SkipCanary()
      const at = await writeCanary(live.kysely, id)
      canary = { id, at }
      const { rows } = await sql<{
        f: string
      }>`select pg_walfile_name(pg_current_wal_lsn()) as f`.execute(live.kysely)
      const walFile = rows[0]!.f
      // Switch the segment out now if allowed (superuser or a GRANT); else archive_timeout does it.
      await sql`select pg_switch_wal()`.execute(live.kysely).catch(() => {})
      const deadline = Date.now() + s.archiveTimeoutSeconds * 2000 + 30_000
      while (!(await archivedPast(url, walFile))) {
        if (Date.now() > deadline)
          throw new PlinthError(
            'PLINTH_PITR_FAILED',
            `WAL segment ${walFile} did not reach the repository within ${Math.round((deadline - at.getTime()) / 1000)} s: check archive_command and pg_stat_archiver.`,
          )
        await new Promise((r) => setTimeout(r, 250))
      }
      checks.push({ name: 'archived', ok: true, detail: `canary ${id}'s WAL segment ${walFile} is archived` })
    } catch (err) {
      if (!(err instanceof SkipCanary))
        checks.push({
          name: 'archived',
          ok: false,
          detail: (err as Error).message,
          code: (err as PlinthError).code,
        })
    } finally {
      await live.close()
    }
  }
  const t0 = performance.now()
  let restoreMs = 0
  try {
    const cluster = await restoreScratchCluster(s, {}, options)
    restoreMs = Math.round(performance.now() - t0)
    try {
      checks.push({
        name: 'restore',
        ok: true,
        detail: `pgbackrest restore to the end of the archived WAL and a PostgreSQL ${cluster.version} server on it: up in ${(restoreMs / 1000).toFixed(1)} s`,
      })
      if (url) {
        const copy = connectTo(cluster.urlFor(url))
        try {
          const { rows } = await sql<{ t: string | null }>`select to_regclass(${MIGRATION_TABLE})::text as t`
            .execute(copy.kysely)
            .catch(() => ({ rows: [] as { t: string | null }[] }))
          checks.push({
            name: 'database',
            ok: true,
            detail: `Plinth's database opens on the copy${rows[0]?.t ? ' with its migration table' : ''}`,
          })
          if (canary) {
            const found = await canariesOf(copy.kysely, canary.id)
            checks.push(
              found > 0
                ? {
                    name: 'canary',
                    ok: true,
                    detail: `canary ${canary.id} (written before the restore) is in the copy`,
                  }
                : {
                    name: 'canary',
                    ok: false,
                    detail: `canary ${canary.id} was archived but is missing from the copy`,
                  },
            )
          }
        } catch (err) {
          checks.push({ name: 'database', ok: false, detail: (err as Error).message })
        } finally {
          await copy.close()
        }
      }
    } finally {
      await cluster.drop()
    }
  } catch (err) {
    restoreMs = Math.round(performance.now() - t0)
    checks.push({
      name: 'restore',
      ok: false,
      detail: (err as Error).message,
      code: (err as PlinthError).code,
    })
  }
  return { ok: checks.every((c) => c.ok), checks, restoreMs }
}
