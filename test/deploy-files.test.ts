import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join, posix, resolve } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parseEnv } from 'node:util'
import { parseDocument } from 'yaml'
import { configSchema } from '../src/config/config.schema.ts'
import type { ConfigKey } from '../src/config/config-types.ts'
import { ConfigError, loadConfig } from '../src/config/load-config.ts'
import {
  instructions as all,
  dockerignored,
  dockerignorePatterns,
  pairs,
  parseDockerfile,
  splitFlags,
  workdir,
} from './helpers/dockerfile.ts'

// No Docker engine runs the tests, so these check that the deploy files parse and that everything
// they name exists: stages, copied paths, the entry file, config keys.

const root = fileURLToPath(new URL('..', import.meta.url))
const read = (path: string) => readFileSync(join(root, path), 'utf8')
const keysByEnv = new Map<string, ConfigKey<unknown>>(Object.values(configSchema).map((k) => [k.env, k]))
const secretEnvs = [...keysByEnv.values()].filter((k) => k.secret).map((k) => k.env)

/** A real config variable, or `<SECRET>_FILE` for a secret. */
function isConfigName(name: string): boolean {
  return keysByEnv.has(name) || (name.endsWith('_FILE') && secretEnvs.includes(name.slice(0, -5)))
}

describe('deploy/Dockerfile', () => {
  const stages = parseDockerfile(read('deploy/Dockerfile'))
  const final = stages.at(-1)!
  const buildConfig = JSON.parse(read('tsconfig.build.json')) as { compilerOptions: Record<string, unknown> }
  const { outDir, rootDir } = buildConfig.compilerOptions as { outDir: string; rootDir: string }
  const ignore = dockerignorePatterns(read('.dockerignore'))

  it('has the deps, build and prod-deps stages and a slim Node 24 runtime', () => {
    assert.deepEqual(
      stages.map((s) => s.name),
      ['deps', 'build', 'prod-deps', 'runtime'],
    )
    for (const stage of [stages[0]!, stages[2]!, final])
      assert.match(stage.image, /^node:24(\.\d+)*-\w+-slim$/)
    assert.equal(stages[1]!.image, 'deps')
    assert.ok(all(stages[1]!, 'RUN').some((r) => r.args === 'npm run build'))
    assert.ok(all(stages[2]!, 'RUN').some((r) => /npm ci\b.*--omit=dev/.test(r.args)))
  })

  it('runs the final stage as a non-root user, with only production dependencies', () => {
    const user = all(final, 'USER').at(-1)?.args
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `final USER is ${user}`)
    const from = all(final, 'COPY').map((c) => splitFlags(c.args).flags.from)
    assert.ok(from.includes('prod-deps') && !from.includes('deps'), 'node_modules must come from prod-deps')
  })

  it('copies only paths that exist in the repository and survive .dockerignore', () => {
    for (const [index, stage] of stages.entries()) {
      for (const copy of all(stage, 'COPY')) {
        const { flags, rest } = splitFlags(copy.args)
        const paths = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/)
        const sources = paths.slice(0, -1)
        assert.ok(sources.length > 0, `COPY ${copy.args}`)
        if (flags.from !== undefined) {
          const earlier = stages.slice(0, index).map((s) => s.name)
          assert.ok(earlier.includes(flags.from), `COPY --from=${flags.from} names no earlier stage`)
          continue
        }
        for (const source of sources) {
          assert.ok(existsSync(join(root, source)), `COPY source ${source} does not exist`)
          assert.ok(!dockerignored(ignore, posix.normalize(source)), `.dockerignore excludes ${source}`)
        }
      }
    }
  })

  it('starts dist/main.js, which the build stage compiles from src/main.ts', () => {
    assert.equal(outDir, 'dist')
    assert.equal(rootDir, 'src')
    assert.equal(buildConfig.compilerOptions.noEmit, false)
    const cmd = JSON.parse(all(final, 'CMD').at(-1)!.args) as string[]
    assert.deepEqual(cmd, ['node', `${outDir}/main.js`, 'start'])
    const source = join(rootDir, 'main.ts')
    assert.ok(existsSync(join(root, source)), `${source} is missing`)
    assert.match(read(source), /if \(import\.meta\.main\)/, `${source} must run the CLI when it is the entry`)
    const build = stages.find((s) => s.name === 'build')!
    const copied = all(final, 'COPY').find((c) => splitFlags(c.args).flags.from === 'build')
    assert.equal(splitFlags(copied!.args).rest.split(/\s+/)[0], posix.join(workdir(stages, build), outDir))
  })

  it('checks liveness with node fetch on /live, on the exposed port', () => {
    const health = all(final, 'HEALTHCHECK')
    assert.equal(health.length, 1)
    assert.match(health[0]!.args, /\bCMD\b.*fetch\(.*\/live/)
    assert.doesNotMatch(health[0]!.args, /\b(curl|wget)\b/)
    assert.deepEqual(
      all(final, 'EXPOSE').map((e) => e.args),
      [String(configSchema.port.default)],
    )
    assert.deepEqual(
      all(final, 'STOPSIGNAL').map((e) => e.args),
      ['SIGTERM'],
    )
  })

  it('sets production config, a data volume, and OCI labels from the VERSION and REVISION args', () => {
    const env = Object.assign({}, ...all(final, 'ENV').map((e) => pairs(e.args))) as Record<string, string>
    for (const name of Object.keys(env)) assert.ok(isConfigName(name), `ENV ${name} is not a config key`)
    assert.equal(env.PLINTH_ENV, 'production')
    assert.match(env.PLINTH_REVISION ?? '', /^\$\{?REVISION\}?$/)
    assert.deepEqual(JSON.parse(all(final, 'VOLUME')[0]!.args), [env.PLINTH_DATA_DIR])
    assert.ok(all(final, 'RUN').some((r) => r.args.includes(`chown node:node ${env.PLINTH_DATA_DIR}`)))
    const args = all(final, 'ARG').map((a) => a.args.split('=')[0])
    assert.ok(args.includes('VERSION') && args.includes('REVISION'))
    const labels = Object.assign({}, ...all(final, 'LABEL').map((l) => pairs(l.args))) as Record<
      string,
      string
    >
    for (const name of ['title', 'description', 'version', 'revision', 'source', 'licenses']) {
      assert.ok(`org.opencontainers.image.${name}` in labels, `label ${name} is missing`)
    }
    assert.match(labels['org.opencontainers.image.version']!, /^\$\{?VERSION\}?$/)
    assert.match(labels['org.opencontainers.image.revision']!, /^\$\{?REVISION\}?$/)
    const pkg = JSON.parse(read('package.json')) as { license: string }
    assert.equal(labels['org.opencontainers.image.licenses'], pkg.license)
  })

  it('.dockerignore keeps dependencies, local data and env files out of the context', () => {
    for (const path of [
      'node_modules',
      'console/node_modules',
      '.env',
      '.env.production',
      'data',
      '.git',
      'dist',
    ]) {
      assert.ok(dockerignored(ignore, path), `${path} is not ignored`)
    }
    for (const path of ['package.json', 'package-lock.json', 'src/main.ts', 'bin/plinth.js']) {
      assert.ok(!dockerignored(ignore, path), `${path} is ignored`)
    }
  })
})

