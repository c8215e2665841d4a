/**
 * The embedded database's socket server, in the worker thread: speaks the PostgreSQL wire protocol
 * on a Unix socket and hands every connection's frontend messages to the session queue
 * (session-queue.ts), which runs them on PGlite's one session. It replaces
 * `@electric-sql/pglite-socket`'s server and handlers (decision 0036): those cost, per socket read,
 * a `setImmediate` before the data was even looked at, two copies of the read buffer, a copy of
 * every message, a promise per message and an `EventTarget` event; and a third copy of every answer
 * before its write. Here a read is split into messages in place (views of the read buffer, which
 * Node does not reuse) and queued at once, and an answer is written as PGlite produced it (one copy,
 * out of PGlite's memory).
 *
 * The startup phase is PostgreSQL's: an SSLRequest or GSSENCRequest is answered `N` (no
 * encryption: the socket is local and private), a CancelRequest is dropped (PGlite has no backend
 * process to signal), and the startup packet goes to PGlite (which trusts every client: the
 * socket's file mode is what keeps other users out). Past `maxConnections` a connection is refused
 * with an ErrorResponse (SQLSTATE 53300), as PostgreSQL does.
 */
import { createServer, type Server, type Socket } from 'node:net'
import type { Connection, SessionQueue } from './session-queue.ts'

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const NO = Buffer.from('N')

/** An ErrorResponse (FATAL, 53300) as PostgreSQL sends when it has no connection slot left. */
function tooManyConnections(): Buffer {
  const fields = ['SFATAL', 'VFATAL', 'C53300', 'Msorry, too many clients already']
  const body = Buffer.concat([...fields.map((f) => Buffer.from(`${f}\0`, 'latin1')), Buffer.from([0])])
  const head = Buffer.alloc(5)
  head.write('E', 0, 'latin1')
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}

export interface SessionServer {
  /** Closes every connection (their transactions are rolled back) and stops listening. */
  stop(): Promise<void>
}

/** Listens on `path` and serves each connection through `queue`; resolves once listening. */
export async function startSessionServer(options: {
  readonly path: string
  readonly queue: SessionQueue
  readonly maxConnections: number
}): Promise<SessionServer> {
  const { queue } = options
  const sockets = new Set<Socket>()
  /** Connections being cleaned up (their transaction rolled back): stop() waits for them. */
  const leaving = new Set<Promise<void>>()
  let nextId = 1

  const serve = (socket: Socket) => {
    if (sockets.size >= options.maxConnections) {
      socket.end(tooManyConnections())
      return
    }
    sockets.add(socket)
    const conn: Connection = {
      id: nextId++,
      write: (data) => {
        if (socket.writable) socket.write(data)
      },
      fail: () => socket.destroy(),
    }
    let started = false
    // A partial message's bytes, collected until the length it announced has arrived: joining them
    // once, not at every read, keeps a multi-megabyte message linear instead of quadratic.
    let pending: Buffer[] = []
    let pendingBytes = 0
    /** The bytes the partial message needs in all (0 while its header is incomplete). */
    let need = 0
    socket.on('data', (chunk: Buffer) => {
      if (pendingBytes > 0 && need > 0 && pendingBytes + chunk.length < need) {
        pending.push(chunk)
        pendingBytes += chunk.length
        return
      }
      const buf = pendingBytes > 0 ? Buffer.concat([...pending, chunk]) : chunk
      pending = []
      pendingBytes = 0
      need = 0
      let offset = 0
      let queued = false
      while (true) {
        const left = buf.length - offset
        if (!started) {
          // Untyped startup-phase messages: length (including itself), then a code.
          if (left < 8) break
          const length = buf.readInt32BE(offset)
          if (length < 8 || length > 10_000) {
            socket.destroy()
            return
          }
          if (left < length) {
            need = length
            break
          }
          const code = buf.readInt32BE(offset + 4)
          if (code === SSL_REQUEST || code === GSSENC_REQUEST) socket.write(NO)
          else if (code !== CANCEL_REQUEST) {
            started = true
            queue.push(conn, buf.subarray(offset, offset + length))
            queued = true
          }
          offset += length
          continue
        }
        if (left < 5) break
        const length = 1 + buf.readInt32BE(offset + 1)
        if (length < 5) {
          socket.destroy()
          return
        }
        if (left < length) {
          need = length
          break
        }
        queue.push(conn, buf.subarray(offset, offset + length))
        queued = true
        offset += length
      }
      if (offset < buf.length) {
        // A partial message: kept (copied, so that the queued views stay the only users of buf).
        pending = [Buffer.from(buf.subarray(offset))]
        pendingBytes = buf.length - offset
      }
      if (queued) queue.run()
    })
    // A reset or a close: the queue forgets the connection, rolls back its transaction, frees the session.
    socket.on('error', () => {})
    socket.on('close', () => {
      sockets.delete(socket)
      const done = queue.disconnect(conn.id).catch(() => {})
      leaving.add(done)
      void done.finally(() => leaving.delete(done))
    })
  }

  const server: Server = createServer(serve)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.path, () => {
      server.off('error', reject)
      resolve()
    })
  })

  return {
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const socket of sockets) socket.destroy()
      await closed
      await Promise.all(leaving)
    },
  }
}
