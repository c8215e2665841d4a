import { sql } from 'kysely'
import { Type } from 'typebox'
import type { PlinthModule } from '../../src/core/module.ts'

/** The body the things routes take: unknown fields are refused, not dropped. */
export const ThingBody = Type.Object(
  { name: Type.String({ minLength: 1 }), count: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
)

export const ThingSearch = Type.Object(
  { limit: Type.Integer({ minimum: 1, maximum: 100 }), q: Type.Optional(Type.String({ maxLength: 50 })) },
  { additionalProperties: false },
)

/** What `/test/boom` throws: it must never reach a response body outside development. */
export const SECRET_MESSAGE = 'secret internal detail'
/** The table `/test/bad-sql` names: it must never reach a response body. */
export const SECRET_TABLE = 'no_such_secret_table'

/**
 * A small module for HTTP tests, mounted under `/api/v1/test`: a JSON route backed by a real table
 * (migration 9001), a querystring route, a parametric route that logs, and routes that fail in
 * the ways a real handler does.
 */
export const thingsModule: PlinthModule = {
  name: 'test-things',
  migrations: {
    '9001-test-things': {
      async up(db) {
        await db.schema
          .createTable('test_things')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('count', 'integer', (c) => c.notNull())
          .execute()
      },
      async down(db) {
        await db.schema.dropTable('test_things').execute()
      },
    },
  },
  routes(api, ctx) {
    api.post(
      '/test/things',
      {
        config: { public: true },
        schema: { tags: ['test'], summary: 'Create a thing', body: ThingBody, response: { 201: ThingBody } },
      },
      async (request, reply) => {
        const { name, count } = request.body
        await sql`insert into test_things (name, count) values (${name}, ${count})`.execute(ctx.db.kysely)
        return reply.code(201).send({ name, count })
      },
    )
    api.get(
      '/test/things/search',
      {
        config: { public: true },
        schema: {
          summary: 'Search things',
          querystring: ThingSearch,
          response: { 200: Type.Object({ limit: Type.Integer() }) },
        },
      },
      async (request) => ({ limit: request.query.limit }),
    )
    api.get(
      '/test/things/:name',
      {
        config: { public: true },
        schema: { summary: 'One thing', params: Type.Object({ name: Type.String() }) },
      },
      async (request) => {
        request.log.info({ thing: request.params.name }, 'thing looked up')
        return { name: request.params.name }
      },
    )
    api.get('/test/boom', { config: { public: true }, schema: { summary: 'Throws' } }, async () => {
      throw new Error(SECRET_MESSAGE)
    })
    api.get('/test/bad-sql', { config: { public: true }, schema: { summary: 'Bad SQL' } }, async () => {
      await sql`select secret_column from ${sql.raw(SECRET_TABLE)}`.execute(ctx.db.kysely)
      return {}
    })
    api.get('/test/slow-sql', { config: { public: true }, schema: { summary: 'Slow SQL' } }, async () => {
      await sql`select pg_sleep(10)`.execute(ctx.db.kysely)
      return {}
    })
  },
}
