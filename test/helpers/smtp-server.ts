import { type AddressInfo, createServer, type Server, type Socket } from 'node:net'
import { SMTPServer } from 'smtp-server'

export interface ReceivedMail {
  /** Envelope sender and recipients, as the SMTP server saw them. */
  mailFrom: string
  rcptTo: string[]
  /** Header names lower-cased, folded lines joined. */
  headers: Map<string, string>
  /** Everything after the headers, quoted-printable decoded. */
  body: string
}

/** The header block (unfolded) and the body, quoted-printable decoded when it is. */
export function parseMail(raw: string): Pick<ReceivedMail, 'headers' | 'body'> {
  const split = raw.indexOf('\r\n\r\n')
  const headers = new Map<string, string>()
  for (const line of raw
    .slice(0, split)
    .replace(/\r\n[ \t]+/g, ' ')
    .split('\r\n')) {
    const colon = line.indexOf(':')
    headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim())
  }
  let body = raw.slice(split + 4)
  if (/quoted-printable/i.test(raw))
    body = body
      .replace(/=\r\n/g, '')
      .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(Number.parseInt(h, 16)))
  return { headers, body }
}

/**
 * A real SMTP server (smtp-server) on 127.0.0.1, on a free port, that requires AUTH with this user
 * and password (plain text: STARTTLS is off) and keeps every message it receives. `url` is what
 * SMTP_URL should be.
 *
 * @example
 * const smtp = await startSmtp({ user: 'mailbot', password: 'pw' })
 * const plinth = await startTestPlinth({ env: { SMTP_URL: smtp.url } })
 */
export async function startSmtp(options: { user: string; password: string; acceptAuth?: boolean }) {
  const received: ReceivedMail[] = []
  const authAttempts: string[] = []
  const server = new SMTPServer({
    secure: false,
    disabledCommands: ['STARTTLS'],
    allowInsecureAuth: true,
    authOptional: false,
    logger: false,
    onAuth(auth, _session, done) {
      authAttempts.push(auth.username ?? '')
      if (
        options.acceptAuth !== false &&
        auth.username === options.user &&
        auth.password === options.password
      )
        return done(null, { user: options.user })
      done(new Error('Invalid username or password'))
    },
    onData(stream, session, done) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        const { mailFrom, rcptTo } = session.envelope
        received.push({
          mailFrom: mailFrom ? mailFrom.address : '',
          rcptTo: rcptTo.map((r) => r.address),
          ...parseMail(Buffer.concat(chunks).toString('utf8')),
        })
        done()
      })
    },
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.server.address() as AddressInfo
  return {
    received,
    authAttempts,
    url: `smtp://${encodeURIComponent(options.user)}:${encodeURIComponent(options.password)}@127.0.0.1:${port}`,
    openConnections: () => (server as unknown as { connections: Set<unknown> }).connections.size,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** A TCP server that accepts connections and never says a word (a hung SMTP server). */
export async function startSilentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((s) => sockets.add(s))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/** A loopback port nothing listens on. */
export async function closedPort(): Promise<number> {
  const silent = await startSilentServer()
  await silent.close()
  return silent.port
}

export type TestSmtpServer = Awaited<ReturnType<typeof startSmtp>>
