import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments } from 'yaml'
import { PROMETHEUS_RULE, renderPrometheusRule } from '../scripts/generate-prometheus-rule.ts'
import { configSchema } from '../src/config/config.schema.ts'

// Renders deploy/k8s (base and every overlay) with the real `kubectl kustomize` and validates every
// object against the Kubernetes OpenAPI schemas (kubernetes-models; the Prometheus Operator's CRD
// schemas for ServiceMonitor and PrometheusRule), then checks what Plinth needs of them.

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' })
const skip =
  kubectl.status === 0
    ? false
    : 'kubectl is not installed (Debian package kubectl; .ci/run installs it): manifests not rendered'

interface K8sObject {
  apiVersion: string
  kind: string
  metadata: {
    name: string
    namespace?: string
    labels?: Record<string, string>
    annotations?: Record<string, string>
  }
  spec?: Record<string, unknown>
  data?: Record<string, string>
  [key: string]: unknown
}

function render(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', join(ROOT, dir)], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  })
  const docs = parseAllDocuments(out)
  for (const d of docs) assert.deepEqual(d.errors, [], `${dir}: YAML errors`)
  return docs.map((d) => d.toJS() as K8sObject)
}

/** The kubernetes-models class for an object, by its apiVersion and kind. */
async function modelFor(o: K8sObject): Promise<new (data: unknown) => { validate(): void }> {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion]
  const path =
    group === 'monitoring.coreos.com'
      ? `@kubernetes-models/prometheus-operator/${group}/${version}/${o.kind}`
      : `kubernetes-models/${group ? `${group}/` : ''}${version}/${o.kind}`
  const mod = (await import(path)) as Record<string, new (data: unknown) => { validate(): void }>
  const model = mod[o.kind]
  assert.ok(model, `no schema for ${o.apiVersion} ${o.kind}`)
  return model
}

const byKind = (objects: K8sObject[], kind: string, name?: string) => {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name))
  assert.ok(found.length > 0, `no ${kind} ${name ?? ''}`)
  return found
}
const one = (objects: K8sObject[], kind: string, name?: string) => byKind(objects, kind, name)[0]!

type Container = {
  name: string
  image: string
  args?: string[]
  env?: { name: string; value?: string }[]
  envFrom?: { configMapRef?: { name: string } }[]
  ports?: { name: string; containerPort: number }[]
  readinessProbe?: {
    httpGet: { path: string; port: string }
    periodSeconds: number
    failureThreshold: number
  }
  livenessProbe?: { httpGet: { path: string; port: string } }
  lifecycle?: { preStop?: { exec?: { command: string[] } } }
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> }
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[] } }
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[]
}
type PodSpec = {
  containers: Container[]
  terminationGracePeriodSeconds?: number
  securityContext?: Record<string, unknown>
  automountServiceAccountToken?: boolean
}
const podSpec = (o: K8sObject) => (o.spec as { template: { spec: PodSpec } }).template.spec

const seconds = (duration: string) => {
  const m = /^(\d+)(ms|s|m)$/.exec(duration)
  assert.ok(m, `duration ${duration}`)
  return Number(m[1]) / (m[2] === 'ms' ? 1000 : m[2] === 'm' ? 1 / 60 : 1)
}

const envNames = new Set(Object.values(configSchema).map((k) => k.env))
const secretNames = new Set(
  Object.values(configSchema)
    .filter((k) => k.secret)
    .map((k) => `${k.env}_FILE`),
)

