import assert from 'node:assert/strict'
import { randomInt, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { sql } from 'kysely'
import { generateTotp } from '../../src/modules/accounts/totp.ts'
import { incidentServiceOf } from '../../src/modules/alerts/alerts.module.ts'
import { bearer, mailedToken, PASSWORD, type Session, uniqueEmail, waitFor } from './accounts.ts'
import type { TestPlinth } from './test-plinth.ts'

/**
 * Environment for privacy suites: no rate limits, no load shedding (the embedded database shares
 * the event loop, and a busy machine would make requests answer 503), a webhook to a closed
 * loopback port allowed.
 */
export const PRIVACY_ENV: Readonly<Record<string, string>> = Object.freeze({
  PLINTH_RATE_LIMIT_AUTH: '0',
  PLINTH_RATE_LIMIT_API: '0',
  PLINTH_MAX_EVENT_LOOP_DELAY: '0',
  PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
  PLINTH_WEBHOOKS_ALLOW_HTTP: 'true',
  PLINTH_WEBHOOKS_RETRY_DELAY: '1h',
})

/** A person with a row in every table the registry declares, and the values that identify them. */
export interface Person {
  readonly email: string
  readonly userId: string
  /** The address and browser every request of theirs came from (unique to them). */
  readonly ip: string
  readonly userAgent: string
  readonly session: Session
  /** An API token of theirs (full scopes of their role). */
  readonly apiToken: string
  readonly totpSecret: string
  readonly recoveryCodes: readonly string[]
  /** Sends a request as this person would: from their address, with their browser. */
  send(options: InjectOptions & { token?: string }): Promise<LightMyRequestResponse>
}

/** Waits until the current TOTP step has at least `ms` left, so that a code stays valid. */
async function clearOfStepEdge(ms = 3000): Promise<void> {
  const into = Date.now() % 30_000
  if (into > 30_000 - ms) await sleep(30_000 - into + 50)
}

function ok(res: LightMyRequestResponse, status: number, what: string) {
  assert.equal(res.statusCode, status, `${what}: ${res.body}`)
  return res.json()
}

/**
 * Builds a person (an administrator, invited by `admin`) who has rows everywhere Plinth keeps
 * something about people: account, sessions, a pending sign-in challenge, an API token, TOTP and
 * recovery codes, a reset link, an invitation to them and one they sent, e-mail, a webhook and a
 * schedule they created, a job whose payload names them, and audit rows (theirs, about them, and
 * an administrator's reads of their account).
 */
export async function buildPerson(plinth: TestPlinth, admin: Session, label = 'person'): Promise<Person> {
  const app = plinth.app
  const email = uniqueEmail(label)
  const ip = `203.0.${randomInt(0, 255)}.${randomInt(1, 254)}`
  const userAgent = `PersonBrowser/1.0 (${randomUUID()})`
  const send = (options: InjectOptions & { token?: string }) => {
    const { token, ...rest } = options
    return app.inject({
      ...rest,
      remoteAddress: ip,
      headers: { 'user-agent': userAgent, ...(token ? bearer(token) : {}), ...(rest.headers ?? {}) },
    })
  }

  // Invited (an invitation to their address), then signed up with it.
  const invited = await app.inject({
    method: 'POST',
    url: '/api/v1/admin/invites',
    headers: bearer(admin.token),
    payload: { email, role: 'admin' },
  })
  ok(invited, 201, 'invite')
  const inviteToken = await mailedToken(plinth, email, 'pli_')
  const signedUp = ok(
    await send({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email, password: PASSWORD, inviteToken },
    }),
    201,
    'signup',
  )
  const me = ok(await send({ url: '/api/v1/me', token: signedUp.token }), 200, 'me')
  const userId = me.user.id as string

  // A second factor with recovery codes (enrolment rotates the session).
  const start = ok(
    await send({ method: 'POST', url: '/api/v1/me/mfa/totp', token: signedUp.token }),
    200,
    'enrol',
  )
  const totpSecret = start.secret as string
  // A step-old code, computed as it is sent: clear of the step's edge just before.
  await clearOfStepEdge()
  const confirmed = ok(
    await send({
      method: 'POST',
      url: '/api/v1/me/mfa/totp/confirm',
      token: signedUp.token,
      payload: { code: generateTotp(totpSecret, Date.now() - 30_000) },
    }),
    200,
    'confirm',
  )
  const session: Session = {
    token: confirmed.token,
    csrfToken: confirmed.csrfToken,
    cookie: `plinth_session=${confirmed.token}`,
    userId,
  }

  // A sign-in left waiting for its second factor, and a failed one with their address.
  const challenged = ok(
    await send({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: PASSWORD } }),
    200,
    'login',
  )
  assert.equal(challenged.mfaRequired, true)
  const refused = await send({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email, password: 'wrong-guess-123' },
  })
  assert.equal(refused.statusCode, 401, refused.body)

  // An API token, used once.
  const token = ok(
    await send({
      method: 'POST',
      url: '/api/v1/me/tokens',
      token: session.token,
      payload: { name: `laptop of ${email}`, scopes: ['self:read', 'self:write', 'webhooks:manage'] },
    }),
    201,
    'token',
  )
  ok(await send({ url: '/api/v1/me', token: token.token }), 200, 'token use')

  // A reset link e-mailed to them.
  ok(await send({ method: 'POST', url: '/api/v1/auth/password-reset', payload: { email } }), 202, 'reset')

  // Things they created that outlive them: an invitation, a webhook, a schedule; and a job naming them.
  ok(
    await send({
      method: 'POST',
      url: '/api/v1/admin/invites',
      token: session.token,
      payload: { email: uniqueEmail(`${label}-invitee`), role: 'viewer' },
    }),
    201,
    'invite sent',
  )
  ok(
    await send({
      method: 'POST',
      url: '/api/v1/webhooks',
      token: session.token,
      payload: { url: 'http://127.0.0.1:9/privacy-hook', eventTypes: ['privacy.*'], description: 'mine' },
    }),
    201,
    'webhook',
  )
  ok(
    await send({
      method: 'POST',
      url: '/api/v1/schedules',
      token: session.token,
      payload: { jobName: 'plinth.heartbeat', cron: '0 0 1 1 *', description: 'yearly' },
    }),
    201,
    'schedule',
  )
  const emitted = ok(
    await send({
      method: 'POST',
      url: '/api/v1/events',
      token: session.token,
      payload: { type: 'privacy.noted', data: { who: userId, email } },
    }),
    202,
    'event',
  )
  assert.ok(emitted.deliveries >= 1, 'the event is queued for their webhook')

  // An incident of the built-in alerting that they acknowledged (its timeline names them).
  const fingerprintLabel = `${label}-${randomUUID()}`
  await incidentServiceOf(plinth.context).open({
    rule: 'privacy-test',
    kind: 'alert',
    severity: 'ticket',
    summary: 'privacy test',
    description: 'privacy test',
    labels: { person: fingerprintLabel },
    value: 1,
  })
  const incident = await plinth.db.kysely
    .selectFrom('incidents')
    .select('id')
    .where('fingerprint', '=', `privacy-test{person=${fingerprintLabel}}`)
    .executeTakeFirstOrThrow()
  ok(
    await send({
      method: 'POST',
      url: `/api/v1/admin/incidents/${incident.id}/acknowledge`,
      token: session.token,
    }),
    200,
    'incident acknowledged',
  )

  // An administrator reads their account and searches for their address.
  ok(await app.inject({ url: `/api/v1/admin/users/${userId}`, headers: bearer(admin.token) }), 200, 'read')
  ok(
    await app.inject({
      url: `/api/v1/admin/users?email=${encodeURIComponent(email)}`,
      headers: bearer(admin.token),
    }),
    200,
    'search',
  )

  // A file of theirs (the row only: these instances keep no file storage, see test/files-*.test.ts).
  await plinth.db.kysely
    .insertInto('files')
    .values({
      id: randomUUID(),
      owner: userId,
      sha256: 'a'.repeat(64),
      size: 3,
      type: 'text/plain',
      name: `notes of ${email}.txt`,
      visibility: 'private',
      purpose: 'attachment',
      metadata: JSON.stringify({ about: email }) as unknown as Record<string, string>,
      width: null,
      height: null,
    })
    .execute()
  // …and one being uploaded (its bytes on their way to the storage).
  await plinth.db.kysely
    .insertInto('file_uploads')
    .values({ owner: userId, sha256: 'b'.repeat(64), size: 5, token: randomUUID() })
    .execute()

  // Mail goes out in the background: the invitation and the reset link.
  await waitFor('two mails to the person', async () => {
    const { rows } = await sql<{ n: string }>`select count(*) as n from mail_outbox
      where lower(to_address) = ${email}`.execute(plinth.db.kysely)
    return Number(rows[0]!.n) >= 2
  })
  // The account they had in the system Plinth replaced (plinth import pocketbase|supabase).
  await sql`insert into migration_records (source, collection, external_id, user_id, data)
    values ('pocketbase', 'users', ${`pb-${userId}`}, ${userId}, ${JSON.stringify({ email, verified: true })}::jsonb)`.execute(
    plinth.db.kysely,
  )
  await plinth.context.audit.seal()

  return {
    email,
    userId,
    ip,
    userAgent,
    session,
    apiToken: token.token,
    totpSecret,
    recoveryCodes: confirmed.recoveryCodes,
    send,
  }
}

/** Every table of the database (public and the job engine's schema) whose rows, as text, contain `needle`. */
export async function tablesContaining(plinth: TestPlinth, needle: string): Promise<Record<string, number>> {
  const db = plinth.db.kysely
  const { rows: tables } = await sql<{ schema: string; name: string }>`
    select table_schema as schema, table_name as name from information_schema.tables
    where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
    order by 1, 2`.execute(db)
  const pattern = `%${needle.replace(/[\\%_]/g, '\\$&')}%`
  const found: Record<string, number> = {}
  for (const t of tables) {
    const { rows } = await sql<{
      n: string
    }>`select count(*) as n from ${sql.table(`${t.schema}.${t.name}`)} as t
      where t::text ilike ${pattern}`.execute(db)
    const n = Number(rows[0]!.n)
    if (n > 0) found[`${t.schema}.${t.name}`] = n
  }
  return found
}
