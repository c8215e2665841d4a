/**
 * The typed client of the Plinth API: the paths and bodies come from the generated `schema.d.ts`
 * (openapi-typescript over the server's OpenAPI document), the requests from openapi-fetch. This
 * file adds what a caller would otherwise hand-write: session and API-token authentication, the
 * CSRF header of cookie sessions, and problem+json errors as `PlinthApiError`.
 */
import createClient, { type Client, type FetchResponse, type MaybeOptionalInit } from 'openapi-fetch'
import type { HttpMethod, PathsWithMethod, RequiredKeysOf } from 'openapi-typescript-helpers'
import type { components, paths } from './schema.d.ts'

export type { components, operations, paths } from './schema.d.ts'
export type Problem = components['schemas']['Problem']
export type FieldError = components['schemas']['FieldError']

const PROBLEM_TYPE = 'application/problem+json'
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])
export const SESSION_COOKIE = 'plinth_session'
export const CSRF_HEADER = 'X-CSRF-Token'
/** The answers that carry a session's `csrfToken` (and a new session's token): read by the client. */
const ISSUES_CREDENTIALS = /\/api\/v1\/(auth\/(signup|login|mfa)|me|me\/password|me\/mfa\/totp\/confirm)$/

/** An error answer of the API (RFC 9457 problem details), or a non-problem error status. */
export class PlinthApiError extends Error {
  override readonly name = 'PlinthApiError'
  /** The HTTP status. */
  readonly status: number
  /** The stable error code (`PLINTH_…`; docs/errors.md), or `HTTP_<status>` for a non-problem answer. */
  readonly code: string
  readonly title: string
  readonly detail: string
  /** Each failing field of a validation error (empty otherwise). */
  readonly fields: readonly FieldError[]
  /** The request id (body or X-Request-Id header): the server's logs know it. */
  readonly requestId: string | undefined
  /** Seconds the server asks to wait (Retry-After of a 429 or 503). */
  readonly retryAfter: number | undefined
  /** The whole problem body, when the answer was one. */
  readonly problem: Problem | undefined

  constructor(status: number, problem: Problem | undefined, headers?: Headers) {
    const detail = problem?.detail ?? `HTTP ${status}`
    super(problem ? `${problem.code}: ${detail}` : detail)
    this.status = status
    this.code = problem?.code ?? `HTTP_${status}`
    this.title = problem?.title ?? ''
    this.detail = detail
    this.fields = problem?.errors ?? []
    this.requestId = problem?.requestId ?? headers?.get('x-request-id') ?? undefined
    const retry = Number(headers?.get('retry-after'))
    this.retryAfter = Number.isFinite(retry) && retry > 0 ? retry : undefined
    this.problem = problem
  }
}

export interface PlinthClientOptions {
  /** Where Plinth listens, e.g. `https://plinth.example.com` (the paths start with `/api/v1`). */
  readonly baseUrl: string
  /** An API token (`plt_…`) or session token (`pls_…`), sent as `Authorization: Bearer`. */
  readonly token?: string
  /**
   * How a session from `signIn`/`signUp` is used: `bearer` (default) sends its token in
   * `Authorization`; `cookie` uses the `plinth_session` cookie (a browser keeps it; elsewhere the
   * client keeps it) and sends the session's `X-CSRF-Token` with every change.
   */
  readonly auth?: 'bearer' | 'cookie'
  /** Extra headers on every request. */
  readonly headers?: Record<string, string>
  /** A fetch implementation (default: the global one). */
  readonly fetch?: typeof fetch
}

type Paths = paths
type InitParam<Init> =
  RequiredKeysOf<Init> extends never
    ? [(Init & { [key: string]: unknown })?]
    : [Init & { [key: string]: unknown }]
type Data<R> = R extends { data?: infer D } ? Exclude<D, undefined> : never
type Method<M extends HttpMethod> = <
  P extends PathsWithMethod<Paths, M>,
  I extends MaybeOptionalInit<Paths[P], M>,
>(
  path: P,
  ...init: InitParam<I>
) => Promise<
  Data<FetchResponse<Extract<Paths[P][M], Record<string | number, unknown>>, I, `${string}/${string}`>>
>

/** openapi-fetch's methods without their types: `Method<M>` states the types of the wrappers. */
type Untyped = (
  path: string,
  init?: unknown,
) => Promise<{ data?: unknown; error?: unknown; response: Response }>

type LoginBody = NonNullable<
  Paths['/api/v1/auth/login']['post']['requestBody']
>['content']['application/json']
type SignupBody = NonNullable<
  Paths['/api/v1/auth/signup']['post']['requestBody']
>['content']['application/json']
type MfaBody = NonNullable<Paths['/api/v1/auth/mfa']['post']['requestBody']>['content']['application/json']

/** The Plinth API, typed, with authentication and errors handled. */
export class PlinthClient {
  /**
   * The openapi-fetch client underneath (same paths and types), answering `{ data, error, response }`
   * instead of throwing; its requests carry the same credentials.
   */
  readonly raw: Client<Paths>
  readonly #mode: 'bearer' | 'cookie'
  #token: string | undefined
  #cookie: string | undefined
  #csrfToken: string | undefined

