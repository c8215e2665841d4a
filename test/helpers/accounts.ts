import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import type { LightMyRequestResponse } from 'fastify'
import type { Role } from '../../src/core/permissions.ts'
import type { SecurityEvent } from '../../src/core/security-events.ts'
import type { PlinthApp } from '../../src/http/create-server.ts'
import { createUserDirect } from '../../src/modules/accounts/bootstrap-admin.ts'
import { generateTotp } from '../../src/modules/accounts/totp.ts'
import type { TestPlinth } from './test-plinth.ts'

/** A password the policy accepts (long enough, not on the common list). */
export const PASSWORD = 'violet-kettle-harbour-42'
export const OTHER_PASSWORD = 'amber-lantern-quarry-77'

/** Rate limits off: these suites send many sign-ins and refused credentials from one address. */
export const NO_RATE_LIMITS: Readonly<Record<string, string>> = Object.freeze({
  PLINTH_RATE_LIMIT_AUTH: '0',
  PLINTH_RATE_LIMIT_API: '0',
})

/** A signed-in session as a client holds it. */
export interface Session {
  readonly token: string
  readonly csrfToken: string
  /** The Cookie header a browser would send. */
  readonly cookie: string
  readonly userId: string
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
export const cookieFor = (token: string) => `plinth_session=${token}`
/** Headers of a cookie-authenticated change: the cookie and the session's CSRF token. */
export const viaCookie = (s: Session) => ({ cookie: s.cookie, 'x-csrf-token': s.csrfToken })

let counter = 0
/** A fresh address per call, so tests in one database never collide. */
export function uniqueEmail(label = 'user'): string {
  counter++
  return `${label}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}@example.com`
}

/** The Set-Cookie line for plinth_session in a response (undefined when it sets none). */
export function sessionCookieOf(res: LightMyRequestResponse): string | undefined {
  const header = res.headers['set-cookie']
  const all = header === undefined ? [] : [header].flat()
  return all.find((c) => c.startsWith('plinth_session='))
}

async function toSession(app: PlinthApp, body: { token: string; csrfToken: string }): Promise<Session> {
  const me = await app.inject({ url: '/api/v1/me', headers: bearer(body.token) })
  assert.equal(me.statusCode, 200, me.body)
  return {
    token: body.token,
    csrfToken: body.csrfToken,
    cookie: cookieFor(body.token),
    userId: me.json().user.id,
  }
}

export function signUpResponse(
  app: PlinthApp,
  email: string,
  password = PASSWORD,
  extra: Record<string, unknown> = {},
): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password, ...extra } })
}

/** Signs up (open mode, or with `extra.inviteToken`) and returns the new session. */
export async function signUp(
  app: PlinthApp,
  email: string,
  password = PASSWORD,
  extra: Record<string, unknown> = {},
): Promise<Session> {
  const res = await signUpResponse(app, email, password, extra)
  assert.equal(res.statusCode, 201, res.body)
  return toSession(app, res.json())
}

export function loginResponse(
  app: PlinthApp,
  email: string,
  password = PASSWORD,
  headers: Record<string, string> = {},
): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password }, headers })
}

/** Signs in without a second factor and returns the session. */
export async function login(app: PlinthApp, email: string, password = PASSWORD): Promise<Session> {
  const res = await loginResponse(app, email, password)
  assert.equal(res.statusCode, 200, res.body)
  const body = res.json()
  assert.equal(body.mfaRequired, false, 'expected a session, got an MFA challenge')
  return toSession(app, body)
}

/** A user created directly (as the CLI does), then signed in over HTTP. */
export async function createUser(plinth: TestPlinth, email: string, role: Role): Promise<Session> {
  await createUserDirect(plinth.context, { email, password: PASSWORD, role })
  return login(plinth.app, email)
}

/**
 * Invites `email` as `admin` through the API and returns the invitation token, read from the
 * e-mail in the outbox (without SMTP_URL, test instances record mail there and send none).
 */
export async function invite(
  plinth: TestPlinth,
  admin: Session,
  email: string,
  role: Role = 'member',
): Promise<string> {
  const res = await plinth.app.inject({
    method: 'POST',
    url: '/api/v1/admin/invites',
    headers: bearer(admin.token),
    payload: { email, role },
  })
  assert.equal(res.statusCode, 201, res.body)
  return mailedToken(plinth, email, 'pli_')
}

/** The `prefix…` token in the latest mail recorded for `to` (mail goes out in the background: polled). */
export function mailedToken(plinth: TestPlinth, to: string, prefix: string): Promise<string> {
  const pattern = new RegExp(`${prefix}[A-Za-z0-9_-]{43}`)
  return waitFor(`a mail to ${to}`, async () => {
    const row = await plinth.db.kysely
      .selectFrom('mail_outbox')
      .select('text_body')
      .where('to_address', '=', to)
      .orderBy('created_at', 'desc')
      .executeTakeFirst()
    return row ? pattern.exec(decodeURIComponent(row.text_body))?.[0] : undefined
  })
}

/**
 * Enrols TOTP for the session's user. The confirming code is the one of the previous step
 * (accepted: ±1 step), so that the current and next steps stay free for sign-ins in the test.
 * Pass the server's clock when the test moves it (see clock.ts).
 */
export async function enrolTotp(
  app: PlinthApp,
  session: Session,
  /** The server's clock (`ctx.now`) when the test moves it. */
  now: () => number = Date.now,
): Promise<{ secret: string; recoveryCodes: string[]; session: Session }> {
  const start = await app.inject({
    method: 'POST',
    url: '/api/v1/me/mfa/totp',
    headers: bearer(session.token),
  })
  assert.equal(start.statusCode, 200, start.body)
  const { secret } = start.json() as { secret: string }
  // The previous step's code stops working when the next step begins: the confirmation (the code
  // is computed as it is sent) keeps clear of that edge.
  const intoStep = now() % 30_000
  if (intoStep > 28_000) await sleep(30_000 - intoStep + 50)
  const confirm = await app.inject({
    method: 'POST',
    url: '/api/v1/me/mfa/totp/confirm',
    headers: bearer(session.token),
    payload: { code: generateTotp(secret, now() - 30_000) },
  })
  assert.equal(confirm.statusCode, 200, confirm.body)
  const body = confirm.json() as {
    token: string
    csrfToken: string
    recoveryCodes: string[]
    sessionReplaced: boolean
  }
  // The answer says that the session was replaced (issue #14): the token used to confirm is revoked.
  assert.equal(body.sessionReplaced, true)
  assert.notEqual(body.token, session.token)
  return {
    secret,
    recoveryCodes: body.recoveryCodes,
    session: {
      token: body.token,
      csrfToken: body.csrfToken,
      cookie: cookieFor(body.token),
      userId: session.userId,
    },
  }
}

/** Status of GET /me with these headers. */
export async function meStatus(app: PlinthApp, headers: Record<string, string>): Promise<number> {
  return (await app.inject({ url: '/api/v1/me', headers })).statusCode
}

import { waitFor } from './wait-for.ts'

export { waitFor }

/** Records every security event of the instance; `settled()` lets queued listeners run first. */
export function recordEvents(plinth: TestPlinth) {
  const events: SecurityEvent[] = []
  const stop = plinth.securityEvents.on((e) => {
    events.push(e)
  })
  return {
    events,
    stop,
    async settled(): Promise<SecurityEvent[]> {
      await sleep(5)
      return events
    },
    /** The events of this type recorded so far. */
    of(type: SecurityEvent['type']): SecurityEvent[] {
      return events.filter((e) => e.type === type)
    },
  }
}

/** The median of some numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
