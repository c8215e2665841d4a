/**
 * The benchmark server, run as a child of `bench/audit/run.ts` (never on its own): Plinth's full
 * stack built by `createPlinth` as production runs it, on the PostgreSQL database named by the
 * parent (argv[2], a scratch database holding `bench_items`), plus two bench-only routes that make
 * the same change, one without and one with its audit row (CHANGE and AUDITED_CHANGE). One
 * administrator is created directly and signed in once; over the IPC channel the child sends
 * `{ type: 'ready', port, token }` or `{ type: 'failed', message }`.
 */
import { randomBytes } from 'node:crypto'
import { Type } from 'typebox'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { actorOf, auditDiff } from '../../src/core/audit.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import { createUserDirect } from '../../src/modules/accounts/bootstrap-admin.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import {
  type Running as Listening,
  portOf,
  productionEnv,
  requireParent,
  serveChild,
} from '../lib/server-child.ts'
import {
  ACTION,
  AUDITED_CHANGE,
  applyChange,
  CHANGE,
  ROWS,
  type ServerMessage,
  sharedKeys,
} from './protocol.ts'

const HOST = '127.0.0.1'

/**
 * POST CHANGE: in one transaction, add 1 to `plain` of a random `bench_items` row (applyChange:
 * read it under a row lock, write the new value).
 * POST AUDITED_CHANGE: the same on `audited`, plus its audit row (actor, target, request facts and
 * the before/after diff), as an administrative endpoint records it.
 */
const benchModule: PlinthModule = {
  name: 'bench-audit',
  routes(api, ctx) {
    for (const audited of [false, true]) {
      api.post(
        audited ? AUDITED_CHANGE : CHANGE,
        {
          config: { permission: 'users:manage' },
          schema: { response: { 200: Type.Object({ id: Type.Integer(), value: Type.Integer() }) } },
        },
        async (request) => {
          const id = 1 + Math.floor(Math.random() * ROWS)
          return ctx.db.kysely.transaction().execute(async (trx) => {
            const { before, after } = await applyChange(trx, audited ? 'audited' : 'plain', id)
            if (audited) {
              const ua = request.headers['user-agent']
              await ctx.audit.record(trx, {
                action: ACTION,
                actor: actorOf(request.principal!),
                target: { type: 'bench-item', id: String(id) },
                outcome: 'success',
                ip: request.ip,
                userAgent: typeof ua === 'string' ? ua : undefined,
                requestId: request.id,
                changes: auditDiff({ value: before }, { value: after }),
              })
            }
            return { id, value: after }
          })
        },
      )
    }
  },
}

interface Running extends Listening {
  readonly token: string
}

async function startPlinth(): Promise<Running> {
  const databaseUrl = process.argv[2]
  if (!databaseUrl) throw new Error('usage: server.ts <database url>')
  const config = loadConfig({
    env: { ...productionEnv(HOST), ...sharedKeys(), DATABASE_URL: databaseUrl },
    envFile: false,
  })
  const logger = createLogger(config, logDestination('/dev/null'))
  const plinth = await createPlinth({ config, logger, modules: [...builtinModules, benchModule] })
  await plinth.listen()
  const port = portOf(plinth.app.server.address())
  const email = `bench-${randomBytes(6).toString('hex')}@example.com`
  const password = `bench-${randomBytes(12).toString('base64url')}`
  await createUserDirect(plinth.context, { email, password, role: 'admin' })
  const res = await fetch(`http://${HOST}:${port}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
    signal: AbortSignal.timeout(5000),
  })
  const body = (await res.json()) as { token?: string }
  if (res.status !== 200 || !body.token)
    throw new Error(`sign-in answered ${res.status}: ${JSON.stringify(body)}`)
  return { port, token: body.token, close: () => plinth.shutdown() }
}

requireParent('bench/audit/server.ts runs as a child of bench/audit/run.ts')
type Ready = Omit<Extract<ServerMessage, { type: 'ready' }>, 'type'>
await serveChild(startPlinth, ({ port, token }): Ready => ({ port, token }))
