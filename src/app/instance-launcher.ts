import { type ChildProcess, spawn } from 'node:child_process'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import { configEnv } from '../config/load-config.ts'
import type { InstanceDatabase, InstanceLauncher, LaunchedInstance } from '../core/instances.ts'
import { resolveMasterKey } from '../infra/crypto/keyring.ts'
import { sparePort } from '../infra/net/spare-port.ts'

/** The `plinth` command of this installation (bin/plinth.js: Node 24, then src/main.ts or dist/main.js). */
const PLINTH_BIN = fileURLToPath(new URL('../../bin/plinth.js', import.meta.url))
/** After SIGTERM, how long the process has before SIGKILL. */
const STOP_GRACE_MS = 15_000
/** The last bytes of the process's output kept for the report of an early exit. */
const OUTPUT_TAIL = 4000

/** The command that starts a Plinth: `entry` (a script that runs the CLI) with `start`. */
export interface LaunchCommand {
  readonly node: string
  readonly args: readonly string[]
}

/**
 * How this process would start a Plinth like itself: `bin/plinth.js start`, or, when an application
 * registered its modules (`runPlinth`), its own entry script with its Node flags, so that the new
 * Plinth has the application's modules and migrations too.
 */
export function launchCommand(applicationEntry: string | undefined): LaunchCommand {
  if (applicationEntry)
    return { node: process.execPath, args: [...process.execArgv, resolve(applicationEntry), 'start'] }
  return { node: process.execPath, args: [PLINTH_BIN, 'start'] }
}

/** Children still running when this process exits are killed with it (never left serving). */
const running = new Set<ChildProcess>()
let exitHook = false
function track(child: ChildProcess): void {
  running.add(child)
  child.once('exit', () => running.delete(child))
  if (!exitHook) {
    exitHook = true
    process.once('exit', () => {
      for (const c of running) c.kill('SIGKILL')
    })
  }
}

/**
 * The environment of the new Plinth: this process's configuration (every key, so nothing comes from
 * a `.env` file or this process's environment), pointed at `database`, role `api` (no workers, no
 * schedules: it must not back up, prune or send anything), on 127.0.0.1 at `port`, without Redis
 * (it would share this instance's keys) or tracing, no drain delay, and no first administrator made.
 */
export function launchEnv(
  config: PlinthConfig,
  database: InstanceDatabase,
  port: number,
  logger: Pick<Logger, 'warn' | 'info'>,
) {
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    ...(process.env.HOME ? { HOME: process.env.HOME } : {}),
    ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
    LANG: 'C.UTF-8',
    ...configEnv(config),
    ...('databaseUrl' in database
      ? { DATABASE_URL: database.databaseUrl }
      : { DATABASE_URL: '', PLINTH_DATA_DIR: resolve(database.dataDir) }),
    HOST: '127.0.0.1',
    PORT: String(port),
    PLINTH_ROLE: 'api',
    PLINTH_REPLICAS: '1',
    PLINTH_MIGRATE_ON_START: 'true',
    PLINTH_SHUTDOWN_DELAY: '0',
    PLINTH_LOG_FORMAT: 'json',
    PLINTH_LOG_LEVEL: config.logLevel === 'silent' ? 'error' : config.logLevel,
    REDIS_URL: '',
    OTEL_EXPORTER_OTLP_ENDPOINT: '',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '',
    PLINTH_ADMIN_EMAIL: '',
    PLINTH_ADMIN_PASSWORD: '',
    PLINTH_PITR_STANZA: '',
    // The restored copy's data keys are wrapped by this instance's master key: in development and
    // test that may be the key this process generated (in memory, or its data directory's
    // master.key, which the copy's directory lacks), so the new Plinth gets it explicitly.
    ...(config.masterKey === undefined
      ? {
          PLINTH_MASTER_KEY: resolveMasterKey({
            masterKey: undefined,
            dataDir: config.dataDir,
            env: config.env,
            logger,
          }).toString('base64'),
        }
      : {}),
  } satisfies Record<string, string>
}

/** How the new Plinth's database is reached: the server URL, or the socket it opens in the data directory. */
function databaseUrlOf(database: InstanceDatabase): string {
  if ('databaseUrl' in database) return database.databaseUrl
  return `postgresql://postgres@localhost:5432/postgres?host=${encodeURIComponent(resolve(database.dataDir))}`
}

/**
 * `ctx.instances` (core/instances.ts): starts `plinth start` in a process of its own for each
 * `launch`, as a recovering operator would on the restored copy.
 */
export function createInstanceLauncher(deps: {
  config: PlinthConfig
  logger: Logger
  command?: LaunchCommand | undefined
}): InstanceLauncher {
  const log = deps.logger.child({ component: 'instance-launcher' })
  const command = deps.command ?? launchCommand(undefined)

  async function launch(database: InstanceDatabase): Promise<LaunchedInstance> {
    const port = await sparePort()
    const address = `http://127.0.0.1:${port}`
    const child = spawn(command.node, [...command.args], {
      cwd: process.cwd(),
      env: launchEnv(deps.config, database, port, log),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    track(child)
    let output = ''
    const keep = (d: Buffer) => {
      output = (output + d.toString('utf8')).slice(-OUTPUT_TAIL)
    }
    child.stdout?.on('data', keep)
    child.stderr?.on('data', keep)
    const exited = new Promise<{ code: number | null; signal: string | null }>((done) => {
      child.once('exit', (code, signal) => done({ code, signal }))
      child.once('error', (err) => {
        output += `\n${err.message}`
        done({ code: null, signal: null })
      })
    })
    let gone: { code: number | null; signal: string | null } | undefined
    void exited.then((e) => {
      gone = e
    })
    log.info({ pid: child.pid, address }, 'started a Plinth')
    const lastLines = () =>
      output
        .trim()
        .split('\n')
        .slice(-3)
        .map((l) => {
          try {
            const j = JSON.parse(l) as { msg?: string; code?: string }
            return [j.code, j.msg].filter(Boolean).join(': ')
          } catch {
            return l
          }
        })
        .join(' | ')
        .slice(-800)

    async function waitReady(timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
      const deadline = Date.now() + timeoutMs
      let last = 'no answer yet'
      for (;;) {
        if (gone)
          return {
            ok: false,
            detail: `the Plinth exited (${gone.code ?? gone.signal}) before ${address}/ready answered 200: ${lastLines() || 'it printed nothing'}`,
          }
        try {
          const res = await fetch(`${address}/ready`, { signal: AbortSignal.timeout(5_000) })
          await res.body?.cancel()
          if (res.status === 200) return { ok: true, detail: `${address}/ready answered 200` }
          last = `answered ${res.status}`
        } catch (err) {
          last = (err as Error).message
        }
        if (Date.now() >= deadline)
          return { ok: false, detail: `${address}/ready never answered 200 (last: ${last})` }
        await Promise.race([new Promise((r) => setTimeout(r, 100)), exited])
      }
    }

    async function stop(): Promise<void> {
      if (gone) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
      try {
        await exited
      } finally {
        clearTimeout(timer)
      }
      log.info({ pid: child.pid, exit: gone }, 'stopped the Plinth')
    }

    return {
      address,
      databaseUrl: databaseUrlOf(database),
      get pid() {
        return gone ? undefined : child.pid
      },
      waitReady,
      stop,
    }
  }

  return Object.freeze({ launch })
}
