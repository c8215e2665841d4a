/**
 * The example applications under examples/ run their own test suites (`npm test` in each) as part
 * of Plinth's: they are built only on the public API (`plinth`, `plinth/testing`), so a change
 * that breaks an application breaks this. Each resolves `plinth` through node_modules/plinth, a
 * link to this repository (what `npm install` in the example creates; made here when missing),
 * with the `plinth-source` condition: the TypeScript sources, no build needed.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const repo = fileURLToPath(new URL('../', import.meta.url))
const examples = readdirSync(join(repo, 'examples')).filter((d) =>
  existsSync(join(repo, 'examples', d, 'package.json')),
)

describe('example applications', () => {
  it('are there', () => assert.ok(examples.includes('production-line')))

  for (const name of examples) {
    it(`${name}: its test suite passes`, async () => {
      const dir = join(repo, 'examples', name)
      const link = join(dir, 'node_modules', 'plinth')
      if (!existsSync(link)) {
        mkdirSync(join(dir, 'node_modules'), { recursive: true })
        symlinkSync(join('..', '..', '..'), link, 'dir')
      }
      const env: NodeJS.ProcessEnv = {}
      for (const [k, v] of Object.entries(process.env))
        if (!/^(DATABASE_URL|NODE_OPTIONS|NODE_V8_COVERAGE)$|^NODE_TEST/.test(k)) env[k] = v
      const res = await run(
        process.execPath,
        ['--conditions=plinth-source', '--test', '--test-timeout=120000', 'test/**/*.test.ts'],
        { cwd: dir, env, maxBuffer: 64 * 1024 * 1024 },
      ).catch((e: { stdout: string; stderr: string }) =>
        assert.fail(`${name} tests failed:\n${e.stdout}\n${e.stderr}`),
      )
      assert.match(res.stdout, /ℹ fail 0\b/)
      assert.doesNotMatch(res.stdout, /ℹ pass 0\b/)
    })
  }
})
