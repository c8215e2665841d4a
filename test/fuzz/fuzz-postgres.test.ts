// The schema-driven fuzz suite on the PostgreSQL backend (a fresh test database); see fuzz-kit.ts for the seeds and settings.
import { fuzzBackend } from './fuzz-kit.ts'

await fuzzBackend('postgres')
