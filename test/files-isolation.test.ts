import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { movableClock } from './helpers/clock.ts'
import { upload, uploadOne } from './helpers/files-kit.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('who may see, share and delete a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-iso-'))
  const clock = movableClock()
  let plinth: TestPlinth
  let owner: Session
  let other: Session
  let admin: Session
  let viewer: Session
  let secret: { id: string; url: string }
  let shared: { id: string; url: string }
  const get = (url: string, who?: Session) =>
    plinth.app.inject({ url, headers: who ? bearer(who.token) : {} })
  const auditRows = async (action: string, fileId: string) =>
    (
      await plinth.db.kysely
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', action)
        .where('target_id', '=', fileId)
        .execute()
    ).length

  before(async () => {
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_RATE_LIMIT_UPLOAD: '0',
        PLINTH_FILES_DIR: dir,
        // An operator who accepts SVG and HTML attachments: they are stored, and neutralised when served.
        PLINTH_FILES_ALLOWED_TYPES: 'text/plain,image/png,image/svg+xml,text/html',
      },
      now: clock.now,
    })
    owner = await createUser(plinth, uniqueEmail('owner'), 'member')
    other = await createUser(plinth, uniqueEmail('other'), 'member')
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    viewer = await createUser(plinth, uniqueEmail('viewer'), 'viewer')
    secret = await uploadOne(plinth, owner, 'secret.txt', Buffer.from('private words'))
    shared = await uploadOne(plinth, owner, 'shared.txt', Buffer.from('public words'), {
      visibility: 'public',
    })
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const matrix: { who: string; file: 'private' | 'public'; status: number; cache?: string }[] = [
    { who: 'owner', file: 'private', status: 200, cache: 'private, no-store' },
    { who: 'other', file: 'private', status: 404 },
    { who: 'anonymous', file: 'private', status: 404 },
    { who: 'viewer', file: 'private', status: 404 },
    { who: 'admin', file: 'private', status: 200, cache: 'private, no-store' },
    { who: 'owner', file: 'public', status: 200, cache: 'public, max-age=31536000, immutable' },
    { who: 'other', file: 'public', status: 200, cache: 'public, max-age=31536000, immutable' },
    { who: 'anonymous', file: 'public', status: 200, cache: 'public, max-age=31536000, immutable' },
  ]
  for (const row of matrix) {
    it(`${row.who} downloading a ${row.file} file gets ${row.status}`, async () => {
      const who = { owner, other, admin, viewer, anonymous: undefined }[row.who as 'owner']
      const file = row.file === 'private' ? secret : shared
      const res = await get(file.url, who)
      if (row.status === 404) {
        assertProblem(res, 404, 'PLINTH_FILE_NOT_FOUND')
        return
      }
      assert.equal(res.statusCode, row.status, res.body)
      assert.equal(res.headers['cache-control'], row.cache)
    })
  }

  it('lists only your own files', async () => {
    const mine = (await get('/api/v1/files', owner)).json().files.map((f: { id: string }) => f.id)
    assert.deepEqual(mine.sort(), [secret.id, shared.id].sort())
    assert.deepEqual((await get('/api/v1/files', other)).json().files, [])
    assertProblem(await get('/api/v1/files'), 401, 'PLINTH_AUTH_REQUIRED')
  })

  it("records each administrator's access to someone else's file in the audit log", async () => {
    const before = await auditRows('file:read', secret.id)
    assert.equal((await get(secret.url, admin)).statusCode, 200)
    assert.equal(await auditRows('file:read', secret.id), before + 1)
    await get(secret.url, owner)
    assert.equal(await auditRows('file:read', secret.id), before + 1, "the owner's own reads are not audited")
  })

  it('lets no one else share or delete the file, and viewers upload nothing', async () => {
    const link = await plinth.app.inject({
      method: 'POST',
      url: `${secret.url}/links`,
      headers: bearer(other.token),
      payload: { expiresIn: 600 },
    })
    assertProblem(link, 404, 'PLINTH_FILE_NOT_FOUND')
    const del = await plinth.app.inject({ method: 'DELETE', url: secret.url, headers: bearer(other.token) })
    assertProblem(del, 404, 'PLINTH_FILE_NOT_FOUND')
    const res = await upload(plinth, viewer, [{ name: 'file', filename: 'x.txt', content: Buffer.from('x') }])
    assertProblem(res, 403, 'PLINTH_AUTH_FORBIDDEN')
  })

  it('opens a private file through a signed link until it expires, and never through an altered one', async () => {
    const made = await plinth.app.inject({
      method: 'POST',
      url: `${secret.url}/links`,
      headers: bearer(owner.token),
      payload: { expiresIn: 600 },
    })
    assert.equal(made.statusCode, 201, made.body)
    const { url, expiresAt } = made.json()
    assert.ok(Math.abs(Date.parse(expiresAt) - (clock.now() + 600_000)) < 2000)

    const valid = await get(url)
    assert.equal(valid.statusCode, 200)
    assert.equal(valid.body, 'private words')
    assert.match(String(valid.headers['cache-control']), /^private, max-age=(59\d|600)$/)

    const params = new URL(url, 'http://x').searchParams
    const sig = params.get('sig')!
    const exp = params.get('exp')!
    const flipped = `${sig.slice(0, -2)}${sig.at(-2) === 'A' ? 'B' : 'A'}${sig.at(-1)}`
    assertProblem(await get(`${secret.url}?exp=${exp}&sig=${flipped}`), 403, 'PLINTH_FILE_LINK_INVALID')
    assertProblem(
      await get(`${secret.url}?exp=${Number(exp) + 3600}&sig=${sig}`),
      403,
      'PLINTH_FILE_LINK_INVALID',
    )
    assertProblem(await get(`${shared.url}?exp=${exp}&sig=${sig}`), 403, 'PLINTH_FILE_LINK_INVALID')
    assertProblem(await get(`${secret.url}?exp=${exp}`), 403, 'PLINTH_FILE_LINK_INVALID')

    clock.advance(601_000)
    assertProblem(await get(url), 410, 'PLINTH_FILE_LINK_EXPIRED')
  })

  it('serves SVG and HTML an operator allowed only as sandboxed attachments, never inline', async () => {
    const svg = await uploadOne(
      plinth,
      owner,
      'logo.svg',
      Buffer.from(
        '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>',
      ),
      { visibility: 'public' },
    )
    assert.equal(svg.type, 'image/svg+xml')
    const html = await uploadOne(
      plinth,
      owner,
      'page.png',
      Buffer.from('<!doctype html><script>alert(3)</script>'),
      {
        visibility: 'public',
      },
    )
    assert.equal(html.type, 'text/html', 'the name says png, the bytes say HTML')
    for (const file of [svg, html]) {
      const res = await get(file.url)
      assert.equal(res.statusCode, 200)
      assert.match(String(res.headers['content-disposition']), /^attachment;/)
      assert.match(String(res.headers['content-security-policy']), /^sandbox; default-src 'none'/)
      assert.equal(res.headers['x-content-type-options'], 'nosniff')
    }
    assertProblem(await get(`${svg.url}?w=64`), 400, 'PLINTH_FILE_TRANSFORM_INVALID')
  })

  it("lets an administrator delete someone else's file, audited", async () => {
    const file = await uploadOne(plinth, other, 'doomed.txt', Buffer.from('doomed'))
    const del = await plinth.app.inject({ method: 'DELETE', url: file.url, headers: bearer(admin.token) })
    assert.equal(del.statusCode, 204)
    assert.equal(await auditRows('file:deleted', file.id), 1)
  })
})
