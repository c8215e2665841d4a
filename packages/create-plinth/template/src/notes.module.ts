/**
 * An example module: notes that signed-in people write, under /api/v1/notes. It shows each part
 * of a module — a table (reversible migration), routes with schemas and permissions, a job, the
 * audit log in the same transaction, and personal data (so export and erasure cover the notes).
 */
import { defineJob, defineModule, type Generated, sql, Type } from 'plinth'

/** The module's tables, as Kysely types them: `ctx.db` sees these and nothing else. */
interface Tables {
  notes: {
    id: Generated<string>
    owner_id: string
    body: string
    words: number | null
    created_at: Generated<Date>
  }
}

const Note = Type.Object({
  id: Type.String(),
  body: Type.String(),
  words: Type.Union([Type.Integer(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
})
const NewNote = Type.Object(
  { body: Type.String({ minLength: 1, maxLength: 10_000 }) },
  { additionalProperties: false },
)

export const notes = defineModule<Tables>({
  name: 'notes',
  permissions: {
    'notes:read': { roles: ['admin', 'operator', 'member', 'viewer'], description: 'Read your notes' },
    'notes:write': { roles: ['admin', 'operator', 'member'], description: 'Write notes' },
  },
  migrations: {
    // Application migrations are numbered from 1000 (Plinth's own use 0001–0999).
    '1001-create-notes': {
      async up(db) {
        await db.schema
          .createTable('notes')
          .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
          .addColumn('owner_id', 'uuid', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .addColumn('words', 'integer')
          .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
          .execute()
        await db.schema.createIndex('notes_owner_idx').on('notes').column('owner_id').execute()
      },
      async down(db) {
        await db.schema.dropTable('notes').execute()
      },
    },
  },
  personalData: [
    {
      table: 'notes',
      description: 'Notes you wrote',
      match: { column: 'owner_id', holds: 'user-id' },
      columns: [
        { name: 'owner_id', export: 'value' },
        { name: 'body', export: 'value' },
      ],
      context: ['id', 'words', 'created_at'],
      erase: { action: 'delete' },
    },
  ],
  jobs: (ctx) => [
    defineJob({
      name: 'notes.count-words',
      description: 'Counts the words of a new note',
      payload: Type.Object({ noteId: Type.String() }),
      async handler(job) {
        const note = await ctx.db
          .selectFrom('notes')
          .select('body')
          .where('id', '=', job.payload.noteId)
          .executeTakeFirst()
        if (!note) return { skipped: true }
        const words = note.body.split(/\s+/).filter(Boolean).length
        await ctx.db.updateTable('notes').set({ words }).where('id', '=', job.payload.noteId).execute()
        return { words }
      },
    }),
  ],
  routes(app, ctx) {
    app.get(
      '/',
      {
        config: { permission: 'notes:read' },
        schema: {
          summary: 'Your notes, newest first',
          response: { 200: Type.Object({ notes: Type.Array(Note) }) },
        },
      },
      async (request) => {
        const rows = await ctx.db
          .selectFrom('notes')
          .selectAll()
          .where('owner_id', '=', request.principal!.userId)
          .orderBy('created_at', 'desc')
          .limit(100)
          .execute()
        return {
          notes: rows.map((r) => ({
            id: r.id,
            body: r.body,
            words: r.words,
            createdAt: r.created_at.toISOString(),
          })),
        }
      },
    )
    app.post(
      '/',
      {
        config: { permission: 'notes:write' },
        schema: { summary: 'Write a note', body: NewNote, response: { 201: Note } },
      },
      async (request, reply) => {
        const owner = request.principal!.userId
        // The note, its audit row and its job commit together, or not at all.
        const row = await ctx.db.transaction().execute(async (trx) => {
          const row = await trx
            .insertInto('notes')
            .values({ owner_id: owner, body: request.body.body })
            .returningAll()
            .executeTakeFirstOrThrow()
          await ctx.audit.record(trx, {
            action: 'note:created',
            actor: { type: 'user', id: owner },
            target: { type: 'note', id: row.id },
            outcome: 'success',
            requestId: request.id,
          })
          await ctx.jobs.enqueue('notes.count-words', { noteId: row.id }, { db: trx })
          return row
        })
        return reply
          .code(201)
          .send({ id: row.id, body: row.body, words: row.words, createdAt: row.created_at.toISOString() })
      },
    )
  },
})
