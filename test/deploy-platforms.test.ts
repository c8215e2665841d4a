import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Ajv } from 'ajv'
import { parse, parseDocument } from 'yaml'
import { commands } from '../src/cli/commands.ts'
import { configSchema } from '../src/config/config.schema.ts'
import { parseDockerfile } from './helpers/dockerfile.ts'

// The platform files a user deploys with — deploy/compose.production.yaml (with its HAProxy and
// Prometheus configs), deploy/coolify/compose.yaml and railway.json — checked against what Plinth
// expects: the port, the health paths, the drain, commands that exist, and environment names that
// exist in the config schema (secrets only as <NAME>_FILE where the platform has files). The
// compose files are validated against the Compose Specification's JSON schema; HAProxy and
// Prometheus check their own configs.

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8')
const keys = Object.values(configSchema)
const envNames = new Set(keys.map((k) => k.env))
const secrets = new Set(keys.filter((k) => k.secret).map((k) => k.env))
const PORT = String(configSchema.port.default)
const seconds = (d: string) => {
  const m = /^(\d+)(s|m)$/.exec(d)
  assert.ok(m, `duration ${d}`)
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1)
}
/** Drain before SIGKILL: PLINTH_SHUTDOWN_DELAY + PLINTH_SHUTDOWN_TIMEOUT (production defaults 5 s + 30 s). */
const DRAIN_SECONDS = 5 + Number(configSchema.shutdownTimeout.default) / 1000

// Its $schema names draft-07 without the trailing '#' Ajv registers it under: drop it (Ajv's default is draft-07).
const { $schema: _draft, ...composeSchema } = JSON.parse(
  read('test/fixtures/compose-spec/compose-spec.json'),
) as Record<string, unknown>
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false })
const validateCompose = ajv.compile(composeSchema)

type Service = {
  image?: string
  build?: { context: string; dockerfile: string }
  command?: string[]
  entrypoint?: string[]
  environment?: Record<string, string | number> | string[]
  secrets?: string[]
  volumes?: string[]
  healthcheck?: { test: string[] | string }
  stop_grace_period?: string
  read_only?: boolean
  user?: string
  profiles?: string[]
  networks?: string[]
  depends_on?: Record<string, { condition: string }> | string[]
}
type Compose = { services: Record<string, Service>; secrets?: Record<string, { file: string }> }

const environment = (s: Service): Record<string, string> =>
  Array.isArray(s.environment)
    ? Object.fromEntries(
        s.environment.map((e) => {
          const at = e.indexOf('=')
          return at < 0 ? [e, ''] : [e.slice(0, at), e.slice(at + 1)]
        }),
      )
    : Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]))
const healthTest = (s: Service) => [s.healthcheck?.test ?? []].flat().join(' ')

function loadCompose(path: string): Compose {
  const doc = parseDocument(read(path), { merge: true })
  assert.deepEqual(doc.errors, [], `${path} does not parse`)
  const compose = doc.toJS({ maxAliasCount: 100 }) as Compose & Record<string, unknown>
  const valid = validateCompose(compose)
  assert.ok(valid, `${path}: ${JSON.stringify(validateCompose.errors, null, 2)}`)
  return compose
}

/** The Plinth services of a compose file: those that run dist/main.js. */
const plinthServices = (c: Compose) =>
  Object.entries(c.services).filter(([, s]) => s.command?.slice(0, 2).join(' ') === 'node dist/main.js')

