import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import { builtinModules } from '../src/app/modules.ts'
import type { PlinthMigration, PlinthModule } from '../src/core/module.ts'
import { createDatabase, type Database } from '../src/infra/db/create-db.ts'
import { assertMigrations, createMigrator } from '../src/infra/db/migrator.ts'
import { PlinthError } from '../src/shared/errors.ts'
import { testLogger } from './helpers/run-logs.ts'
import { schemaSnapshot } from './helpers/schema-snapshot.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { childBaseEnv } from './helpers/spawn-cli.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'

// biome-ignore lint/suspicious/noExplicitAny: migrations work on untyped schemas
type AnyDb = Kysely<any>
const logger = testLogger()

/** Test-only migrations that exercise what real modules will do: tables, indexes, triggers, functions. */
const extra: Record<string, PlinthMigration> = {
  '9001-create-widgets': {
    async up(db: AnyDb) {
      await db.schema
        .createTable('widgets')
        .addColumn('id', 'bigserial', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute()
      await db.schema.createIndex('widgets_created_at_idx').on('widgets').column('created_at').execute()
    },
    async down(db: AnyDb) {
      await db.schema.dropTable('widgets').execute()
    },
  },
  '9002-widgets-touch-trigger': {
    async up(db: AnyDb) {
      await db.schema.alterTable('widgets').addColumn('updated_at', 'timestamptz').execute()
      await sql`create function widgets_touch() returns trigger language plpgsql as $$
        begin new.updated_at := now(); return new; end $$`.execute(db)
      await sql`create trigger widgets_touch before update on widgets for each row execute function widgets_touch()`.execute(
        db,
      )
    },
    async down(db: AnyDb) {
      await sql`drop trigger widgets_touch on widgets`.execute(db)
      await sql`drop function widgets_touch()`.execute(db)
      await db.schema.alterTable('widgets').dropColumn('updated_at').execute()
    },
  },
}
const allMigrations = Object.assign({}, ...builtinModules.map((m: PlinthModule) => m.migrations ?? {}), extra)
const numbers = Object.keys(allMigrations)
  .map((n) => Number(n.slice(0, 4)))
  .sort((a, b) => a - b)

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`migrations on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let testDb: TestDatabase | undefined
    let db: Database
    before(async () => {
      testDb = backend === 'postgres' ? await createTestDatabase() : undefined
      db = await createDatabase(testConfig(testDb ? { DATABASE_URL: testDb.url } : {}), { logger })
      await db.connect()
    })
    after(async () => {
      await db?.close()
      await testDb?.drop()
    })

    it('reverses every migration exactly: down from each step restores the schema its up started from', async () => {
      const migrator = createMigrator(db, allMigrations, { logger })
      const snapshots = [await schemaSnapshot(db)]
      for (const n of numbers) {
        assert.equal((await migrator.up({ to: n })).length, 1, `up to ${n} applies one migration`)
        snapshots.push(await schemaSnapshot(db))
        assert.notEqual(snapshots.at(-1), snapshots.at(-2), `migration ${n} changes the schema`)
      }
      for (let i = numbers.length - 1; i >= 0; i--) {
        const to = i === 0 ? 0 : numbers[i - 1]!
        assert.equal((await migrator.down({ to })).length, 1)
        assert.equal(await schemaSnapshot(db), snapshots[i], `down to ${to} restores the schema`)
      }
      assert.equal((await migrator.up()).length, numbers.length)
      assert.equal(await schemaSnapshot(db), snapshots.at(-1), 'up → down → up leaves the same schema')
    })

    it('reports status, applied and pending, and counts what is pending', async () => {
      const migrator = createMigrator(db, allMigrations, { logger })
      await migrator.up()
      await migrator.down()
      const status = await migrator.status()
      assert.deepEqual(
        status.map((s) => [s.number, s.appliedAt !== null]),
        numbers.map((n, i) => [n, i < numbers.length - 1]),
      )
      assert.equal(await migrator.pendingCount(), 1)
      assert.deepEqual(
        await migrator.down({ to: numbers.at(-1)! }),
        [],
        'down to a number above the applied ones does nothing',
      )
      assert.deepEqual(await migrator.up({ to: numbers[0]! }), [], 'up to an applied number does nothing')
      await migrator.up()
      assert.equal(await migrator.pendingCount(), 0)
    })

    it('refuses an unknown migration number with a stable code', async () => {
      const migrator = createMigrator(db, allMigrations, { logger })
      await assert.rejects(
        migrator.down({ to: 4242 }),
        (err: unknown) => err instanceof PlinthError && err.code === 'PLINTH_MIGRATION_UNKNOWN',
      )
    })

    it('rolls a failing migration back whole and names it', async () => {
      const failing: Record<string, PlinthMigration> = {
        ...allMigrations,
        '9100-half-done': {
          async up(d: AnyDb) {
            await d.schema.createTable('half_done').addColumn('id', 'integer').execute()
            await sql`select 1/0`.execute(d)
          },
          async down(d: AnyDb) {
            await d.schema.dropTable('half_done').execute()
          },
        },
      }
      const migrator = createMigrator(db, failing, { logger })
      await assert.rejects(migrator.up(), (err: unknown) => {
        assert.ok(err instanceof PlinthError)
        assert.equal(err.code, 'PLINTH_MIGRATION_FAILED')
        assert.match(err.message, /9100-half-done failed and was rolled back: division by zero/)
        return true
      })
      const { rows } = await sql`select to_regclass('public.half_done') as t`.execute(db.kysely)
      assert.deepEqual(rows, [{ t: null }], 'the table created before the failure is gone')
      assert.equal(await createMigrator(db, failing, { logger }).pendingCount(), 1)
    })
  })
}

describe('migration names', () => {
  it('must be NNNN-kebab-case with numbers unique across modules', () => {
    const m = extra['9001-create-widgets']!
    assert.throws(() => assertMigrations({ 'create-things': m }), /must look like 0001-create-things/)
    assert.throws(() => assertMigrations({ '0001_Create': m }), /must look like/)
    assert.throws(() => assertMigrations({ '0007-a': m, '0007-b': m }), /share the number 0007/)
    assert.doesNotThrow(() => assertMigrations({ '0001-a': m, '0002-b-c': m }))
  })
})

describe('concurrent migrations on postgres', { skip: await skipUnlessPostgres() }, () => {
  let testDb: TestDatabase
  before(async () => {
    testDb = await createTestDatabase()
  })
  after(() => testDb?.drop())

  it('applies each migration exactly once when many replicas migrate at the same moment', async () => {
    const slow: Record<string, PlinthMigration> = {
      ...allMigrations,
      '9050-slow': {
        async up(d: AnyDb) {
          await sql`select pg_sleep(0.3)`.execute(d)
        },
        async down() {},
      },
    }
    const dbs = await Promise.all(
      Array.from({ length: 4 }, () => createDatabase(testConfig({ DATABASE_URL: testDb.url }), { logger })),
    )
    try {
      const results = await Promise.all(dbs.map((d) => createMigrator(d, slow, { logger }).up()))
      const applied = results.flat().sort()
      assert.deepEqual(applied, Object.keys(slow).sort(), 'every migration applied once across all replicas')
      const { rows } = await sql<{ name: string }>`select name from plinth_migrations`.execute(dbs[0]!.kysely)
      assert.equal(rows.length, Object.keys(slow).length)
    } finally {
      await Promise.all(dbs.map((d) => d.close()))
    }
  })

  it('lets two `plinth migrate up` processes race on a fresh database without error', async () => {
    const fresh = await createTestDatabase()
    try {
      const run = () =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn(process.execPath, ['src/main.ts', 'migrate', 'up'], {
            env: {
              ...childBaseEnv(),
              PLINTH_ENV: 'test',
              DATABASE_URL: fresh.url,
              PLINTH_LOG_LEVEL: 'silent',
            },
          })
          let out = ''
          child.stdout.on('data', (d) => (out += d))
          child.stderr.on('data', (d) => (out += d))
          child.on('exit', (code) => resolve({ code, out }))
        })
      const [a, b] = await Promise.all([run(), run()])
      assert.equal(a.code, 0, a.out)
      assert.equal(b.code, 0, b.out)
      const builtin = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))
      for (const name of builtin) {
        const count = (a.out + b.out).split(`applied  ${name}`).length - 1
        assert.equal(count, 1, `${name} applied by exactly one process:\n${a.out}\n${b.out}`)
      }
    } finally {
      await fresh.drop()
    }
  })
})
