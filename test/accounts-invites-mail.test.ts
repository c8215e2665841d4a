/**
 * Issue #14: an invitation is its e-mail. Where no message can leave (staging or production without
 * SMTP_URL), POST /api/v1/admin/invites answers 503 PLINTH_MAIL_UNAVAILABLE and creates nothing,
 * instead of 201 with a mail that never leaves; creating the account directly still works.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { bearer, createUser, PASSWORD, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { PRODUCTION_ENV } from './helpers/production-env.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('invitations without SMTP in production', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  let admin: Session

  before(async () => {
    plinth = await startTestPlinth({
      backend: 'postgres',
      env: { ...PRODUCTION_ENV, PLINTH_SIGNUP_MODE: 'invite' },
    })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(() => plinth?.close())

  it('knows that no mail can leave', () => {
    assert.equal(plinth.context.mailer.canDeliver, false)
  })

  it('answers 503 PLINTH_MAIL_UNAVAILABLE and creates no invitation', async () => {
    const email = uniqueEmail('invitee')
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/admin/invites',
      headers: bearer(admin.token),
      payload: { email, role: 'member' },
    })
    assertProblem(res, 503, 'PLINTH_MAIL_UNAVAILABLE')
    assert.match(res.json().detail, /no SMTP_URL/)
    const invites = await plinth.db.kysely.selectFrom('invites').select('id').execute()
    assert.equal(invites.length, 0)
    const outbox = await plinth.db.kysely.selectFrom('mail_outbox').select('id').execute()
    assert.equal(outbox.length, 0, 'no message recorded for an invitation that was refused')
  })

  it('still creates accounts directly (POST /api/v1/admin/users with a password)', async () => {
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/admin/users',
      headers: bearer(admin.token),
      payload: { email: uniqueEmail('direct'), role: 'member', password: PASSWORD },
    })
    assert.equal(res.statusCode, 201, res.body)
  })

  it('plinth start warns, once it listens, that no mail can leave and invitations are refused', async () => {
    const env = {
      ...PRODUCTION_ENV,
      PLINTH_SIGNUP_MODE: 'invite',
      DATABASE_URL: plinth.config.databaseUrl!,
      PORT: '0',
      HOST: '127.0.0.1',
      PLINTH_LOG_LEVEL: 'warn',
      PLINTH_LOG_FORMAT: 'json',
    }
    const child = spawn(process.execPath, ['src/main.ts', 'start'], {
      env: { PATH: process.env.PATH ?? '', ...env },
    })
    teeChildLogs(child, env)
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
    try {
      const line = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no warning within 60 s: ${out}`)), 60_000)
        child.stdout.on('data', () => {
          const found = out.split('\n').find((l) => l.includes('no SMTP_URL'))
          if (found) {
            clearTimeout(timer)
            resolve(found)
          }
        })
        child.on('exit', (code) => reject(new Error(`start exited ${code}: ${out}`)))
      })
      const parsed = JSON.parse(line) as { level: string; msg: string }
      assert.equal(parsed.level, 'warn')
      assert.match(parsed.msg, /admin\/invites answers 503 PLINTH_MAIL_UNAVAILABLE/)
      assert.match(parsed.msg, /invite-only/)
    } finally {
      child.kill('SIGTERM')
      await exited
    }
  })
})
