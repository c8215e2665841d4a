import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'

/** Bytes of a receiver's answer kept (to show why a delivery failed); the rest is not read. */
export const RESPONSE_SNIPPET_BYTES = 1024

export interface PostResult {
  readonly status: number
  /** The start of the response body, as text (at most `RESPONSE_SNIPPET_BYTES`). */
  readonly snippet: string
}

/**
 * POSTs `body` to `url` with node:http(s) rather than `fetch`: `fetch` takes no `lookup`, and
 * pinning the connection to the addresses the SSRF guard checked is the point (see
 * `guardedLookup`). No redirect is followed (a 3xx is just a status), no connection is reused
 * (each delivery resolves and checks the host again), and `signal` bounds the whole exchange.
 * Resolves once the status and the first bytes of the body have arrived, then drops the socket.
 */
export function postJson(
  url: URL,
  body: string,
  headers: Readonly<Record<string, string>>,
  options: { signal: AbortSignal; lookup: LookupFunction },
): Promise<PostResult> {
  return new Promise((resolve, reject) => {
    let settled = false
    const settle = (fn: () => void) => {
      if (settled) return
      settled = true
      fn()
    }
    const request = (url.protocol === 'https:' ? https : http).request(
      url,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)), connection: 'close' },
        agent: false,
        lookup: options.lookup,
        signal: options.signal,
      },
      (response) => {
        const chunks: Buffer[] = []
        let size = 0
        const done = () => {
          response.destroy()
          const snippet = Buffer.concat(chunks).subarray(0, RESPONSE_SNIPPET_BYTES).toString('utf8')
          settle(() => resolve({ status: response.statusCode ?? 0, snippet }))
        }
        response.on('data', (chunk: Buffer) => {
          chunks.push(chunk)
          size += chunk.length
          if (size >= RESPONSE_SNIPPET_BYTES) done()
        })
        response.on('end', done)
        // A receiver that answers and hangs up before the body ends has still answered: the
        // status is what the delivery is judged by (the body only explains a failure). Node
        // reports the cut as an `aborted` error before `close`, so the error must not reject.
        response.on('error', done)
        response.on('close', done)
      },
    )
    request.on('error', (err) => settle(() => reject(err)))
    request.end(body)
  })
}
