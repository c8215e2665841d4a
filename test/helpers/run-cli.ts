import { runCli } from '../../src/main.ts'

/** Runs a `plinth` command in this process with `env` as its environment (restored after). */
export async function runCliWithEnv(argv: string[], env: Record<string, string>) {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
  Object.assign(process.env, env)
  let out = ''
  let err = ''
  try {
    const code = await runCli(argv, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) })
    return { code, out, err }
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

/** Runs a `plinth` command in this process, capturing what it prints. */
export function runCliCaptured(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  return runCliWithEnv(argv, {})
}
