/**
 * One download server, run as a child of `bench/files/run.ts`: `static` is Fastify with
 * @fastify/static serving a directory, `plinth` is Plinth's full stack serving the same bytes as a
 * public file (`GET /api/v1/files/{id}`) from its disk storage. The ready message carries the path
 * to request.
 */
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fastifyStatic from '@fastify/static'
import Fastify from 'fastify'
import { createFilesService } from '../../src/modules/files/files.service.ts'
import { HOST, startProductionPlinth } from '../lib/plinth-child.ts'
import { portOf, type Running, requireParent, serveChild } from '../lib/server-child.ts'
export const BLOB_BYTES = 256 * 1024

function blob(dir: string): string {
  const bytes = Buffer.alloc(BLOB_BYTES)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24
  const path = join(dir, 'blob.bin')
  writeFileSync(path, bytes)
  return path
}

async function startStatic(): Promise<Running & { path: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-bench-static-'))
  blob(dir)
  const app = Fastify({ logger: false })
  await app.register(fastifyStatic, { root: dir })
  await app.listen({ port: 0, host: HOST })
  return {
    port: portOf(app.server.address()),
    path: '/blob.bin',
    close: async () => {
      await app.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

async function startPlinth(): Promise<Running & { path: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-bench-files-'))
  const sourceDir = mkdtempSync(join(tmpdir(), 'plinth-bench-blob-'))
  const source = blob(sourceDir)
  const running = await startProductionPlinth({
    PLINTH_DATA_DIR: 'memory://',
    PLINTH_FILES_DIR: join(dir, 'files'),
    PLINTH_FILES_ALLOWED_TYPES: 'application/octet-stream',
  })
  const service = createFilesService(running.plinth.context)
  const staged = await service.stage(createReadStream(source), {
    bytes: BLOB_BYTES,
    code: 'PLINTH_FILE_TOO_LARGE',
  })
  const { file } = await service.store(staged, {
    owner: 'bench',
    role: 'admin',
    name: 'blob.bin',
    visibility: 'public',
    purpose: 'attachment',
    metadata: {},
  })
  rmSync(sourceDir, { recursive: true, force: true })
  return {
    port: running.port,
    path: `/api/v1/files/${file.id}`,
    close: async () => {
      await running.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

requireParent('bench/files/server.ts runs as a child of bench/files/run.ts')
const kind = process.argv[2]
if (kind !== 'static' && kind !== 'plinth') throw new Error(`unknown server kind "${kind}"`)
await serveChild(kind === 'static' ? startStatic : startPlinth, ({ port, path }) => ({
  port,
  path,
  pid: process.pid,
}))
