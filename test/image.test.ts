import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { sparePort } from '../src/infra/net/spare-port.ts'
import { waitFor } from './helpers/wait-for.ts'

// Builds the image from deploy/Dockerfile with Podman, exactly as deploy/build-image.sh does for a
// user (with the local stand-in base image where no registry is reachable), then runs it the way
// production does: read-only root file system, unprivileged user, data on a volume.

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CONTAINERS_CONF = join(ROOT, 'deploy/podman/containers.conf')
const env = { ...process.env, CONTAINERS_CONF }
const run = promisify(execFile)
const podman = (...args: string[]) =>
  run('podman', args, { env, maxBuffer: 1 << 26 }).then((r) => r.stdout.trim())

function podmanProblem(): string | undefined {
  const info = spawnSync('podman', ['info', '--format', '{{.Host.OCIRuntime.Name}}'], {
    env,
    encoding: 'utf8',
  })
  if (info.error)
    return 'podman is not installed (Debian: apt-get install podman runc; .ci/run installs them)'
  if (info.status !== 0) return `podman cannot run here: ${info.stderr.trim().split('\n').at(-1)}`
  return undefined
}
const problem = podmanProblem()
if (problem) console.log(`# image tests skipped: ${problem}`)

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string
  license: string
}
const revision = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim()

describe('the Plinth image (Podman)', { skip: problem ?? false, timeout: 30 * 60_000 }, () => {
  const suffix = `${process.pid}-${randomBytes(3).toString('hex')}`
  const container = `plinth-image-test-${suffix}`
  const volume = `plinth-image-test-data-${suffix}`
  const image = `plinth:${pkg.version}`
  let port = 0
  let buildSeconds = 0

  before(
    async () => {
      const previous = await podman('image', 'inspect', '--format', '{{.Id}}', image).catch(() => '')
      const started = performance.now()
      const build = spawnSync('deploy/build-image.sh', [], {
        cwd: ROOT,
        env: { ...env, ENGINE: 'podman', PLINTH_STANDIN_BASE: '1' },
        encoding: 'utf8',
        maxBuffer: 1 << 26,
      })
      buildSeconds = (performance.now() - started) / 1000
      assert.equal(
        build.status,
        0,
        `build failed:\n${build.stdout.slice(-4000)}\n${build.stderr.slice(-4000)}`,
      )
      assert.equal(
        build.stdout.trim().split('\n').at(-1),
        `plinth:${pkg.version} plinth:${revision.slice(0, 12)}`,
      )
      // The image this build replaced, now untagged: remove it so rebuilds do not fill the disk.
      const current = await podman('image', 'inspect', '--format', '{{.Id}}', image)
      if (previous && previous !== current) await podman('rmi', previous).catch(() => undefined)
      port = await sparePort()
    },
    { timeout: 25 * 60_000 },
  )

  after(async () => {
    await podman('rm', '-f', '-t', '0', container).catch(() => undefined)
    await podman('volume', 'rm', '-f', volume).catch(() => undefined)
  })

  it('is tagged with the version and the revision, with OCI labels to match', async () => {
    const size = Number(await podman('image', 'inspect', '--format', '{{.Size}}', image))
    console.log(`# image ${image}: ${(size / 1e6).toFixed(0)} MB, built in ${buildSeconds.toFixed(0)} s`)
    const byRevision = await podman(
      'image',
      'inspect',
      '--format',
      '{{.Id}}',
      `plinth:${revision.slice(0, 12)}`,
    )
    assert.equal(byRevision, await podman('image', 'inspect', '--format', '{{.Id}}', image))
    const labels = JSON.parse(
      await podman('image', 'inspect', '--format', '{{json .Labels}}', image),
    ) as Record<string, string>
    assert.equal(labels['org.opencontainers.image.version'], pkg.version)
    assert.equal(labels['org.opencontainers.image.revision'], revision)
    assert.equal(labels['org.opencontainers.image.licenses'], pkg.license)
    assert.equal(await podman('image', 'inspect', '--format', '{{.User}}', image), 'node')
  })

  it('runs read-only as a non-root user, answers /ready, and reports its version', async () => {
    await podman('volume', 'create', volume)
    await podman(
      'run',
      '--detach',
      '--name',
      container,
      '--network',
      'host',
      '--read-only',
      // Podman's timers for HEALTHCHECK need systemd; the check itself is run below.
      '--no-healthcheck',
      '--volume',
      `${volume}:/app/data`,
      '--env',
      `PORT=${port}`,
      '--env',
      'HOST=127.0.0.1',
      '--env',
      `PLINTH_SECRET_KEY=${randomBytes(48).toString('base64')}`,
      '--env',
      `PLINTH_MASTER_KEY=${randomBytes(32).toString('base64')}`,
      image,
    )
    const ready = await waitFor(
      'the container to answer /ready',
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined)
        return res?.status === 200 ? res.json() : undefined
      },
      { timeoutMs: 120_000 },
    )
    assert.deepEqual(ready, { status: 'ok', failing: [] })

    // The start-up vendor bundle came from the build stage and matches the installed packages.
    const vendor = await podman(
      'exec',
      container,
      'node',
      '--input-type=module',
      '-e',
      "import { readVendorManifest } from '/app/bin/vendor-hooks.js'; const r = readVendorManifest('/app'); console.log(r.skipped ?? [...r.entries.keys()].sort().join(' '))",
    )
    assert.match(vendor, /(^| )kysely( |$)/)
    assert.match(vendor, /(^| )typebox( |$)/)
    assert.match(vendor, /(^| )@opentelemetry\/api( |$)/)

    assert.match(
      await podman('exec', container, 'plinth', '--version'),
      new RegExp(`^plinth ${pkg.version.replaceAll('.', '\\.')} \\(node v24\\.`),
    )
    assert.equal(await podman('exec', container, 'id', '-u'), '1000')
    const metrics = await fetch(`http://127.0.0.1:${port}/api/metrics`).then((r) => r.text())
    assert.match(metrics, new RegExp(`plinth_build_info\\{version="${pkg.version}",revision="${revision}"`))

    // The root file system refuses writes; the data volume takes them.
    await assert.rejects(podman('exec', container, 'touch', '/app/written'), /Read-only file system/)
    await podman('exec', container, 'touch', '/app/data/written')
    // Backups of a PostgreSQL server need these two.
    assert.match(await podman('exec', container, 'pg_dump', '--version'), /^pg_dump \(PostgreSQL\) \d+/)
    assert.match(await podman('exec', container, 'pg_restore', '--version'), /^pg_restore \(PostgreSQL\) \d+/)

    // The image's HEALTHCHECK command, run in the container, passes.
    const health = JSON.parse(
      await podman('image', 'inspect', '--format', '{{json .Config.Healthcheck.Test}}', image),
    ) as string[]
    assert.equal(health[0], 'CMD')
    await podman('exec', container, ...health.slice(1))
  })

  it('drains on stop and exits 0', async () => {
    await podman('stop', '--time', '40', container)
    assert.equal(await podman('inspect', '--format', '{{.State.ExitCode}}', container), '0')
    const logs = await run('podman', ['logs', container], { env }).then((r) => r.stdout + r.stderr)
    assert.match(logs, /"msg":"shutdown started"/)
    assert.match(logs, /"msg":"shutdown complete"/)
  })
})
