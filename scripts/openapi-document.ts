// The OpenAPI document of the built-in modules, as the server serves it at /api/openapi.json, built
// without a database (nothing connects). `node scripts/openapi-document.ts [file]` writes it (stdout
// without a file); the linter (lint-openapi.ts) and the client's type generation read it from here.
import { writeFileSync } from 'node:fs'
import { createPlinth } from '../src/app/create-plinth.ts'
import { loadConfig } from '../src/config/load-config.ts'

export async function openApiDocument(): Promise<unknown> {
  const config = loadConfig({
    env: {
      PLINTH_ENV: 'test',
      // Never connected: the document needs the routes, not the data.
      DATABASE_URL: 'postgres://plinth@127.0.0.1:9/openapi',
      PORT: '0',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_SHUTDOWN_DELAY: '0',
    },
    envFile: false,
  })
  const plinth = await createPlinth({ config })
  try {
    const res = await plinth.app.inject('/api/openapi.json')
    if (res.statusCode !== 200) throw new Error(`/api/openapi.json answered ${res.statusCode}: ${res.body}`)
    return res.json()
  } finally {
    await plinth.shutdown()
  }
}

if (import.meta.main) {
  const text = `${JSON.stringify(await openApiDocument(), null, 2)}\n`
  const file = process.argv[2]
  if (file) writeFileSync(file, text)
  else process.stdout.write(text)
}