describe('deploy/compose.production.yaml', () => {
  const compose = loadCompose('deploy/compose.production.yaml')
  const plinth = plinthServices(compose)
  const temp = mkdtempSync(join(tmpdir(), 'plinth-compose-'))
  after(() => rmSync(temp, { recursive: true, force: true }))

  it('runs two API replicas, a canary slot and a worker from the versioned image, never latest', () => {
    const roles = Object.fromEntries(plinth.map(([name, s]) => [name, s.command!.slice(2).join(' ')]))
    assert.deepEqual(roles, {
      'api-1': 'start --role api',
      'api-2': 'start --role api',
      'api-canary': 'start --role api',
      worker: 'start --role worker',
    })
    assert.deepEqual(compose.services['api-canary']!.profiles, ['canary'])
    for (const [name, s] of plinth) {
      assert.match(s.image!, /^plinth:\$\{PLINTH_(CANARY_)?VERSION/, name)
      assert.doesNotMatch(s.image!, /latest/)
    }
    for (const name of ['proxy', 'postgres', 'redis', 'prometheus', 'alertmanager'])
      assert.ok(compose.services[name], name)
  })

  it('passes secrets as files (<NAME>_FILE under /run/secrets), every other variable a real config key', () => {
    for (const [name, s] of plinth) {
      const env = environment(s)
      for (const [key, value] of Object.entries(env)) {
        if (key.endsWith('_FILE')) {
          assert.ok(secrets.has(key.slice(0, -5)), `${name}: ${key} is not <SECRET>_FILE`)
          const secret = /^\/run\/secrets\/(\w+)$/.exec(value)?.[1]
          assert.ok(secret && s.secrets?.includes(secret), `${name}: ${value} is not one of its secrets`)
          assert.ok(compose.secrets?.[secret], `secret ${secret} is not declared`)
        } else {
          assert.ok(envNames.has(key), `${name}: ${key} is not a config key`)
          assert.ok(!secrets.has(key), `${name}: secret ${key} given as a variable`)
        }
      }
      for (const secret of ['PLINTH_SECRET_KEY', 'PLINTH_MASTER_KEY', 'DATABASE_URL', 'REDIS_URL'])
        assert.ok(`${secret}_FILE` in env, `${name}: no ${secret}_FILE`)
      assert.equal(env.PORT, PORT)
      assert.equal(env.PLINTH_ENV, 'production')
    }
    // Every secret file lives in deploy/secrets/, which git ignores; make-secrets.sh writes them.
    const script = read('deploy/make-secrets.sh')
    for (const [name, { file }] of Object.entries(compose.secrets ?? {})) {
      assert.match(file, /^\.\/secrets\//)
      if (name !== 'tls_pem')
        assert.match(script, new RegExp(`\\bput ${name}\\b`), `make-secrets.sh does not make ${name}`)
    }
    assert.match(read('deploy/secrets/.gitignore'), /^\*$/m)
  })

  it('runs Plinth read-only and unprivileged, health-checked on /ready, with the drain before SIGKILL', () => {
    for (const [name, s] of plinth) {
      assert.equal(s.read_only, true, name)
      assert.equal(s.user, '1000:1000')
      assert.match(healthTest(s), /fetch\('http:\/\/127\.0\.0\.1:3000\/ready'\)/)
      assert.ok(
        seconds(s.stop_grace_period!) > DRAIN_SECONDS,
        `${name}: stop_grace_period ${s.stop_grace_period}`,
      )
      assert.deepEqual(s.depends_on, {
        postgres: { condition: 'service_healthy' },
        redis: { condition: 'service_healthy' },
      })
    }
    for (const [name, s] of Object.entries(compose.services))
      assert.ok(s.healthcheck, `${name} has no healthcheck`)
  })

  it('archives PostgreSQL WAL, on the server major version the image can dump', () => {
    const pg = compose.services.postgres!
    const settings = pg.command!.filter((_, i, all) => all[i - 1] === '-c')
    assert.ok(settings.includes('wal_level=replica'))
    assert.ok(settings.includes('archive_mode=on'))
    const archive = settings.find((s) => s.startsWith('archive_command='))!
    const target = /cp %p (\S+)\/%f$/.exec(archive)?.[1]
    assert.ok(
      target && pg.volumes!.some((v) => v.endsWith(`:${target}`)),
      'the archive directory is not a volume',
    )
    assert.ok(pg.entrypoint!.join(' ').includes(`chown postgres:postgres ${target}`))
    assert.match(
      pg.image!,
      /^postgres:15\b/,
      'the image ships PostgreSQL 15 client tools (pg_dump dumps <= its major)',
    )
    assert.equal(environment(pg).POSTGRES_PASSWORD_FILE, '/run/secrets/postgres_password')
  })

  it('HAProxy accepts its config (TLS with a provided certificate, the replicas, the canary weight)', {
    skip: spawnSync('haproxy', ['-v']).error ? 'haproxy is not installed' : false,
  }, () => {
    const proxy = compose.services.proxy!
    const mounts = proxy.volumes!.map((v) => v.split(':'))
    for (const file of ['defaults.cfg', 'haproxy.cfg'])
      assert.ok(
        mounts.some(([src, dst]) => src === `./haproxy/${file}` && dst === `/usr/local/etc/haproxy/${file}`),
      )
    assert.ok(
      proxy
        .command!.join(' ')
        .includes('-f /usr/local/etc/haproxy/defaults.cfg -f /usr/local/etc/haproxy/haproxy.cfg'),
    )
    const cfg = read('deploy/haproxy/haproxy.cfg')
    for (const name of ['api-1', 'api-2'])
      assert.match(cfg, new RegExp(`server ${name} ${name}:${PORT} weight 100`))
    assert.match(cfg, new RegExp(`server canary api-canary:${PORT} weight \\d+`))
    // The real check, with a throwaway certificate where the secret would be mounted.
    const pem = join(temp, 'tls.pem')
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        '/CN=plinth.test',
        '-days',
        '1',
        '-keyout',
        join(temp, 'key.pem'),
        '-out',
        join(temp, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    )
    writeFileSync(
      pem,
      readFileSync(join(temp, 'cert.pem'), 'utf8') + readFileSync(join(temp, 'key.pem'), 'utf8'),
    )
    writeFileSync(
      join(temp, 'haproxy.cfg'),
      cfg
        .replace('/run/secrets/tls_pem', pem)
        .replace('/var/lib/haproxy/admin.sock', join(temp, 'admin.sock')),
    )
    const check = spawnSync(
      'haproxy',
      ['-c', '-f', join(ROOT, 'deploy/haproxy/defaults.cfg'), '-f', join(temp, 'haproxy.cfg')],
      { encoding: 'utf8' },
    )
    assert.equal(check.status, 0, check.stdout + check.stderr)
  })

  it('Prometheus scrapes every replica with the ops token, loads the rules and alerts to Alertmanager', {
    skip: spawnSync('promtool', ['--version']).error ? 'promtool is not installed' : false,
  }, () => {
    const prometheus = compose.services.prometheus!
    assert.ok(prometheus.volumes!.includes('./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro'))
    assert.ok(prometheus.volumes!.includes('./prometheus/rules:/etc/prometheus/rules:ro'))
    assert.deepEqual(prometheus.secrets, ['plinth_ops_token'])
    const alertmanager = compose.services.alertmanager!
    assert.ok(alertmanager.volumes!.includes('./alertmanager:/etc/alertmanager:ro'))
    assert.ok(alertmanager.command!.includes('--config.file=/etc/alertmanager/alertmanager.yml'))
    const config = parse(read('deploy/prometheus/prometheus.yml')) as {
      rule_files: string[]
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] }
      scrape_configs: {
        job_name: string
        metrics_path?: string
        authorization?: { credentials_file: string }
        static_configs: { targets: string[] }[]
      }[]
    }
    assert.deepEqual(config.rule_files, ['/etc/prometheus/rules/*.yml'])
    assert.deepEqual(config.alerting.alertmanagers[0]!.static_configs[0]!.targets, ['alertmanager:9093'])
    const targets = config.scrape_configs
      .filter((j) => j.job_name.startsWith('plinth'))
      .flatMap((j) => {
        assert.equal(j.metrics_path, '/api/metrics')
        assert.equal(j.authorization?.credentials_file, '/run/secrets/plinth_ops_token')
        return j.static_configs.flatMap((s) => s.targets)
      })
    assert.deepEqual(targets.sort(), plinth.map(([name]) => `${name}:${PORT}`).sort())
    // The stable processes are job `plinth`, which the alert rules select (up{job="plinth"}); the
    // canary, whose slot is usually empty, is a job of its own so that it does not page.
    const stable = config.scrape_configs.find((j) => j.job_name === 'plinth')
    assert.deepEqual(stable?.static_configs.flatMap((c) => c.targets).sort(), [
      `api-1:${PORT}`,
      `api-2:${PORT}`,
      `worker:${PORT}`,
    ])
    assert.match(read('deploy/prometheus/rules/plinth-alerts.yml'), /up\{job="plinth"\}/)
    // promtool, with the secret and the rules where the container has them.
    mkdirSync(join(temp, 'rules'), { recursive: true })
    if (existsSync(join(ROOT, 'deploy/prometheus/rules')))
      cpSync(join(ROOT, 'deploy/prometheus/rules'), join(temp, 'rules'), { recursive: true })
    writeFileSync(join(temp, 'token'), 'x'.repeat(64))
    writeFileSync(
      join(temp, 'prometheus.yml'),
      read('deploy/prometheus/prometheus.yml')
        .replaceAll('/run/secrets/plinth_ops_token', join(temp, 'token'))
        .replace('/etc/prometheus/rules/', `${join(temp, 'rules')}/`),
    )
    const check = spawnSync('promtool', ['check', 'config', join(temp, 'prometheus.yml')], {
      encoding: 'utf8',
    })
    assert.equal(check.status, 0, check.stdout + check.stderr)
  })
})

