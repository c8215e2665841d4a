import { createReadStream } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { PlinthError } from '../../shared/errors.ts'

/** What clamd said of a file. */
export type ScanResult = { readonly clean: true } | { readonly clean: false; readonly signature: string }

function open(address: string): Socket {
  const m = /^([^/:]+):(\d+)$/.exec(address)
  return m ? connect({ host: m[1]!, port: Number(m[2]) }) : connect({ path: address })
}

/**
 * Scans a file with ClamAV's `clamd` (INSTREAM command over its socket: Unix path or `host:port`),
 * streaming it in chunks. An unreachable or confused scanner is `PLINTH_FILE_SCANNER_UNAVAILABLE`
 * (503): a configured scan is never skipped silently.
 */
export async function scanWithClamd(address: string, path: string, timeoutMs = 30_000): Promise<ScanResult> {
  const unavailable = (cause: unknown) =>
    new PlinthError('PLINTH_FILE_SCANNER_UNAVAILABLE', undefined, { cause })
  return new Promise<ScanResult>((resolve, reject) => {
    const socket = open(address)
    let answer = ''
    let settled = false
    const finish = (fn: () => void) => {
      if (settled) return
      settled = true
      socket.destroy()
      fn()
    }
    socket.setTimeout(timeoutMs, () => finish(() => reject(unavailable(new Error('clamd timed out')))))
    socket.on('error', (err) => finish(() => reject(unavailable(err))))
    socket.on('data', (d: Buffer) => {
      answer += d.toString('utf8')
    })
    socket.on('end', () =>
      finish(() => {
        const text = answer.replace(/\0/g, '').trim()
        const found = /^stream: (.+) FOUND$/.exec(text)
        if (found) resolve({ clean: false, signature: found[1]! })
        else if (text === 'stream: OK') resolve({ clean: true })
        else reject(unavailable(new Error(`clamd answered ${JSON.stringify(text.slice(0, 200))}`)))
      }),
    )
    socket.on('connect', async () => {
      try {
        socket.write('zINSTREAM\0')
        for await (const chunk of createReadStream(path, { highWaterMark: 64 * 1024 })) {
          const size = Buffer.alloc(4)
          size.writeUInt32BE((chunk as Buffer).length)
          if (!socket.write(Buffer.concat([size, chunk as Buffer])))
            await new Promise((r) => socket.once('drain', r))
        }
        socket.end(Buffer.alloc(4))
      } catch (err) {
        finish(() => reject(unavailable(err)))
      }
    })
  })
}
