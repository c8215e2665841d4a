/**
 * The production-line backend: `npm start` serves it; `npm run plinth -- <command>` runs any
 * Plinth command (`migrate status`, `jobs list`, `privacy export`…) with its module loaded.
 */
import { runPlinth } from 'plinth'
import { production } from './src/production.module.ts'

await runPlinth({ modules: [production] })
