import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * How the proxy treats traffic:
 * - `forward`: passes bytes both ways (normal);
 * - `reset-mid-query`: forwards what a client sends, then resets both sides before any answer (the
 *   request is in flight when its connection dies), for every connection that sends while the mode
 *   lasts;
 * - `half-open`: stops forwarding without closing anything (a silent network or a hung server):
 *   connections stay open, nothing gets through either way; new connections are accepted and
 *   get nowhere;
 * - `slow`: delays each chunk by `delayMs`.
 */
export type ProxyMode = 'forward' | 'reset-mid-query' | 'half-open' | 'slow'

export interface TcpProxy {
  /** host:port clients should use. */
  readonly port: number
  /** Replaces host:port in a URL with the proxy's. */
  through(url: string): string
  /** Cuts every open connection and refuses new ones (the upstream looks down). */
  cut(): void
  /** Resets (TCP RST) every open connection at once; new ones are accepted. */
  resetAll(): void
  /** Switches the mode (see `ProxyMode`); `delayMs` is for `slow`. `restore()` goes back to `forward`. */
  setMode(mode: ProxyMode, delayMs?: number): void
  /**
   * Leaves every open connection half-open for good (a server that vanished without a word) while
   * new connections are forwarded as usual.
   */
  strand(): void
  /** Accepts and forwards connections again (`forward` mode); bytes held while half-open flow on. */
  restore(): void
  /** Open client connections. */
  readonly connections: number
  /** Connections reset by `resetAll` or `reset-mid-query` so far. */
  readonly resets: number
  close(): Promise<void>
}

interface Pair {
  readonly client: Socket
  readonly upstream: Socket
  /** Never forwards again (see `strand`). */
  stranded?: boolean
}

/**
 * A loopback TCP proxy in front of a real service (PostgreSQL, Redis) for fault injection: the
 * test breaks the service for one client without touching the shared server.
 */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>()
  let down = false
  let mode: ProxyMode = 'forward'
  let delayMs = 0
  let resets = 0

  const reset = (pair: Pair) => {
    if (!pairs.delete(pair)) return
    resets++
    pair.client.resetAndDestroy()
    pair.upstream.resetAndDestroy()
  }

  /** Forwards `from` → `to` according to the mode of the moment. */
  const forward = (pair: Pair, from: Socket, to: Socket, toUpstream: boolean) => {
    from.on('data', (chunk: Buffer) => {
      if (mode === 'slow') {
        from.pause()
        setTimeout(() => {
          if (!to.destroyed) to.write(chunk)
          if (!from.destroyed && mode !== 'half-open' && !pair.stranded) from.resume()
        }, delayMs)
        return
      }
      if (!to.destroyed) to.write(chunk)
      if (mode === 'reset-mid-query' && toUpstream) {
        // Let the query reach the server, then kill the connection before its answer arrives.
        setImmediate(() => reset(pair))
      }
    })
  }

  const server: Server = createServer((client) => {
    if (down) {
      client.destroy()
      return
    }
    const upstream = connect(target.port, target.host)
    const pair: Pair = { client, upstream }
    pairs.add(pair)
    const drop = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    forward(pair, client, upstream, true)
    forward(pair, upstream, client, false)
    if (mode === 'half-open') {
      client.pause()
      upstream.pause()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('proxy has no port')

  const setMode = (next: ProxyMode, ms = 0) => {
    mode = next
    delayMs = ms
    for (const { client, upstream, stranded } of pairs) {
      if (next === 'half-open' || stranded) {
        client.pause()
        upstream.pause()
      } else {
        client.resume()
        upstream.resume()
      }
    }
  }

  const destroyAll = () => {
    for (const { client, upstream } of pairs) {
      client.destroy()
      upstream.destroy()
    }
    pairs.clear()
  }

  return {
    port: address.port,
    through(url) {
      const u = new URL(url)
      u.hostname = '127.0.0.1'
      u.port = String(address.port)
      return u.toString()
    },
    cut() {
      down = true
      destroyAll()
    },
    resetAll() {
      for (const pair of [...pairs]) reset(pair)
    },
    setMode(next, ms = 0) {
      setMode(next, ms)
    },
    strand() {
      for (const pair of pairs) {
        pair.stranded = true
        pair.client.pause()
        pair.upstream.pause()
      }
    },
    restore() {
      down = false
      setMode('forward')
    },
    get connections() {
      return pairs.size
    },
    get resets() {
      return resets
    },
    close() {
      down = true
      destroyAll()
      return new Promise((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))
    },
  }
}
