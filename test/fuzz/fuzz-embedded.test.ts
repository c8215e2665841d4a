// The schema-driven fuzz suite on the embedded database (in-memory PGlite); see fuzz-kit.ts for the seeds and settings.
import { fuzzBackend } from './fuzz-kit.ts'

await fuzzBackend('embedded')
