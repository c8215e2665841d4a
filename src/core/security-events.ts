import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'

/** Every security event Plinth emits (`noun:verb`). The audit log persists them. */
export const SECURITY_EVENT_TYPES = [
  'user:signed-up',
  'user:created',
  'user:role-changed',
  'user:disabled',
  'user:enabled',
  'user:erased',
  'login:succeeded',
  'login:failed',
  'login:locked-out',
  'mfa:enrolled',
  'mfa:disabled',
  'mfa:failed',
  'mfa:recovery-code-used',
  'mfa:policy-changed',
  'password:changed',
  'password:reset-requested',
  'password:reset',
  'session:revoked',
  'token:created',
  'token:revoked',
  'invite:created',
] as const

export type SecurityEventType = (typeof SECURITY_EVENT_TYPES)[number]

export interface Actor {
  readonly type: 'user' | 'token' | 'system' | 'anonymous'
  /** User id for users and tokens; absent for system and anonymous. */
  readonly id?: string
  /** Token id when the actor is an API token. */
  readonly tokenId?: string
}

export interface SecurityEvent {
  readonly type: SecurityEventType
  readonly actor: Actor
  readonly target?: { readonly type: string; readonly id: string }
  readonly outcome: 'success' | 'failure'
  readonly ip?: string
  readonly userAgent?: string
  readonly requestId?: string
  /** Non-secret facts about the event (e.g. `{ reason: 'bad-password' }`, `{ from: 'member', to: 'admin' }`). */
  readonly details?: Readonly<Record<string, unknown>>
  readonly at: Date
}

export type SecurityEventListener = (event: SecurityEvent) => void | Promise<void>

export interface SecurityEvents {
  emit(event: Omit<SecurityEvent, 'at'>): void
  on(listener: SecurityEventListener): () => void
}

/**
 * The one typed channel for security events. Until the audit module persists them, every event is
 * logged at info level (nothing secret goes in an event, so the whole event is logged).
 */
export function createSecurityEvents(deps: { logger: Logger }): SecurityEvents {
  const emitter = new EventEmitter()
  const log = deps.logger.child({ component: 'security' })
  emitter.on('event', (event: SecurityEvent) => log.info({ event }, 'security event'))
  return {
    emit(event) {
      emitter.emit('event', Object.freeze({ ...event, at: new Date() }))
    },
    on(listener) {
      const wrapped = (event: SecurityEvent) => {
        Promise.resolve()
          .then(() => listener(event))
          .catch((err: unknown) => log.error({ err, type: event.type }, 'security event listener failed'))
      }
      emitter.on('event', wrapped)
      return () => emitter.off('event', wrapped)
    },
  }
}
