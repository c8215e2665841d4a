/**
 * The application's command: `node main.ts start` serves it (what `npm start` runs), and every
 * other `plinth` command — `migrate up`, `user create`, `privacy export`, `jobs list`… — runs with
 * the application's modules loaded: `node main.ts --help`.
 */
import { runPlinth } from 'plinth'
import config from './plinth.config.ts'

await runPlinth(config)
