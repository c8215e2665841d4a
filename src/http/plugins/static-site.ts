import { stat } from 'node:fs/promises'
import { extname, resolve, sep } from 'node:path'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import '../route-config.ts'

/**
 * The strict policy of the served app: its own scripts, styles, images, fonts and API calls only,
 * no inline script, no plugins, no framing. `PLINTH_STATIC_CSP` adds directives or replaces these
 * by name.
 */
export const STATIC_CSP_DIRECTIVES: readonly string[] = [
  "default-src 'self'",
  "base-uri 'self'",
  "object-src 'none'",
  "frame-ancestors 'none'",
  "form-action 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
]

/** The default policy with the operator's directives: one named again replaces the default one. */
export function staticCsp(extra: string): string {
  const byName = new Map<string, string>()
  for (const d of [...STATIC_CSP_DIRECTIVES, ...extra.split(';')]) {
    const text = d.trim().replace(/\s+/g, ' ')
    if (text) byName.set(text.split(' ')[0]!.toLowerCase(), text)
  }
  return [...byName.values()].join('; ')
}

/**
 * Names bundlers give content-hashed files (`index-3f9a1c2b.js`, `app.4e8b1f0a9c.css`,
 * `logo-BxY1_z9Q.svg`): a run of 8 or more hash characters, with at least one digit, before the
 * extension. They never change, so they are cached for a year.
 */
const HASHED = /[.-](?=[A-Za-z0-9_]*\d)[A-Za-z0-9_]{8,}\.[a-z0-9]+$/

export function staticCacheControl(path: string): string {
  if (HASHED.test(path.replace(/\.(br|gz)$/, ''))) return 'public, max-age=31536000, immutable'
  return 'no-cache'
}

export interface StaticSiteOptions {
  /** The built app (e.g. `dist/`). */
  readonly root: string
  /** URL prefix, `/` by default; always ends with `/`. */
  readonly prefix: string
  /** `PLINTH_STATIC_CSP`. */
  readonly csp: string
}

/**
 * Serves a built single-page app (PLINTH_STATIC_DIR): files by path (`.br`/`.gz` siblings when the
 * client accepts them), hashed assets immutable for a year, `index.html` and other unhashed files
 * `no-cache`, and `index.html` for unknown paths that a browser navigates to (outside `/api`), so
 * that client-side routes load. A missing asset (a path with an extension that does not accept
 * HTML) stays a 404.
 */
async function staticSite(app: FastifyInstance, opts: StaticSiteOptions) {
  const root = resolve(opts.root)
  const prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`
  await app.register(fastifyStatic, {
    root,
    serve: false,
    preCompressed: true,
    cacheControl: false,
    dotfiles: 'deny',
    index: false,
    setHeaders(res, path) {
      res.header('cache-control', staticCacheControl(path))
    },
  })
  const csp = staticCsp(opts.csp)
  const isFile = async (rel: string) => {
    const full = resolve(root, rel)
    if (full !== root && !full.startsWith(root + sep)) return false
    return (await stat(full).catch(() => undefined))?.isFile() ?? false
  }

  app.get(
    `${prefix}*`,
    { config: { public: true, rateLimit: false, database: false, csp }, schema: { hide: true } },
    async (request, reply) => {
      const path = request.url.split('?', 1)[0]!
      if (path === '/api' || path.startsWith('/api/')) return reply.callNotFound()
      let rel: string
      try {
        rel = decodeURIComponent(path.slice(prefix.length))
      } catch {
        return reply.callNotFound()
      }
      if (rel !== '' && !rel.split('/').some((s) => s.startsWith('.')) && (await isFile(rel)))
        return reply.sendFile(rel)
      const accept = String(request.headers.accept ?? '')
      const navigation = accept.includes('text/html') || extname(rel) === ''
      if (!navigation || !(await isFile('index.html'))) return reply.callNotFound()
      return reply.sendFile('index.html')
    },
  )
  if (prefix !== '/') {
    app.get(
      prefix.slice(0, -1),
      { config: { public: true, rateLimit: false, database: false }, schema: { hide: true } },
      async (_request, reply) => reply.redirect(prefix, 308),
    )
  }
}

export default fp(staticSite, { name: 'plinth-static-site', fastify: '5.x' })
