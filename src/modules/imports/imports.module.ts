import type { ModuleContext, PlinthModule } from '../../core/module.ts'
import './imports.tables.ts'
import { createImportEngine, type ImportEngine } from './import-engine.ts'
import { importsPersonalData } from './imports.privacy.ts'
import { importsRetention } from './imports.retention.ts'
import { createMigrationService, type MigrationService } from './migration-service.ts'
import createImports from './migrations/0020-create-imports.ts'
import unloggedSeenKeys from './migrations/0030-unlogged-seen-keys.ts'

/**
 * Imports: the file import engine behind `plinth import <module> <dataset> <file|dir>` (into the
 * tables modules declare in `importables`), and the migrations from PocketBase and Supabase
 * (`plinth import pocketbase|supabase`), whose users keep their bcrypt passwords until their next
 * sign-in (through `ctx.users.importUser`).
 */
export const importsModule: PlinthModule = {
  name: 'imports',
  migrations: { '0020-create-imports': createImports, '0030-unlogged-seen-keys': unloggedSeenKeys },
  personalData: importsPersonalData,
  retention: (ctx) => importsRetention(ctx.config),
}

export interface ImportServices {
  readonly files: ImportEngine
  readonly migrations: MigrationService
}

const services = new WeakMap<ModuleContext, ImportServices>()

/** The import services of one Plinth instance (what the CLI runs). */
export function importServicesOf(ctx: ModuleContext): ImportServices {
  let s = services.get(ctx)
  if (!s) {
    const deps = { db: ctx.db.kysely, audit: ctx.audit, logger: ctx.logger }
    s = {
      files: createImportEngine({ ...deps, oneSession: ctx.db.kind === 'embedded' }),
      migrations: createMigrationService({ ...deps, users: ctx.users }),
    }
    services.set(ctx, s)
  }
  return s
}
