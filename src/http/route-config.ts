/** What a route may declare in its `config`, read by Plinth's plugins. */
declare module 'fastify' {
  interface FastifyContextConfig {
    /** Serve this route even under pressure (liveness, metrics: the signals operators need then). */
    pressureExempt?: boolean
    /** The route needs no authentication. */
    public?: boolean
  }
}

export {}
