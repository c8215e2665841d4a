import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { postJson, RESPONSE_SNIPPET_BYTES } from './post-json.ts'
import { guardedLookup } from './url-guard.ts'

const lookup = guardedLookup({ allowPrivate: true, allowHttp: true })

describe('postJson', () => {
  let server: Server
  let base: string
  const received: { headers: IncomingMessage['headers']; body: string }[] = []
  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
    '/ok': (_req, res) => res.writeHead(202, { 'content-type': 'text/plain' }).end('accepted'),
    '/big': (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      // More than the snippet, in several chunks, and never ended: the client stops reading.
      res.write('a'.repeat(700))
      res.write('b'.repeat(700))
    },
    '/redirect': (_req, res) => res.writeHead(302, { location: '/ok' }).end(),
    '/hang-up': (_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain', 'content-length': '100' })
      res.write('partial')
      setImmediate(() => res.socket?.destroy())
    },
    '/silent': () => {},
  }

  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
        routes[req.url ?? '']?.(req, res)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })

  const post = (path: string, signal = AbortSignal.timeout(5000)) =>
    postJson(
      new URL(path, base),
      '{"event":"thing:created","n":"é"}',
      { 'content-type': 'application/json' },
      {
        signal,
        lookup,
      },
    )

  it('posts the body with its byte length and no keep-alive, and resolves with the status and the answer', async () => {
    const result = await post('/ok')
    assert.deepEqual(result, { status: 202, snippet: 'accepted' })
    const last = received.at(-1)
    assert.equal(last?.body, '{"event":"thing:created","n":"é"}')
    assert.equal(last?.headers['content-length'], String(Buffer.byteLength(last?.body ?? '')))
    assert.equal(last?.headers.connection, 'close')
    assert.equal(last?.headers['content-type'], 'application/json')
  })

  it('keeps only the first bytes of a long answer and does not wait for its end', async () => {
    const result = await post('/big')
    assert.equal(result.status, 200)
    assert.equal(result.snippet.length, RESPONSE_SNIPPET_BYTES)
    assert.equal(result.snippet, 'a'.repeat(700) + 'b'.repeat(RESPONSE_SNIPPET_BYTES - 700))
  })

  it('does not follow a redirect: a 3xx is just a status', async () => {
    assert.deepEqual(await post('/redirect'), { status: 302, snippet: '' })
    assert.notEqual(received.at(-1)?.headers.host, undefined)
  })

  it('counts an answer whose body is cut short (the receiver hung up after the status) as answered', async () => {
    const result = await post('/hang-up')
    assert.equal(result.status, 500)
    assert.equal(result.snippet, 'partial')
  })

  it('rejects when the receiver does not answer before the signal aborts', async () => {
    await assert.rejects(post('/silent', AbortSignal.timeout(100)), (err: Error) => {
      assert.equal(err.name, 'AbortError')
      return true
    })
  })

  it('rejects when nothing listens on the port', async () => {
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise((resolve) => closed.close(resolve))
    await assert.rejects(
      postJson(new URL(`http://127.0.0.1:${port}/`), '{}', {}, { signal: AbortSignal.timeout(5000), lookup }),
      /ECONNREFUSED/,
    )
  })

  it('connects only to addresses the lookup allows: a name resolving to loopback is refused before connecting', async () => {
    // IP literals never reach a lookup (parseWebhookUrl checks those); a host name does.
    const strict = guardedLookup({ allowPrivate: false, allowHttp: true })
    const before = received.length
    await assert.rejects(
      postJson(
        new URL('/ok', base.replace('127.0.0.1', 'localhost')),
        '{}',
        {},
        {
          signal: AbortSignal.timeout(5000),
          lookup: strict,
        },
      ),
      (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'EPLINTHREFUSED')
        return true
      },
    )
    assert.equal(received.length, before, 'nothing reached the receiver')
  })
})
