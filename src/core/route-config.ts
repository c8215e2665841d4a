/**
 * The matched route's `config`, read once per request, for the HTTP layer's plugins and the
 * modules' own hooks alike (a module cannot import http/). Typed structurally: core knows no web
 * framework; http/route-config.ts gives it Fastify's types.
 */

/** Where routeConfig keeps a request's route config once read. */
export const ROUTE_CONFIG = Symbol('plinth.routeConfig')

/** What routeConfig needs of a request: Fastify's `routeOptions` getter and the slot. */
interface RoutedRequest {
  readonly routeOptions: { readonly config: object }
}

/**
 * The matched route's `config` (its `url` is the route template; undefined when no route matched),
 * read once per request. Fastify's `request.routeOptions` is a getter that builds a 13-field object
 * on every access, and the plugins ask for it several times per request. http/create-server.ts
 * declares the slot (`decorateRequest(ROUTE_CONFIG, null)`), so every request has the same shape.
 */
export function routeConfig<R extends RoutedRequest>(request: R): R['routeOptions']['config'] {
  const slot = request as R & { [ROUTE_CONFIG]?: object | null }
  let config = slot[ROUTE_CONFIG]
  if (!config) {
    config = request.routeOptions.config
    slot[ROUTE_CONFIG] = config
  }
  return config as R['routeOptions']['config']
}
