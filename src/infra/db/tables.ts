/**
 * The database's tables, as Kysely sees them. Each module adds its own tables by declaration
 * merging in its repository file:
 *
 * @example
 * declare module '../../infra/db/tables.ts' {
 *   interface PlinthTables { plinth_settings: SettingsTable }
 * }
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging in each module
export interface PlinthTables {}
