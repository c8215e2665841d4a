import { readFileSync } from 'node:fs'

// src/core/version.ts and dist/core/version.js both sit two levels below package.json.
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string
}

/** Plinth's version, from package.json. */
export const PLINTH_VERSION: string = pkg.version
