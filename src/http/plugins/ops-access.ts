import { createHash, timingSafeEqual } from 'node:crypto'
import { BlockList, isIP } from 'node:net'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

/** Decides whether a request comes from an operator; later modules (accounts) add their own. */
export type OpsAuthorizer = (request: FastifyRequest) => boolean | Promise<boolean>

export interface OpsAccess {
  /** True when any authorizer grants operator access. */
  isOperator(request: FastifyRequest): Promise<boolean>
  /** Adds a rule, e.g. "the caller holds an admin session". */
  addAuthorizer(authorizer: OpsAuthorizer): void
}

declare module 'fastify' {
  interface FastifyInstance {
    opsAccess: OpsAccess
  }
}

export interface OpsAccessOptions {
  /** CIDR ranges (or addresses) whose callers are operators. */
  readonly networks: readonly string[]
  /** A bearer token that makes any caller an operator. */
  readonly token: string | undefined
}

const digest = (value: string) => createHash('sha256').update(value).digest()

export function networkMatcher(networks: readonly string[]): (ip: string) => boolean {
  const list = new BlockList()
  for (const entry of networks) {
    const [address = '', prefix] = entry.split('/')
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) list.addAddress(address, type)
    else list.addSubnet(address, Number(prefix), type)
  }
  return (ip) => {
    // IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d.
    const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip
    const family = isIP(v4)
    return family !== 0 && list.check(v4, family === 6 ? 'ipv6' : 'ipv4')
  }
}

/**
 * Operator access for `/health` details and `/api/metrics`: callers from `PLINTH_OPS_NETWORKS`
 * (the client IP as resolved through `PLINTH_TRUST_PROXY`), holders of `PLINTH_OPS_TOKEN`, and
 * whatever later modules add.
 */
async function opsAccess(app: FastifyInstance, opts: OpsAccessOptions): Promise<void> {
  const inNetwork = networkMatcher(opts.networks)
  const tokenDigest = opts.token ? digest(opts.token) : undefined
  const authorizers: OpsAuthorizer[] = [
    (request) => inNetwork(request.ip),
    (request) => {
      const header = request.headers.authorization
      if (!tokenDigest || !header?.startsWith('Bearer ')) return false
      return timingSafeEqual(digest(header.slice(7).trim()), tokenDigest)
    },
  ]
  app.decorate('opsAccess', {
    async isOperator(request: FastifyRequest) {
      for (const authorize of authorizers) if (await authorize(request)) return true
      return false
    },
    addAuthorizer(authorizer: OpsAuthorizer) {
      authorizers.push(authorizer)
    },
  } satisfies OpsAccess)
}

export default fp(opsAccess, { name: 'plinth-ops-access', fastify: '5.x' })
