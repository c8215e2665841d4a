import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createTestPlinth, type TestPlinth } from 'plinth/testing'
import { notes } from '../src/notes.module.ts'

/** Polls `check` until it returns something other than undefined (jobs run in the background). */
async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('notes', () => {
  // A real Plinth on a fresh database (in memory; a new database on the server of DATABASE_URL when set).
  let t: TestPlinth
  before(async () => {
    t = await createTestPlinth({ modules: [notes] })
  })
  after(() => t?.close())

  it('refuses anonymous callers', async () => {
    const res = await t.inject({ method: 'GET', url: '/api/v1/notes' })
    assert.equal(res.statusCode, 401)
    assert.equal(res.json().code, 'PLINTH_AUTH_REQUIRED')
  })

  it('lets a member write a note and read it back; others do not see it', async () => {
    const alice = await t.createUser({ role: 'member' })
    const bob = await t.createUser({ role: 'member' })
    const created = await alice.inject({
      method: 'POST',
      url: '/api/v1/notes',
      payload: { body: 'three little words' },
    })
    assert.equal(created.statusCode, 201, created.body)
    const mine = await alice.inject({ method: 'GET', url: '/api/v1/notes' })
    assert.deepEqual(
      mine.json().notes.map((n: { body: string }) => n.body),
      ['three little words'],
    )
    const theirs = await bob.inject({ method: 'GET', url: '/api/v1/notes' })
    assert.deepEqual(theirs.json().notes, [])
  })

  it('counts the words in a job', async () => {
    const alice = await t.createUser()
    const created = await alice.inject({
      method: 'POST',
      url: '/api/v1/notes',
      payload: { body: 'one two three four' },
    })
    const id = created.json().id
    const words = await eventually(async () => {
      const list = await alice.inject({ method: 'GET', url: '/api/v1/notes' })
      return list.json().notes.find((n: { id: string }) => n.id === id)?.words ?? undefined
    })
    assert.equal(words, 4)
  })

  it('refuses a viewer who writes, and an empty note', async () => {
    const viewer = await t.createUser({ role: 'viewer' })
    const refused = await viewer.inject({ method: 'POST', url: '/api/v1/notes', payload: { body: 'hello' } })
    assert.equal(refused.statusCode, 403)
    const member = await t.createUser()
    const empty = await member.inject({ method: 'POST', url: '/api/v1/notes', payload: { body: '' } })
    assert.equal(empty.statusCode, 422)
    assert.equal(empty.json().code, 'PLINTH_HTTP_VALIDATION_FAILED')
  })

  it("includes a person's notes in their export", async () => {
    const alice = await t.createUser()
    await alice.inject({ method: 'POST', url: '/api/v1/notes', payload: { body: 'remember the milk' } })
    const res = await alice.inject({ method: 'GET', url: '/api/v1/me/export' })
    assert.equal(res.statusCode, 200, res.body)
    assert.match(res.body, /remember the milk/)
  })
})
