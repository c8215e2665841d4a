import { createServer, type Socket } from 'node:net'

export interface BlackHole {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string
  readonly port: number
  /** Connections accepted so far. */
  readonly accepted: number
  /** Destroys every held connection and stops listening. */
  close(): Promise<void>
}

/**
 * A TCP server on a spare port of 127.0.0.1 that accepts every connection and never answers: it
 * reads and discards what it is sent and holds the socket open (a hung server, or a firewall that
 * lets the handshake through and drops everything after).
 */
export async function startBlackHole(): Promise<BlackHole> {
  const sockets = new Set<Socket>()
  let accepted = 0
  const server = createServer((socket) => {
    accepted++
    sockets.add(socket)
    socket.on('data', () => {})
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get accepted() {
      return accepted
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