describe('deploy/k8s', { skip }, () => {
  const targets = [
    'deploy/k8s/base',
    'deploy/k8s/overlays/staging',
    'deploy/k8s/overlays/production',
    'deploy/k8s/overlays/canary',
  ]
  const rendered = new Map(skip ? [] : targets.map((t) => [t, render(t)]))

  for (const target of targets) {
    describe(target, () => {
      const objects = () => rendered.get(target)!

      it('renders, and every object is valid against its schema', async () => {
        assert.ok(objects().length >= 12)
        for (const o of objects()) {
          const Model = await modelFor(o)
          assert.doesNotThrow(() => new Model(o).validate(), `${o.kind} ${o.metadata.name}`)
        }
      })

      it('runs the api and worker Deployments and the migration Job from one versioned image', () => {
        const workloads = [
          one(objects(), 'Deployment', 'plinth-api'),
          one(objects(), 'Deployment', 'plinth-worker'),
          one(objects(), 'Job', 'plinth-migrate'),
        ]
        const images = new Set(workloads.map((w) => podSpec(w).containers[0]!.image))
        assert.equal(images.size, 1)
        const [image] = images
        assert.match(image!, /:[\w.-]+$/)
        assert.doesNotMatch(image!, /:latest$/)
        assert.deepEqual(podSpec(workloads[0]!).containers[0]!.args, [
          'node',
          'dist/main.js',
          'start',
          '--role',
          'api',
        ])
        assert.deepEqual(podSpec(workloads[1]!).containers[0]!.args, [
          'node',
          'dist/main.js',
          'start',
          '--role',
          'worker',
        ])
        assert.deepEqual(podSpec(workloads[2]!).containers[0]!.args, [
          'node',
          'dist/main.js',
          'migrate',
          'up',
        ])
      })

      it('names only real config keys, secrets only through *_FILE, and migrates in the Job', () => {
        const config = one(objects(), 'ConfigMap')
        for (const name of Object.keys(config.data ?? {})) {
          assert.ok(envNames.has(name), `ConfigMap key ${name} is not a config key`)
          assert.ok(!secretNames.has(`${name}_FILE`), `secret ${name} in a ConfigMap`)
        }
        assert.equal(config.data?.PLINTH_MIGRATE_ON_START, 'false')
        assert.equal(config.data?.PORT, '3000')
        for (const kind of ['Deployment', 'Job']) {
          for (const w of byKind(objects(), kind)) {
            const c = podSpec(w).containers[0]!
            assert.equal(c.envFrom?.[0]?.configMapRef?.name, config.metadata.name)
            for (const e of c.env ?? []) {
              assert.ok(secretNames.has(e.name), `${w.metadata.name}: ${e.name} is not <SECRET>_FILE`)
              const mount = c.volumeMounts!.find((m) => e.value!.startsWith(`${m.mountPath}/`))
              assert.ok(mount?.readOnly, `${e.name} points outside the read-only secret mount`)
              assert.equal(e.value, `${mount.mountPath}/${e.name.slice(0, -5)}`)
            }
          }
        }
      })

      it('probes /live and /ready, and gives the drain its time before SIGKILL', () => {
        const config = one(objects(), 'ConfigMap').data!
        const drain = seconds(config.PLINTH_SHUTDOWN_DELAY!) + seconds(config.PLINTH_SHUTDOWN_TIMEOUT!)
        for (const name of ['plinth-api', 'plinth-worker']) {
          const spec = podSpec(one(objects(), 'Deployment', name))
          const c = spec.containers[0]!
          assert.equal(c.readinessProbe?.httpGet.path, '/ready')
          assert.equal(c.livenessProbe?.httpGet.path, '/live')
          assert.equal(c.ports?.[0]?.containerPort, Number(config.PORT))
          // A draining pod fails readiness within the shutdown delay.
          assert.ok(
            c.readinessProbe.periodSeconds * c.readinessProbe.failureThreshold <=
              seconds(config.PLINTH_SHUTDOWN_DELAY!),
          )
          const preStop = c.lifecycle?.preStop?.exec?.command
          assert.equal(preStop?.[0], 'sleep')
          const grace = spec.terminationGracePeriodSeconds!
          assert.ok(grace > Number(preStop[1]) + drain, `grace ${grace}s vs preStop + drain ${drain}s`)
        }
      })

      it('runs restricted: non-root, read-only root, no privilege escalation, no capabilities, resources set', () => {
        for (const w of [...byKind(objects(), 'Deployment'), ...byKind(objects(), 'Job')]) {
          const spec = podSpec(w)
          assert.equal(spec.securityContext?.runAsNonRoot, true)
          assert.equal(
            (spec.securityContext?.seccompProfile as { type?: string } | undefined)?.type,
            'RuntimeDefault',
          )
          assert.equal(spec.automountServiceAccountToken, false)
          for (const c of spec.containers) {
            assert.equal(c.securityContext?.readOnlyRootFilesystem, true, w.metadata.name)
            assert.equal(c.securityContext?.allowPrivilegeEscalation, false)
            assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'])
            assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory)
            assert.ok(c.volumeMounts?.some((m) => m.mountPath === '/tmp'))
            assert.ok(c.volumeMounts?.some((m) => m.mountPath === '/app/data'))
          }
        }
      })

      it('autoscales the API from 2 to 10 on CPU and request rate, and keeps one through disruptions', () => {
        const hpa = one(objects(), 'HorizontalPodAutoscaler').spec as {
          scaleTargetRef: { name: string }
          minReplicas: number
          maxReplicas: number
          metrics: { type: string; resource?: { name: string }; pods?: { metric: { name: string } } }[]
        }
        assert.equal(hpa.scaleTargetRef.name, 'plinth-api')
        assert.equal(hpa.minReplicas, 2)
        assert.equal(hpa.maxReplicas, target.endsWith('staging') ? 4 : 10)
        assert.ok(hpa.metrics.some((m) => m.resource?.name === 'cpu'))
        assert.ok(hpa.metrics.some((m) => m.pods?.metric.name === 'http_requests_per_second'))
        // The HPA owns the API's replica count: a fixed one would fight it on every apply.
        assert.equal(one(objects(), 'Deployment', 'plinth-api').spec?.replicas, undefined)
        const pdb = one(objects(), 'PodDisruptionBudget').spec as { minAvailable: number; selector: unknown }
        assert.equal(pdb.minAvailable, 1)
        const api = one(objects(), 'Deployment', 'plinth-api').spec as {
          selector: unknown
          strategy: { rollingUpdate: { maxUnavailable: number } }
        }
        assert.deepEqual(pdb.selector, api.selector)
        assert.equal(api.strategy.rollingUpdate.maxUnavailable, 0)
      })

      it('routes the Service and Ingress to the API pods, and scrapes /api/metrics with the ops token', () => {
        const service = one(objects(), 'Service', 'plinth-api').spec as { selector: Record<string, string> }
        const api = one(objects(), 'Deployment', 'plinth-api')
        const labels = (api.spec as { template: { metadata: { labels: Record<string, string> } } }).template
          .metadata.labels
        for (const [k, v] of Object.entries(service.selector)) assert.equal(labels[k], v)
        const ingress = one(objects(), 'Ingress').spec as {
          tls: unknown[]
          rules: { http: { paths: { backend: { service: { name: string } } }[] } }[]
        }
        assert.ok(ingress.tls.length > 0)
        assert.equal(ingress.rules[0]!.http.paths[0]!.backend.service.name, 'plinth-api')
        const monitor = one(objects(), 'ServiceMonitor').spec as {
          endpoints: { path: string; port: string; authorization: { credentials: { key: string } } }[]
        }
        assert.equal(monitor.endpoints[0]!.path, '/api/metrics')
        assert.equal(monitor.endpoints[0]!.authorization.credentials.key, 'PLINTH_OPS_TOKEN')
        // The scraped series' job is `plinth`, the job the alert rules select.
        const jobLabel = (one(objects(), 'ServiceMonitor').spec as { jobLabel?: string }).jobLabel
        assert.equal(jobLabel, 'app.kubernetes.io/name')
        for (const service of objects().filter((o) => o.kind === 'Service'))
          assert.equal(service.metadata.labels?.[jobLabel], 'plinth', service.metadata.name)
        assert.match(
          readFileSync(join(ROOT, 'deploy/prometheus/rules/plinth-alerts.yml'), 'utf8'),
          /up\{job="plinth"\}/,
        )
        const policy = one(objects(), 'NetworkPolicy').spec as { policyTypes: string[] }
        assert.deepEqual(policy.policyTypes, ['Ingress', 'Egress'])
        const namespaces = new Set(
          objects()
            .filter((o) => o.kind !== 'Namespace')
            .map((o) => o.metadata.namespace),
        )
        assert.equal(namespaces.size, 1, 'every object in one namespace')
      })
    })
  }
})