describe('deploy/coolify/compose.yaml', () => {
  const compose = loadCompose('deploy/coolify/compose.yaml')
  const plinth = compose.services.plinth!
  const env = environment(plinth)

  it('builds the image from deploy/Dockerfile and starts what the image starts', () => {
    assert.equal(join(ROOT, 'deploy/coolify', plinth.build!.context), ROOT.replace(/\/$/, ''))
    const stages = parseDockerfile(read(plinth.build!.dockerfile))
    const cmd = stages
      .at(-1)!
      .instructions.filter((i) => i.keyword === 'CMD')
      .at(-1)!.args
    assert.deepEqual(plinth.command, JSON.parse(cmd))
  })

  it("routes Coolify's domain to Plinth's port, and names only real config keys", () => {
    const fqdn = Object.keys(env).filter((k) => k.startsWith('SERVICE_FQDN_'))
    assert.deepEqual(fqdn, [`SERVICE_FQDN_PLINTH_${PORT}`])
    assert.equal(env.PORT, PORT)
    assert.equal(env.PLINTH_PUBLIC_URL, `\${SERVICE_FQDN_PLINTH}`)
    for (const key of Object.keys(env))
      if (!key.startsWith('SERVICE_')) assert.ok(envNames.has(key), `${key} is not a config key`)
    for (const key of ['PLINTH_SECRET_KEY', 'PLINTH_MASTER_KEY', 'DATABASE_URL', 'REDIS_URL'])
      assert.ok(env[key], key)
    // Generated by Coolify, or required from the user: never a literal secret in the file.
    for (const key of Object.keys(env).filter((k) => secrets.has(k)))
      assert.match(env[key]!, /\$\{/, `${key} has a literal value`)
    const pg = environment(compose.services.postgres!)
    assert.equal(
      env.DATABASE_URL,
      `postgres://${pg.POSTGRES_USER}:${pg.POSTGRES_PASSWORD}@postgres:5432/${pg.POSTGRES_DB}`,
    )
  })

  it('health-checks every service, Plinth on /ready, and gives it the drain before SIGKILL', () => {
    assert.match(healthTest(plinth), /fetch\('http:\/\/127\.0\.0\.1:3000\/ready'\)/)
    for (const [name, s] of Object.entries(compose.services))
      assert.ok(s.healthcheck, `${name} has no healthcheck`)
    assert.ok(seconds(plinth.stop_grace_period!) > DRAIN_SECONDS)
    assert.equal(plinth.read_only, true)
    assert.ok(plinth.volumes!.includes('plinth-data:/app/data'))
  })
})

describe('railway.json', () => {
  const railway = JSON.parse(read('railway.json')) as {
    build: { builder: string; dockerfilePath: string }
    deploy: {
      startCommand: string
      preDeployCommand: string[]
      healthcheckPath: string
      numReplicas: number
      drainingSeconds: number
      overlapSeconds: number
    }
  }

  it('builds deploy/Dockerfile and starts what the image starts', () => {
    assert.equal(railway.build.builder, 'DOCKERFILE')
    const stages = parseDockerfile(read(railway.build.dockerfilePath))
    const cmd = JSON.parse(
      stages
        .at(-1)!
        .instructions.filter((i) => i.keyword === 'CMD')
        .at(-1)!.args,
    ) as string[]
    assert.equal(railway.deploy.startCommand, cmd.join(' '))
  })

  it('migrates before the deploy with a real CLI command, checks /ready and drains before stopping the old one', () => {
    assert.deepEqual(railway.deploy.preDeployCommand, ['node dist/main.js migrate up'])
    const migrate = commands.find((c) => c.name === 'migrate') as { actions?: { name: string }[] } | undefined
    assert.ok(migrate, 'no migrate command')
    assert.ok(JSON.stringify(migrate).includes('"up"'), 'migrate has no up action')
    assert.equal(railway.deploy.healthcheckPath, '/ready')
    assert.ok(railway.deploy.numReplicas >= 2)
    assert.ok(railway.deploy.drainingSeconds > DRAIN_SECONDS)
    assert.ok(railway.deploy.overlapSeconds > 0)
  })
})
