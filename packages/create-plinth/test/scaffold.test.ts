/**
 * The proof that an application can be built on Plinth as a user would: Plinth is packed with
 * `npm pack` (its `prepack` builds dist/), an application is scaffolded with create-plinth into a
 * temporary directory and installs Plinth from that tarball (its other dependencies from npm's
 * cache, filled by this repository's install, or the registry), then the application's own
 * `npm test` passes and its `npm start` serves /ready and its module's routes.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { waitFor } from '../../../test/helpers/wait-for.ts'
import { scaffold } from '../bin/create-plinth.js'

const run = promisify(execFile)
/**
 * Packing (a tsc build) and installing take about a minute and a half on an idle machine; a loaded
 * CI machine gets more than the run's default per-test timeout.
 */
const SLOW = 360_000
const repo = fileURLToPath(new URL('../../../', import.meta.url))
const bin = fileURLToPath(new URL('../bin/create-plinth.js', import.meta.url))

/**
 * The environment of the application's commands: this Node (24) first on PATH, so that npm's
 * scripts run it, and none of the test run's own Plinth or database variables.
 */
function appEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env))
    if (!/^(PLINTH_|NODE_TEST)|^(DATABASE_URL|NODE_OPTIONS|NODE_V8_COVERAGE)$/.test(k)) env[k] = v
  env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`
  return { ...env, npm_config_update_notifier: 'false', ...extra }
}

describe('create-plinth', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'create-plinth-'))
  const app = join(tmp, 'my-app')
  let tarball = ''
  let server: ChildProcess | undefined

  after(() => {
    if (server?.pid && server.exitCode === null) process.kill(-server.pid, 'SIGKILL')
    rmSync(tmp, { recursive: true, force: true })
  })

  it('refuses a directory that is not empty, and wrong arguments', async () => {
    assert.throws(() => scaffold({ target: repo, name: 'x', plinth: '*' }), /not empty/)
    const noDir = await run(process.execPath, [bin]).catch((e: { code: number; stderr: string }) => e)
    assert.equal((noDir as { code: number }).code, 2)
    assert.match((noDir as { stderr: string }).stderr, /name one directory/)
  })

  describe('an application installed from the packed Plinth', () => {
    before(
      async () => {
        // prepack builds dist/ (tsc), which the tarball carries instead of src/.
        const packed = await run('npm', ['pack', '--pack-destination', tmp, '--json'], {
          cwd: repo,
          env: appEnv(),
          maxBuffer: 64 * 1024 * 1024,
        })
        const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as {
          filename: string
          files: { path: string }[]
        }[]
        assert.ok(info)
        tarball = join(tmp, info.filename)
        const paths = info.files.map((f) => f.path)
        assert.ok(paths.includes('dist/index.js') && paths.includes('dist/index.d.ts'))
        assert.ok(paths.includes('dist/testing/index.js'))
        assert.ok(!paths.some((p) => p.startsWith('src/')), 'the package carries built JavaScript, not src/')

        const created = await run(process.execPath, [bin, app, '--plinth', `file:${tarball}`], {
          env: appEnv(),
        })
        assert.match(created.stdout, /npm install && npm start/)
        for (const file of [
          'plinth.config.ts',
          'main.ts',
          'src/notes.module.ts',
          'test/notes.test.ts',
          '.env.example',
          'README.md',
        ])
          assert.ok(existsSync(join(app, file)), `${file} is written`)
        assert.equal(
          JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')).dependencies.plinth,
          `file:${tarball}`,
        )

        await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], {
          cwd: app,
          env: appEnv(),
          maxBuffer: 64 * 1024 * 1024,
        })
      },
      { timeout: SLOW },
    )

    it("passes the application's own npm test", { timeout: SLOW }, async () => {
      const res = await run('npm', ['test'], {
        cwd: app,
        env: appEnv(),
        maxBuffer: 64 * 1024 * 1024,
      }).catch((e: { stdout: string; stderr: string }) =>
        assert.fail(`npm test failed:\n${e.stdout}\n${e.stderr}`),
      )
      assert.match(res.stdout, /pass 5\b/)
      assert.match(res.stdout, /fail 0\b/)
    })

    it('serves /ready and the example module with npm start', { timeout: SLOW }, async () => {
      let out = ''
      server = spawn('npm', ['start'], {
        cwd: app,
        detached: true,
        env: appEnv({
          PORT: '0',
          HOST: '127.0.0.1',
          PLINTH_DATA_DIR: join(tmp, 'data'),
          PLINTH_LOG_FORMAT: 'json',
          PLINTH_LOG_LEVEL: 'info',
        }),
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      server.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString()
      })
      server.stderr?.on('data', (chunk: Buffer) => {
        out += chunk.toString()
      })
      const address = await waitFor(
        'the "plinth listening" line',
        () => {
          if (server?.exitCode !== null) throw new Error(`npm start exited:\n${out}`)
          const line = out.split('\n').find((l) => l.includes('"plinth listening"'))
          return line ? (JSON.parse(line) as { address: string }).address : undefined
        },
        { timeoutMs: 180_000, intervalMs: 100 },
      )
      const ready = await fetch(`${address}/ready`)
      assert.equal(ready.status, 200, await ready.text())
      const notes = await fetch(`${address}/api/v1/notes`)
      assert.equal(notes.status, 401)
      assert.equal(((await notes.json()) as { code: string }).code, 'PLINTH_AUTH_REQUIRED')
      const docs = (await (await fetch(`${address}/api/openapi.json`)).json()) as { paths: object }
      assert.ok('/api/v1/notes' in docs.paths || '/api/v1/notes/' in docs.paths)

      // SIGTERM to the group (npm and the server it runs): the server shuts down gracefully.
      const exited = new Promise<void>((resolve) => server?.once('exit', () => resolve()))
      process.kill(-server.pid!, 'SIGTERM')
      await exited
      await waitFor('"shutdown complete" in the log', () => out.includes('"shutdown complete"'))
    })
  })
})