describe('deploy/k8s/overlays/canary', { skip }, () => {
  const canaryObjects = [
    ['Deployment', 'plinth-api-canary'],
    ['Service', 'plinth-api-canary'],
    ['Ingress', 'plinth-canary'],
  ]
  const isCanary = (o: K8sObject) => canaryObjects.some(([k, n]) => o.kind === k && o.metadata.name === n)
  const canary = skip ? [] : render('deploy/k8s/overlays/canary')
  const production = skip ? [] : render('deploy/k8s/overlays/production')

  it('is production plus the canary Deployment, Service and Ingress, nothing else', () => {
    assert.deepEqual(
      canary.filter((o) => !isCanary(o)),
      production,
    )
    assert.equal(canary.filter(isCanary).length, 3)
  })

  it('sends a weighted share of the same host to the canary pods only, which run the next release', () => {
    const ingress = one(canary, 'Ingress', 'plinth-canary')
    const annotations = ingress.metadata.annotations ?? {}
    assert.equal(annotations['nginx.ingress.kubernetes.io/canary'], 'true')
    const weight = Number(annotations['nginx.ingress.kubernetes.io/canary-weight'])
    assert.ok(weight > 0 && weight < 50, `weight ${weight}`)
    type Rules = { rules: { host: string; http: { paths: { backend: { service: { name: string } } }[] } }[] }
    const stableHost = (one(canary, 'Ingress', 'plinth').spec as Rules).rules[0]!.host
    const rule = (ingress.spec as Rules).rules[0]!
    assert.equal(rule.host, stableHost)
    assert.equal(rule.http.paths[0]!.backend.service.name, 'plinth-api-canary')
    const labelsOf = (name: string) =>
      (one(canary, 'Deployment', name).spec as { template: { metadata: { labels: Record<string, string> } } })
        .template.metadata.labels
    const selects = (service: string, labels: Record<string, string>) =>
      Object.entries(
        (one(canary, 'Service', service).spec as { selector: Record<string, string> }).selector,
      ).every(([k, v]) => labels[k] === v)
    assert.ok(selects('plinth-api-canary', labelsOf('plinth-api-canary')))
    assert.ok(!selects('plinth-api-canary', labelsOf('plinth-api')))
    assert.ok(
      !selects('plinth-api', labelsOf('plinth-api-canary')),
      'the stable Service would also route to the canary',
    )
    const image = (name: string) => podSpec(one(canary, 'Deployment', name)).containers[0]!.image
    assert.notEqual(image('plinth-api-canary'), image('plinth-api'))
  })
})

