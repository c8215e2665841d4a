/**
 * The benchmark server, run as a child of `bench/audit/run.ts` (never on its own): Plinth's full
 * stack built by `createPlinth` as production runs it, on the PostgreSQL database named by the
 * parent (argv[2], a scratch database holding `bench_items`), plus two bench-only routes that make
 * the same change, one without and one with its audit row (CHANGE and AUDITED_CHANGE). One
 * administrator is created directly and signed in once; over the IPC channel the child sends
 * `{ type: 'ready', port, token }` or `{ type: 'failed', message }`.
 */
import { Type } from 'typebox'
import { builtinModules } from '../../src/app/modules.ts'
import { auditCallerOf, auditDiff } from '../../src/core/audit.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import { signInNewUser, startProductionPlinth } from '../lib/plinth-child.ts'
import { type Running as Listening, requireParent, serveChild } from '../lib/server-child.ts'
import {
  ACTION,
  AUDITED_CHANGE,
  applyChange,
  CHANGE,
  ROWS,
  type ServerMessage,
  sharedKeys,
} from './protocol.ts'

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
              await ctx.audit.record(trx, {
                action: ACTION,
                ...auditCallerOf(request),
                target: { type: 'bench-item', id: String(id) },
                outcome: 'success',
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
  const running = await startProductionPlinth({ ...sharedKeys(), DATABASE_URL: databaseUrl }, [
    ...builtinModules,
    benchModule,
  ])
  const { token } = await signInNewUser(running, 'admin')
  return { port: running.port, token, close: running.close }
}

requireParent('bench/audit/server.ts runs as a child of bench/audit/run.ts')
type Ready = Omit<Extract<ServerMessage, { type: 'ready' }>, 'type'>
await serveChild(startPlinth, ({ port, token }): Ready => ({ port, token }))