  constructor(options: PlinthClientOptions) {
    this.#mode = options.auth ?? 'bearer'
    this.#token = options.token
    this.raw = createClient<Paths>({
      baseUrl: options.baseUrl.replace(/\/+$/, ''),
      ...(options.headers ? { headers: options.headers } : {}),
      ...(options.fetch ? { fetch: options.fetch } : {}),
      credentials: this.#mode === 'cookie' ? 'include' : 'same-origin',
    })
    this.raw.use({
      onRequest: ({ request }) => {
        if (this.#token && !request.headers.has('authorization'))
          request.headers.set('authorization', `Bearer ${this.#token}`)
        if (this.#mode === 'cookie') {
          // Outside a browser nothing keeps cookies: the client sends the one it was given.
          if (this.#cookie && typeof document === 'undefined')
            request.headers.set('cookie', `${SESSION_COOKIE}=${this.#cookie}`)
          if (this.#csrfToken && !SAFE_METHODS.has(request.method) && !request.headers.has(CSRF_HEADER))
            request.headers.set(CSRF_HEADER, this.#csrfToken)
        }
        return request
      },
      onResponse: async ({ request, response }) => {
        if (ISSUES_CREDENTIALS.test(new URL(request.url).pathname)) await this.#remember(response)
        else if (this.#mode === 'cookie') this.#rememberCookie(response)
        return response
      },
    })
  }

  /** The session or API token sent as bearer, if any. */
  get token(): string | undefined {
    return this.#token
  }

  /** The CSRF token of the current cookie session (from sign-in, sign-up or `GET /api/v1/me`). */
  get csrfToken(): string | undefined {
    return this.#csrfToken
  }

  /** Use this API or session token from now on (undefined: none). */
  useToken(token: string | undefined): void {
    this.#token = token
  }

  /** `GET` a path: the typed body of the success, or a thrown `PlinthApiError`. */
  readonly get = this.#method<'get'>('GET')
  readonly post = this.#method<'post'>('POST')
  readonly put = this.#method<'put'>('PUT')
  readonly patch = this.#method<'patch'>('PATCH')
  readonly delete = this.#method<'delete'>('DELETE')

  /** Creates an account and signs in with it (`POST /api/v1/auth/signup`). */
  async signUp(body: SignupBody) {
    return this.post('/api/v1/auth/signup', { body })
  }

  /**
   * Signs in (`POST /api/v1/auth/login`). When the answer has `mfaRequired: true`, finish with
   * `completeMfa({ challenge, code })`.
   */
  async signIn(body: LoginBody) {
    return this.post('/api/v1/auth/login', { body })
  }

  /** The second step of a sign-in with a TOTP or recovery code (`POST /api/v1/auth/mfa`). */
  async completeMfa(body: MfaBody) {
    return this.post('/api/v1/auth/mfa', { body })
  }

  /** Who is calling (`GET /api/v1/me`); also refreshes the CSRF token of a cookie session. */
  async me() {
    return this.get('/api/v1/me')
  }

  /** Ends the current session (`POST /api/v1/auth/logout`) and forgets its credentials. */
  async signOut(): Promise<void> {
    await this.post('/api/v1/auth/logout')
    this.#forget()
  }

  #method<M extends HttpMethod>(name: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'): Method<M> {
    return (async (path: string, init?: unknown) => {
      const send = (this.raw[name] as unknown as Untyped).bind(this.raw)
      const { data, error, response } = await send(path, init)
      if (!response.ok) throw errorOf(response, error)
      return data
    }) as unknown as Method<M>
  }

  #forget(): void {
    if (this.#token?.startsWith('pls_')) this.#token = undefined
    this.#cookie = undefined
    this.#csrfToken = undefined
  }

  /** Outside a browser: keeps the session cookie a response sets (or drops it when it is cleared). */
  #rememberCookie(response: Response): void {
    for (const line of response.headers.getSetCookie?.() ?? []) {
      const [pair = ''] = line.split(';', 1)
      const at = pair.indexOf('=')
      if (pair.slice(0, at).trim() !== SESSION_COOKIE) continue
      const value = pair.slice(at + 1).trim()
      const expired = /max-age=0|expires=thu, 01 jan 1970/i.test(line)
      this.#cookie = value && !expired ? value : undefined
    }
  }

  /** Keeps what a sign-in (or `/me`) hands out: the session token or cookie, and its CSRF token. */
  async #remember(response: Response): Promise<void> {
    if (this.#mode === 'cookie') this.#rememberCookie(response)
    if (!response.ok || !response.headers.get('content-type')?.startsWith('application/json')) return
    let body: unknown
    try {
      body = await response.clone().json()
    } catch {
      return
    }
    if (body === null || typeof body !== 'object') return
    const { csrfToken, token } = body as { csrfToken?: unknown; token?: unknown }
    if (typeof csrfToken !== 'string') return
    this.#csrfToken = csrfToken
    // A newly issued session (sign-in, sign-up, password change, MFA confirmation).
    if (this.#mode === 'bearer' && typeof token === 'string' && token.startsWith('pls_')) this.#token = token
  }
}

/** The `PlinthApiError` of an error response, given the body openapi-fetch parsed from it. */
export function errorOf(response: Response, body: unknown): PlinthApiError {
  const isProblem =
    response.headers.get('content-type')?.startsWith(PROBLEM_TYPE) &&
    typeof body === 'object' &&
    body !== null &&
    typeof (body as { code?: unknown }).code === 'string'
  return new PlinthApiError(response.status, isProblem ? (body as Problem) : undefined, response.headers)
}

/** A client of the Plinth at `options.baseUrl`. */
export function createPlinthClient(options: PlinthClientOptions): PlinthClient {
  return new PlinthClient(options)
}