describe('PrometheusRule from deploy/prometheus/rules', () => {
  const temp = mkdtempSync(join(tmpdir(), 'plinth-rules-'))
  after(() => rmSync(temp, { recursive: true, force: true }))

  it('is generated from the rule files as they are now (run npm run docs:generate)', () => {
    assert.equal(readFileSync(join(ROOT, PROMETHEUS_RULE), 'utf8'), renderPrometheusRule(ROOT))
  })

  it('carries every group of every top-level rule file, in file order, and refuses a file without groups', async () => {
    mkdirSync(join(temp, 'deploy/prometheus/rules/tests'), { recursive: true })
    const rule = (name: string, expr: string) =>
      `groups:\n  - name: ${name}\n    rules:\n      - record: ${name}:x\n        expr: ${expr}\n`
    writeFileSync(join(temp, 'deploy/prometheus/rules/b.yml'), rule('second', 'sum(up)'))
    writeFileSync(join(temp, 'deploy/prometheus/rules/a.yml'), rule('first', 'vector(1)'))
    writeFileSync(join(temp, 'deploy/prometheus/rules/tests/t.yml'), 'rule_files: [../a.yml]\n')
    const [doc] = parseAllDocuments(renderPrometheusRule(temp)).map((d) => d.toJS() as K8sObject)
    const groups = (doc!.spec as { groups: { name: string }[] }).groups
    assert.deepEqual(
      groups.map((g) => g.name),
      ['first', 'second'],
    )
    const Model = await modelFor(doc!)
    new Model(doc).validate()
    writeFileSync(join(temp, 'deploy/prometheus/rules/c.yml'), 'nothing: here\n')
    assert.throws(() => renderPrometheusRule(temp), /c\.yml has no groups/)
  })
})
