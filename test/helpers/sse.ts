/**
 * A server-sent-events client over real HTTP (node:http, one connection of its own per stream,
 * read as it arrives: `inject` would buffer an endless answer). Parses the stream as a browser's EventSource does: messages are
 * blocks separated by a blank line, of `id:`, `event:`, `data:` and `retry:` fields and `:` comments.
 */
import { get, type IncomingMessage } from 'node:http'
import { waitFor } from './wait-for.ts'

export interface SseMessage {
  readonly id?: string
  readonly event?: string
  readonly data?: string
}

export interface SseStream {
  readonly status: number
  readonly headers: Headers
  /** The body of an answer that is no stream (a problem+json refusal). */
  readonly body?: unknown
  readonly messages: SseMessage[]
  readonly comments: string[]
  /** The last `retry:` value received. */
  readonly retry: () => number | undefined
  /** Resolves when the server ends the stream (or the connection breaks). */
  readonly ended: Promise<void>
  readonly isEnded: () => boolean
  /** Waits until `count` messages (of `event` when given) arrived and returns them. */
  waitForMessages(count: number, event?: string, timeoutMs?: number): Promise<SseMessage[]>
  /** The client closes the connection. */
  close(): void
}

export async function openStream(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  // agent: false — its own connection, closed with the stream (a pooled client may open spare
  // connections that a test server's shutdown then waits for).
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(url, { agent: false, headers: { accept: 'text/event-stream', ...headers } }, resolve).on(
      'error',
      reject,
    )
  })
  const status = res.statusCode ?? 0
  const responseHeaders = new Headers()
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) responseHeaders.set(k, String(v))
  const messages: SseMessage[] = []
  const comments: string[] = []
  let retry: number | undefined
  let isEnded = false
  const isStream =
    status === 200 && (responseHeaders.get('content-type') ?? '').startsWith('text/event-stream')
  let body: unknown
  if (!isStream) {
    let text = ''
    for await (const chunk of res) text += String(chunk)
    try {
      body = JSON.parse(text)
    } catch {
      body = text
    }
  }
  const ended = (async () => {
    if (!isStream) return
    const decoder = new TextDecoder()
    let buffered = ''
    try {
      for await (const chunk of res) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true })
        let at = buffered.indexOf('\n\n')
        while (at >= 0) {
          const block = buffered.slice(0, at)
          buffered = buffered.slice(at + 2)
          const message: { id?: string; event?: string; data?: string } = {}
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim())
            else {
              const colon = line.indexOf(':')
              const field = colon < 0 ? line : line.slice(0, colon)
              const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
              if (field === 'retry') retry = Number(value)
              else if (field === 'id' || field === 'event') message[field] = value
              else if (field === 'data')
                message.data = message.data === undefined ? value : `${message.data}\n${value}`
            }
          }
          if (message.data !== undefined) messages.push(message)
          at = buffered.indexOf('\n\n')
        }
      }
    } catch {
      // destroyed by close(), or the connection broke: the stream ended either way
    } finally {
      isEnded = true
    }
  })()
  if (!isStream) isEnded = true
  return {
    status,
    headers: responseHeaders,
    body,
    messages,
    comments,
    retry: () => retry,
    ended,
    isEnded: () => isEnded,
    waitForMessages: (count, event, timeoutMs = 15_000) =>
      waitFor(
        `${count} ${event ?? ''} message(s) on the stream (have ${JSON.stringify(messages)})`,
        () => {
          const matching = messages.filter((m) => event === undefined || m.event === event)
          return matching.length >= count ? matching : undefined
        },
        { timeoutMs },
      ),
    close: () => res.destroy(),
  }
}
