/** The deployment environments Plinth knows. */
export const PLINTH_ENVS = ['development', 'test', 'staging', 'production'] as const
export type PlinthEnv = (typeof PLINTH_ENVS)[number]

/** A default can depend on the environment (e.g. pretty logs only in development). */
export type DefaultValue<T> = T | ((env: PlinthEnv) => T)

/**
 * One configuration key: where it comes from, how its text is parsed, its default and its doc.
 * `parse` throws an Error whose message says what a valid value looks like.
 */
export interface ConfigKey<T> {
  readonly env: string
  readonly type: string
  readonly doc: string
  readonly default?: DefaultValue<T>
  /** Shown in docs instead of the computed default (for env-dependent defaults). */
  readonly defaultDoc?: string
  /** Secret values are masked wherever config is printed, and may be read from `<ENV>_FILE`. */
  readonly secret?: boolean
  readonly parse: (raw: string) => T
}

export type ConfigShape = Record<string, ConfigKey<unknown>>
export type ConfigOf<S extends ConfigShape> = {
  readonly [K in keyof S]: S[K] extends ConfigKey<infer T> ? T : never
}
