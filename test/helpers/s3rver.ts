import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3'
import { createS3Client } from '../../src/infra/s3/client.ts'

/** How to reach one s3rver bucket: the shape of the S3 storage and backup target options. */
export interface S3rverConnection {
  readonly bucket: string
  readonly endpoint: string
  readonly region: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly forcePathStyle: true
}

export interface S3rver {
  readonly endpoint: string
  readonly port: number
  readonly bucket: string
  /** Its data folder: a fresh temporary folder, removed by stop(). */
  readonly dir: string
  /** The bucket's coordinates (s3rver's built-in account, path-style URLs). */
  readonly connection: S3rverConnection
  /** A client of the server (path-style, s3rver's account), destroyed by stop(). */
  readonly client: S3Client
  /** Every key in the bucket (one listing page: up to 1,000). */
  keys(): Promise<string[]>
  /** Ends the process and removes its data folder. */
  stop(): Promise<void>
}

/**
 * A real S3-protocol server (s3rver) in its own process, on a spare port of 127.0.0.1, with `bucket`
 * created and its data in a fresh temporary folder.
 */
export async function startS3rver(bucket: string): Promise<S3rver> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-s3rver-'))
  const bin = createRequire(import.meta.url).resolve('s3rver/bin/s3rver.js')
  const child: ChildProcess = spawn(
    process.execPath,
    [bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', bucket],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const end = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  }
  let found: { endpoint: string; port: number }
  try {
    found = await new Promise((resolve, reject) => {
      let out = ''
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString()
        const m = /listening on (\S+):(\d+)/.exec(out)
        if (m) resolve({ endpoint: `http://${m[1]}:${m[2]}`, port: Number(m[2]) })
      })
      child.on('exit', (code) => reject(new Error(`s3rver exited (${code}): ${out}`)))
    })
  } catch (err) {
    await end()
    throw err
  }
  const connection: S3rverConnection = {
    bucket,
    endpoint: found.endpoint,
    region: 'us-east-1',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
  }
  const client = createS3Client(connection)
  return {
    ...found,
    bucket,
    dir,
    connection,
    client,
    keys: async () => {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }))
      return (page.Contents ?? []).map((o) => o.Key!)
    },
    stop: async () => {
      client.destroy()
      await end()
    },
  }
}
