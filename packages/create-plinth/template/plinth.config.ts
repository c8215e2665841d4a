/**
 * The application: its own modules, loaded after Plinth's built-in ones (accounts, sessions, API
 * tokens, jobs, webhooks, audit log, privacy export and erasure, backups, metrics, health).
 */
import type { ApplicationOptions } from 'plinth'
import { notes } from './src/notes.module.ts'

export default {
  modules: [notes],
} satisfies ApplicationOptions
