/**
 * The public module API (src/index.ts, src/testing/index.ts): a module written with
 * `defineModule` runs like a built-in one — routes under /api/v1/<name> behind its own
 * permissions, typed database access, audit rows in its transaction, health checks and metrics —
 * and a module that cannot load stops the boot with a message naming what to change.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createPlinth as createPlinthRoot } from '../src/app/create-plinth.ts'
import { builtinModules } from '../src/app/modules.ts'
import { createPlinth, defineJob, defineModule, type Generated, loadConfig, sql, Type } from '../src/index.ts'
import { createTestPlinth, type TestPlinth } from '../src/testing/index.ts'

interface Tables {
  gadgets: { id: Generated<number>; owner_id: string; label: string }
}

const gadgets = defineModule<Tables>({
  name: 'gadgets',
  permissions: {
    'gadgets:read': { roles: ['admin', 'operator', 'member', 'viewer'] },
    'gadgets:write': { roles: ['admin', 'member'] },
  },
  migrations: {
    '1901-create-gadgets': {
      async up(db) {
        await db.schema
          .createTable('gadgets')
          .addColumn('id', 'serial', (c) => c.primaryKey())
          .addColumn('owner_id', 'uuid', (c) => c.notNull())
          .addColumn('label', 'text', (c) => c.notNull())
          .execute()
      },
      async down(db) {
        await db.schema.dropTable('gadgets').execute()
      },
    },
  },
  healthChecks: (ctx) => [
    {
      name: 'gadgets',
      critical: false,
      async check() {
        await sql`select 1`.execute(ctx.db)
        return { status: 'up' }
      },
    },
  ],
  routes(app, ctx) {
    const created = ctx.metrics.counter('gadgets_created_total', 'Gadgets created.')
    app.post(
      '/',
      {
        config: { permission: 'gadgets:write' },
        schema: {
          body: Type.Object({ label: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
        },
      },
      async (request, reply) => {
        const id = await ctx.db.transaction().execute(async (trx) => {
          const row = await trx
            .insertInto('gadgets')
            .values({ owner_id: request.principal!.userId, label: request.body.label })
            .returning('id')
            .executeTakeFirstOrThrow()
          await ctx.audit.record(trx, {
            action: 'gadget:created',
            actor: { type: 'user', id: request.principal!.userId },
            target: { type: 'gadget', id: String(row.id) },
            outcome: 'success',
          })
          if (request.body.label === 'fail-after-audit') throw new Error('rolled back')
          return row.id
        })
        created.inc()
        return reply.code(201).send({ id })
      },
    )
    app.get('/', { config: { permission: 'gadgets:read' } }, async () => {
      // @ts-expect-error ctx.db knows the module's own tables only: another module's does not compile
      ctx.db.selectFrom('users')
      return { gadgets: await ctx.db.selectFrom('gadgets').select(['id', 'label']).orderBy('id').execute() }
    })
  },
})

describe('a module written with defineModule', () => {
  let t: TestPlinth
  before(async () => {
    t = await createTestPlinth({ modules: [gadgets] })
  })
  after(() => t?.close())

  it('serves its routes under /api/v1/<name> behind the permissions it declares', async () => {
    assert.equal((await t.inject('/api/v1/gadgets')).statusCode, 401)
    const member = await t.createUser({ role: 'member' })
    const viewer = await t.createUser({ role: 'viewer' })
    const operator = await t.createUser({ role: 'operator' })
    const made = await member.inject({ method: 'POST', url: '/api/v1/gadgets', payload: { label: 'lamp' } })
    assert.equal(made.statusCode, 201, made.body)
    for (const who of [viewer, operator]) {
      const refused = await who.inject({ method: 'POST', url: '/api/v1/gadgets', payload: { label: 'x' } })
      assert.equal(refused.statusCode, 403)
      assert.equal(refused.json().code, 'PLINTH_AUTH_FORBIDDEN')
    }
    const list = await viewer.inject('/api/v1/gadgets')
    assert.equal(list.statusCode, 200)
    assert.deepEqual(
      list.json().gadgets.map((g: { label: string }) => g.label),
      ['lamp'],
    )
    const invalid = await member.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      payload: { label: '', x: 1 },
    })
    assert.equal(invalid.statusCode, 422)
    assert.equal(invalid.json().code, 'PLINTH_HTTP_VALIDATION_FAILED')
  })

  it("lets API tokens carry the module's permissions as scopes, and refuses unknown ones", async () => {
    const member = await t.createUser({ role: 'member' })
    const created = await member.inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      payload: { name: 'reader', scopes: ['gadgets:read'] },
    })
    assert.equal(created.statusCode, 201, created.body)
    const token = { authorization: `Bearer ${created.json().token}` }
    assert.equal((await t.inject({ url: '/api/v1/gadgets', headers: token })).statusCode, 200)
    const write = await t.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      headers: token,
      payload: { label: 'x' },
    })
    assert.equal(write.statusCode, 403)
    const typo = await member.inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      payload: { name: 'typo', scopes: ['gadgets:raed'] },
    })
    assert.equal(typo.statusCode, 422, typo.body)
    assert.deepEqual(typo.json().errors, [
      { in: 'body', field: 'scopes', message: 'gadgets:raed is not a permission' },
    ])
    const viewer = await t.createUser({ role: 'viewer' })
    const beyond = await viewer.inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      payload: { name: 'w', scopes: ['gadgets:write'] },
    })
    assert.equal(beyond.statusCode, 403)
  })

  it('writes its audit rows in its own transaction: a rollback leaves neither row', async () => {
    const member = await t.createUser()
    const before = await t.context.db.kysely
      .selectFrom('audit_log')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('action', '=', 'gadget:created')
      .executeTakeFirstOrThrow()
    const failed = await member.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      payload: { label: 'fail-after-audit' },
    })
    assert.equal(failed.statusCode, 500)
    const ok = await member.inject({ method: 'POST', url: '/api/v1/gadgets', payload: { label: 'chair' } })
    assert.equal(ok.statusCode, 201)
    const afterCount = await t.context.db.kysely
      .selectFrom('audit_log')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('action', '=', 'gadget:created')
      .executeTakeFirstOrThrow()
    assert.equal(Number(afterCount.n), Number(before.n) + 1)
    const labels = await sql<{ label: string }>`select label from gadgets`.execute(t.context.db.kysely)
    assert.ok(!labels.rows.some((r) => r.label === 'fail-after-audit'))
  })

  it('adds its health checks and metrics to the instance', async () => {
    const report = await t.plinth.health.report()
    assert.equal(report.components.gadgets?.status, 'up')
    const metrics = await t.plinth.metrics.registry.metrics()
    assert.match(metrics, /^gadgets_created_total [1-9]/m)
  })

  it('migrates with the built-in modules, under the same migrator, and reverts', async () => {
    const applied = async () =>
      (await t.plinth.migrator.status()).some((m) => m.name === '1901-create-gadgets' && m.appliedAt)
    assert.equal(await applied(), true)
    // Down to the newest built-in migration: only the module's own comes off.
    const builtin = Math.max(
      ...(await t.plinth.migrator.status()).map((m) => m.number).filter((n) => n < 1901),
    )
    assert.deepEqual(await t.plinth.migrator.down({ to: builtin }), ['1901-create-gadgets'])
    assert.equal(await applied(), false)
    assert.deepEqual(await t.plinth.migrator.up(), ['1901-create-gadgets'])
  })
})

describe("an application's createPlinth", () => {
  it('loads the built-in modules and then the application’s', async () => {
    const plinth = await createPlinth({
      modules: [gadgets],
      config: loadConfig({
        env: { PLINTH_ENV: 'test', PLINTH_DATA_DIR: 'memory://', PORT: '0', PLINTH_LOG_LEVEL: 'silent' },
        envFile: false,
      }),
    })
    try {
      await plinth.prepare()
      const anonymous = await plinth.app.inject('/api/v1/gadgets')
      assert.equal(anonymous.statusCode, 401)
      const me = await plinth.app.inject('/api/v1/me')
      assert.equal(me.statusCode, 401)
      assert.deepEqual(await plinth.migrator.pendingCount(), 0)
    } finally {
      await plinth.shutdown()
    }
  })
})

describe('createPlinth({ prepareEarly }): the database steps begin while the server is built', () => {
  const config = (dir: string) =>
    loadConfig({
      env: { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dir, PORT: '0', PLINTH_LOG_LEVEL: 'silent' },
      envFile: false,
    })

  it('a route refused while they run still stops the boot, and leaves nothing running', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-early-'))
    try {
      const typo = defineModule({
        name: 'typo',
        routes(app) {
          app.get('/', { config: { permission: 'typo:raed' } }, async () => ({}))
        },
      })
      await assert.rejects(
        createPlinthRoot({ modules: [...builtinModules, typo], config: config(dir), prepareEarly: true }),
        /unknown permission "typo:raed"/,
      )
      // The refused boot let go of the data directory (its database worker and lock): the next
      // boot of the same directory starts, prepares and runs its job engine.
      const plinth = await createPlinthRoot({
        modules: [...builtinModules, gadgets],
        config: config(dir),
        prepareEarly: true,
      })
      try {
        await plinth.prepare()
        assert.equal(plinth.context.jobs.running, true)
        assert.equal((await plinth.app.inject('/ready')).statusCode, 200)
        assert.equal((await plinth.app.inject('/api/v1/gadgets')).statusCode, 401)
        assert.equal(await plinth.migrator.pendingCount(), 0)
      } finally {
        await plinth.shutdown()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('listen() opens the port, then starts the job workers: a job enqueued then runs', async () => {
    let ran: (n: number) => void = () => {}
    const done = new Promise<number>((resolve) => {
      ran = resolve
    })
    const echoes = defineModule({
      name: 'echoes',
      jobs: () => [
        defineJob({
          name: 'echoes.ping',
          payload: Type.Object({ n: Type.Integer() }),
          handler(job) {
            ran(job.payload.n)
          },
        }),
      ],
    })
    const plinth = await createPlinthRoot({
      modules: [...builtinModules, echoes],
      config: loadConfig({
        env: {
          PLINTH_ENV: 'test',
          PLINTH_DATA_DIR: 'memory://',
          PORT: '0',
          HOST: '127.0.0.1',
          PLINTH_LOG_LEVEL: 'silent',
        },
        envFile: false,
      }),
      prepareEarly: true,
    })
    try {
      const address = await plinth.listen()
      assert.equal((await fetch(`${address}/ready`)).status, 200)
      assert.equal(plinth.context.jobs.running, true)
      await plinth.context.jobs.enqueue('echoes.ping', { n: 7 })
      let timer: NodeJS.Timeout | undefined
      const n = await Promise.race([
        done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('the job did not run within 30 s')), 30_000)
        }),
      ]).finally(() => clearTimeout(timer))
      assert.equal(n, 7)
    } finally {
      await plinth.shutdown()
    }
  })
})

describe('a module that cannot load stops the boot', () => {
  const reversible = {
    async up() {},
    async down() {},
  }
  const cases: { what: string; module: Parameters<typeof defineModule>[0]; message: RegExp }[] = [
    {
      what: 'a route that declares no permission',
      module: {
        name: 'open-door',
        routes(app) {
          app.get('/', async () => ({}))
        },
      },
      message: /route GET \/api\/v1\/open-door\/? declares neither config.permission nor config.public/,
    },
    {
      what: 'a route naming a permission nobody declared',
      module: {
        name: 'typo',
        routes(app) {
          app.get('/', { config: { permission: 'typo:raed' } }, async () => ({}))
        },
      },
      message: /unknown permission "typo:raed"/,
    },
    {
      what: "a built-in module's name",
      module: { name: 'accounts' },
      message: /two modules are named "accounts"/,
    },
    {
      what: 'a built-in permission',
      module: { name: 'grabby', permissions: { 'users:manage': { roles: ['member'] } } },
      message: /"users:manage", which is built in/,
    },
    {
      what: 'an irreversible migration',
      module: {
        name: 'one-way',
        migrations: { '1902-one-way': { up: reversible.up } as never },
      },
      message: /migration "1902-one-way" of module "one-way" is irreversible/,
    },
    {
      what: "a built-in migration's number",
      module: { name: 'early', migrations: { '0003-early': reversible } },
      message: /share the number 0003/,
    },
  ]
  for (const c of cases) {
    it(`refuses ${c.what}`, async () => {
      await assert.rejects(createTestPlinth({ modules: [defineModule(c.module)] }), c.message)
    })
  }
})