describe('deploy/compose.yaml', () => {
  const doc = parseDocument(read('deploy/compose.yaml'))
  type Service = Record<string, unknown> & { healthcheck?: { test: string | string[] } }
  const compose = doc.toJS() as { services: Record<string, Service>; volumes?: Record<string, unknown> }
  const { plinth, postgres, redis } = compose.services as Record<string, Service>
  const environment = (s: Service): Record<string, string> =>
    Array.isArray(s.environment)
      ? Object.fromEntries(
          (s.environment as string[]).map((e) => [e.split('=')[0], e.slice(e.indexOf('=') + 1)]),
        )
      : Object.fromEntries(Object.entries((s.environment ?? {}) as object).map(([k, v]) => [k, String(v)]))

  it('parses, with the four services', () => {
    assert.deepEqual(doc.errors, [])
    assert.deepEqual(Object.keys(compose.services).sort(), ['adminer', 'plinth', 'postgres', 'redis'])
    assert.ok((compose.services.adminer!.ports as string[]).some((p) => String(p).endsWith(':8080')))
  })

  it('keeps postgres data in a declared named volume', () => {
    const volumes = (postgres!.volumes as string[]).map((v) => v.split(':'))
    const data = volumes.find(([, target]) => target === '/var/lib/postgresql/data')
    assert.ok(data, 'postgres has no volume on its data directory')
    assert.ok(Object.hasOwn(compose.volumes ?? {}, data[0]!), `volume ${data[0]} is not declared`)
  })

  it('health-checks postgres, redis and plinth, and starts plinth after both are healthy', () => {
    const test = (s: Service) => [s.healthcheck?.test ?? []].flat().join(' ')
    assert.match(test(postgres!), /pg_isready/)
    assert.match(test(redis!), /redis-cli ping/)
    assert.match(test(plinth!), /fetch\(.*\/live/)
    assert.deepEqual(plinth!.depends_on, {
      postgres: { condition: 'service_healthy' },
      redis: { condition: 'service_healthy' },
    })
  })

  it('builds plinth from an existing Dockerfile stage and runs the dev script', () => {
    const build = plinth!.build as { context: string; dockerfile: string; target: string }
    const context = resolve(root, 'deploy', build.context)
    assert.equal(context, resolve(root))
    const stages = parseDockerfile(readFileSync(join(context, build.dockerfile), 'utf8'))
    assert.ok(
      stages.some((s) => s.name === build.target),
      `no stage ${build.target}`,
    )
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts
    assert.equal(plinth!.command, 'npm run dev')
    assert.match(scripts.dev ?? '', /--watch/)
  })

  it('gives plinth only real config keys, valid together, pointing at the compose services', () => {
    const env = environment(plinth!)
    for (const name of Object.keys(env)) assert.ok(isConfigName(name), `${name} is not a config key`)
    const config = loadConfig({ env, envFile: false })
    const pg = environment(postgres!)
    const db = new URL(config.databaseUrl!)
    assert.deepEqual(
      [db.hostname, db.username, db.password, db.pathname],
      ['postgres', pg.POSTGRES_USER, pg.POSTGRES_PASSWORD, `/${pg.POSTGRES_DB}`],
    )
    assert.equal(new URL(config.redisUrl!).hostname, 'redis')
    assert.equal(config.host, '0.0.0.0')
  })
})

describe('environment examples', () => {
  const files = [
    { path: '.env.example', env: 'development', deployed: false },
    { path: 'deploy/env/development.env.example', env: 'development', deployed: false },
    { path: 'deploy/env/staging.env.example', env: 'staging', deployed: true },
    { path: 'deploy/env/production.env.example', env: 'production', deployed: true },
  ] as const

  /** Assignments, both active and commented out (`# NAME=value`). */
  const assignments = (text: string) =>
    text.split('\n').flatMap((line) => {
      const m = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim())
      return m ? [{ name: m[2]!, value: m[3]!.trim(), active: m[1] === undefined }] : []
    })

  /**
   * A valid random value for a secret: 48 characters, or a URL carrying them as its password; the
   * master key is base64 of exactly 32 bytes.
   */
  function secretValue(name: string): string {
    if (name.startsWith('PLINTH_MASTER_KEY')) return randomBytes(32).toString('base64')
    const random = randomBytes(36).toString('base64')
    const protocol = /^URL \((\w+):/.exec(keysByEnv.get(name)!.type)?.[1]
    return protocol ? `${protocol}://plinth:${encodeURIComponent(random)}@secrets.invalid` : random
  }

  for (const file of files) {
    describe(file.path, () => {
      const text = read(file.path)
      const entries = assignments(text)

      it('names only real config keys, and reads as loadConfig reads it', () => {
        for (const { name } of entries) assert.ok(isConfigName(name), `${name} is not a config key`)
        const active = entries.filter((e) => e.active)
        assert.deepEqual(Object.keys(parseEnv(text)).sort(), active.map((e) => e.name).sort())
        assert.ok(active.some((e) => e.name === 'PLINTH_ENV'))
      })

      it('leaves every secret blank', () => {
        for (const { name, value, active } of entries) {
          if (secretEnvs.includes(name) && (active || file.deployed))
            assert.equal(value, '', `${name} has a value`)
        }
        if (file.deployed) {
          for (const name of secretEnvs)
            assert.ok(
              entries.some((e) => e.active && e.name === name),
              `${name} missing`,
            )
        }
      })

      const load = (env: Record<string, string> = {}) =>
        loadConfig({ env, envFile: join(root, file.path), cwd: root })

      if (!file.deployed) {
        it(`loads as ${file.env} as it is`, () => {
          const config = load()
          assert.equal(config.env, file.env)
          assert.equal(config.secretKey, undefined)
        })
        return
      }

      it(`refuses to load as ${file.env} until the blank secrets are supplied`, () => {
        const blank = entries.filter((e) => e.active && e.value === '' && secretEnvs.includes(e.name))
        assert.throws(
          () => load(),
          (err: unknown) => {
            assert.ok(err instanceof ConfigError)
            assert.ok(
              err.problems.some((p) => p.startsWith('PLINTH_SECRET_KEY is required')),
              err.message,
            )
            for (const problem of err.problems) {
              assert.ok(
                blank.some((e) => problem.includes(e.name)),
                `not about a blank secret: ${problem}`,
              )
            }
            return true
          },
        )
        const secrets = Object.fromEntries(blank.map((e) => [e.name, secretValue(e.name)]))
        const config = load(secrets)
        assert.equal(config.env, file.env)
        assert.equal(config.secretKey, secrets.PLINTH_SECRET_KEY)
        assert.equal(config.secretKey!.length, 48)
      })
    })
  }
})
