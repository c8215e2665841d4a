import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Received {
  readonly path: string
  readonly method: string
  readonly headers: IncomingHttpHeaders
  /** The body exactly as it arrived (what the signature covers). */
  readonly raw: Buffer
  readonly at: number
}

/** What the receiver does with one request: answer a status, redirect, or never answer. */
export type Reply = number | { redirect: string } | { status: number; body: Buffer } | 'hang'

/**
 * A real HTTP server on 127.0.0.1 that records every request and answers per path: `script(path,
 * [500, 500, 200])` makes the next requests to that path answer 500, 500, then 200; afterwards
 * (and for unscripted paths) it answers 200.
 */
export async function startReceiver() {
  const received: Received[] = []
  const scripts = new Map<string, Reply[]>()
  const hanging: ServerResponse[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const path = req.url ?? '/'
      received.push({
        path,
        method: req.method ?? '',
        headers: req.headers,
        raw: Buffer.concat(chunks),
        at: Date.now(),
      })
      const reply = scripts.get(path)?.shift() ?? 200
      if (reply === 'hang') {
        hanging.push(res)
        return
      }
      if (typeof reply === 'object' && 'redirect' in reply) {
        res.writeHead(302, { location: reply.redirect }).end()
        return
      }
      if (typeof reply === 'object') {
        res.writeHead(reply.status, { 'content-type': 'application/octet-stream' }).end(reply.body)
        return
      }
      res.writeHead(reply, { 'content-type': 'text/plain' }).end(reply >= 300 ? `planned ${reply}` : 'ok')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    port,
    received,
    /** `http://127.0.0.1:<port><path>` */
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    of: (path: string) => received.filter((r) => r.path === path),
    script(path: string, replies: Reply[]) {
      scripts.set(path, [...replies])
    },
    async close() {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

export type Receiver = Awaited<ReturnType<typeof startReceiver>>
