import { createServer } from 'node:net'

/**
 * A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick for port 0, closed
 * again): for a child server started next (a drill's Plinth, a scratch PostgreSQL, a test's fleet).
 * Another process may take it in between; callers that start a listener retry or fail clearly.
 */
export async function sparePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((done, fail) => {
    server.once('error', fail)
    server.listen(0, '127.0.0.1', done)
  })
  const { port } = server.address() as { port: number }
  await new Promise((done) => server.close(done))
  return port
}
